//! The container's `/sys/fs/cgroup`, as runc mounts it (libcontainer/rootfs_linux.go
//! `mountCgroupV1`/`mountCgroupV2`): on a v1 or hybrid host, a tmpfs holding one bind
//! per hierarchy of the container's *own* cgroup directory (so it sees its limits, not
//! the host's tree), the host's co-mount links (`cpu -> cpu,cpuacct`), all read-only
//! unless the spec asks `rw` (privileged); on a pure v2 host, a fresh cgroup2 mount,
//! which shows the root of the container's cgroup namespace.

use std::{fs, os::fd::OwnedFd, path::Path, path::PathBuf};

use nix::mount::{MsFlags, mount};

use super::{
    mount_at::{fd_path, set_attrs_fd},
    mounts::{
        MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, mountinfo,
    },
};

/// Where the process's cgroups are on the host. Read after the monitor placed the
/// process in its cgroups and before it enters a cgroup namespace of its own (whose
/// /proc/self/cgroup would no longer name host paths).
pub(super) enum CgroupView {
    /// cgroup v1 or hybrid: directories under the host's cgroup root.
    V1 {
        /// (name under the cgroup root, the process's cgroup directory in it).
        dirs: Vec<(String, PathBuf)>,
        /// (name, link text) of the root's symlinks.
        links: Vec<(String, PathBuf)>,
    },
    /// Only a cgroup2 hierarchy is mounted.
    V2,
}

impl CgroupView {
    pub(super) fn discover() -> Result<CgroupView, String> {
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("read /proc/self/cgroup: {e}"))?;
        let mounts: Vec<_> = mountinfo()?
            .into_iter()
            .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
            .collect();
        let Some(first_v1) = mounts.iter().find(|m| m.fstype == "cgroup") else {
            return if mounts.is_empty() {
                Err("no cgroup hierarchy is mounted".into())
            } else {
                Ok(CgroupView::V2)
            };
        };
        let root = first_v1
            .mount_point
            .parent()
            .ok_or("a cgroup hierarchy is mounted at /")?
            .to_path_buf();
        let mut dirs = Vec::new();
        for m in mounts
            .iter()
            .filter(|m| m.mount_point.parent() == Some(&root))
        {
            let Some(name) = m.mount_point.file_name() else {
                continue;
            };
            let path = own_path(&own, &m.fstype, &m.super_options).ok_or_else(|| {
                format!("the process is in no cgroup of {}", m.mount_point.display())
            })?;
            // A hierarchy mounted from a subtree (mountinfo's root) shows paths
            // relative to it.
            let rel = Path::new(path).strip_prefix(&m.root).map_err(|_| {
                format!(
                    "cgroup {path} is outside what {} shows",
                    m.mount_point.display()
                )
            })?;
            dirs.push((name.to_string_lossy().into_owned(), m.mount_point.join(rel)));
        }
        let mut links = Vec::new();
        for entry in fs::read_dir(&root).map_err(|e| format!("read {}: {e}", root.display()))? {
            let entry = entry.map_err(|e| format!("read {}: {e}", root.display()))?;
            if entry.file_type().is_ok_and(|t| t.is_symlink())
                && let Ok(to) = fs::read_link(entry.path())
            {
                links.push((entry.file_name().to_string_lossy().into_owned(), to));
            }
        }
        Ok(CgroupView::V1 { dirs, links })
    }

    /// Mounts the view at `target` (a directory in the rootfs) with the mount's
    /// `flags`: read-only (recursively: every hierarchy's bind, not just the tmpfs)
    /// when they say `ro`.
    /// `target` is the mount point's descriptor (see `mount_at`); `reopen` resolves
    /// it again once something is mounted there, to reach what was mounted.
    pub(super) fn mount(
        &self,
        target: &OwnedFd,
        reopen: &dyn Fn() -> Result<OwnedFd, String>,
        flags: MsFlags,
    ) -> Result<(), String> {
        let keep = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        match self {
            CgroupView::V2 => {
                mount(
                    Some("cgroup2"),
                    &fd_path(target),
                    Some("cgroup2"),
                    flags & (keep | MsFlags::MS_RDONLY),
                    None::<&str>,
                )
                .map_err(|e| format!("mount cgroup2: {e}"))?;
            }
            CgroupView::V1 { dirs, links } => {
                mount(
                    Some("tmpfs"),
                    &fd_path(target),
                    Some("tmpfs"),
                    flags & keep,
                    Some("mode=755"),
                )
                .map_err(|e| format!("mount tmpfs: {e}"))?;
                let top = reopen()?;
                let base = fd_path(&top);
                for (name, source) in dirs {
                    let dest = base.join(name);
                    fs::create_dir_all(&dest)
                        .map_err(|e| format!("create {}: {e}", dest.display()))?;
                    mount(
                        Some(source),
                        &dest,
                        None::<&str>,
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        None::<&str>,
                    )
                    .map_err(|e| format!("bind {}: {e}", source.display()))?;
                }
                for (name, to) in links {
                    std::os::unix::fs::symlink(to, base.join(name))
                        .map_err(|e| format!("link {name}: {e}"))?;
                }
            }
        }
        let mut attrs = 0;
        for (flag, attr) in [
            (MsFlags::MS_RDONLY, MOUNT_ATTR_RDONLY),
            (MsFlags::MS_NOSUID, MOUNT_ATTR_NOSUID),
            (MsFlags::MS_NODEV, MOUNT_ATTR_NODEV),
            (MsFlags::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
        ] {
            if flags.contains(flag) {
                attrs |= attr;
            }
        }
        if attrs != 0 {
            set_attrs_fd(&reopen()?, attrs, true).map_err(|e| format!("set flags: {e}"))?;
        }
        Ok(())
    }
}

/// The process's path in the hierarchy a mount shows, from /proc/self/cgroup
/// (`id:controllers:path`, cgroups(7)): the v2 line for cgroup2, else the line whose
/// controllers (or `name=`) the mount's super options carry.
fn own_path<'a>(proc_cgroup: &'a str, fstype: &str, super_options: &[String]) -> Option<&'a str> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if fstype == "cgroup2" {
            controllers.is_empty()
        } else {
            !controllers.is_empty()
                && controllers
                    .split(',')
                    .all(|c| super_options.iter().any(|o| o == c))
        };
        matches.then_some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_path_per_hierarchy() {
        let proc_cgroup = "9:name=systemd:/s\n4:memory:/pods/c1\n2:cpu,cpuacct:/pods/c1\n0::/u\n";
        let opts = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
        let cases = [
            ("cgroup", "rw,memory", Some("/pods/c1")),
            ("cgroup", "rw,cpu,cpuacct", Some("/pods/c1")),
            ("cgroup", "rw,name=systemd", Some("/s")),
            ("cgroup2", "rw,nsdelegate", Some("/u")),
            ("cgroup", "rw,pids", None),
        ];
        for (fstype, super_options, want) in cases {
            assert_eq!(
                own_path(proc_cgroup, fstype, &opts(super_options)),
                want,
                "{fstype} {super_options}"
            );
        }
    }
}
