//! Cgroups: the driver, the host's layout, and the cgroupfs manager that creates pod
//! and container cgroups, places processes, freezes, kills and removes them.

mod cgroupfs;
mod detail;
pub mod devices_bpf;
mod stats;
pub mod systemd;

pub use cgroupfs::{CgroupFeatures, Cgroupfs, validate_path};
pub use detail::{CgroupDetail, weight_to_shares};
pub use stats::{CgroupUsage, Psi, PsiLine, oom_kills, parse_psi};
pub use systemd::Systemd;

use std::{
    io,
    path::{Path, PathBuf},
};

use nix::sys::statfs::{CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, TMPFS_MAGIC, statfs};

/// Who owns cgroup creation: crust writing cgroupfs directly, or systemd units
/// (kubelet's `--cgroup-driver`; the two must agree, which is why `RuntimeConfig`
/// reports ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

/// How the host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// cgroup v2 only (`<root>` is a cgroup2 mount).
    Unified,
    /// v1 controllers under `<root>/<controller>` plus a cgroup2 at `<root>/unified`.
    Hybrid,
    /// v1 controllers only.
    Legacy,
}

/// Failure to tell how cgroups are mounted.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("statfs {path}: {source}")]
    Statfs { path: PathBuf, source: io::Error },
    #[error("{path} is not a cgroup mount (filesystem magic {magic:#x})")]
    NotCgroupMount { path: PathBuf, magic: i64 },
    #[error("invalid cgroup path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cgroup {path}: no mounted controller provides {file}")]
    Unsupported { path: String, file: String },
    #[error(
        "cgroup {path}: `unified` (cgroup v2 files) cannot be set on a cgroup v1 or hybrid host"
    )]
    UnifiedOnV1 { path: String },
    #[error("cgroup {path}: invalid value for {file}: {reason}")]
    InvalidValue {
        path: String,
        file: String,
        reason: String,
    },
    #[error("write device rule {rule:?} to {path}: {source}")]
    DeviceRule {
        path: PathBuf,
        rule: String,
        source: io::Error,
    },
    #[error("cgroup {path}: device filter: {source}")]
    DeviceFilter {
        path: String,
        source: devices_bpf::DeviceFilterError,
    },
    #[error("cgroup {path} still has processes {pids:?} after killing them")]
    Busy { path: String, pids: Vec<i32> },
    #[error("systemd: {op} {unit}: {reason}")]
    Systemd {
        op: &'static str,
        unit: String,
        reason: String,
    },
}

/// Detects the cgroup layout under `root` (normally `/sys/fs/cgroup`) the way runc and
/// systemd do: by the filesystem type of the root and of `<root>/unified`.
pub fn detect_mode(root: &Path) -> Result<CgroupMode, CgroupError> {
    let magic = |path: &Path| {
        statfs(path)
            .map(|s| s.filesystem_type())
            .map_err(|e| CgroupError::Statfs {
                path: path.to_path_buf(),
                source: e.into(),
            })
    };
    let root_type = magic(root)?;
    if root_type == CGROUP2_SUPER_MAGIC {
        return Ok(CgroupMode::Unified);
    }
    if root_type == TMPFS_MAGIC {
        let unified = root.join("unified");
        return Ok(match magic(&unified) {
            Ok(t) if t == CGROUP2_SUPER_MAGIC => CgroupMode::Hybrid,
            _ => CgroupMode::Legacy,
        });
    }
    if root_type == CGROUP_SUPER_MAGIC {
        // A single v1 hierarchy mounted directly at the root.
        return Ok(CgroupMode::Legacy);
    }
    Err(CgroupError::NotCgroupMount {
        path: root.to_path_buf(),
        magic: root_type.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_directory_is_not_a_cgroup_mount() {
        let dir = tempfile::tempdir().unwrap();
        match detect_mode(dir.path()) {
            // A temp dir on tmpfs looks like a v1 root without controllers.
            Ok(mode) => assert_eq!(mode, CgroupMode::Legacy),
            Err(e) => assert!(matches!(e, CgroupError::NotCgroupMount { .. }), "{e}"),
        }
    }

    #[test]
    fn missing_root_is_a_statfs_error_naming_the_path() {
        let err = detect_mode(Path::new("/nonexistent/crust-cgroup")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/crust-cgroup"),
            "{err}"
        );
    }

    #[test]
    fn host_mode_matches_mountinfo() {
        let mode = detect_mode(Path::new("/sys/fs/cgroup")).expect("host has cgroups mounted");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let fstype_at = |target: &str| {
            mountinfo.lines().find_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                (left.split(' ').nth(4)? == target)
                    .then(|| right.split(' ').next().unwrap().to_string())
            })
        };
        let expected = match fstype_at("/sys/fs/cgroup").as_deref() {
            Some("cgroup2") => CgroupMode::Unified,
            _ if fstype_at("/sys/fs/cgroup/unified").as_deref() == Some("cgroup2") => {
                CgroupMode::Hybrid
            }
            _ => CgroupMode::Legacy,
        };
        assert_eq!(mode, expected);
    }
}
