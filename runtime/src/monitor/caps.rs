//! Linux capabilities for the container process: bounding set, the three classic sets
//! and the ambient set, applied with raw `capset(2)`/`prctl(2)` (no libcap).
#![allow(unsafe_code)]

use oci_spec::runtime::{Capability, LinuxCapabilities};

/// Capability numbers by name (linux/capability.h).
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The number of a capability name, e.g. `CAP_NET_RAW` -> 13.
pub fn number(name: &str) -> Option<u32> {
    NAMES.iter().position(|n| *n == name).map(|i| i as u32)
}

fn mask(set: &Option<std::collections::HashSet<Capability>>) -> Result<u64, String> {
    let mut bits = 0u64;
    for cap in set.iter().flatten() {
        let name = serde_json::to_value(cap)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let n = number(&name).ok_or_else(|| format!("unknown capability {name:?}"))?;
        bits |= 1 << n;
    }
    Ok(bits)
}

/// The five sets, as bit masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

impl CapSets {
    pub fn from_spec(caps: Option<&LinuxCapabilities>) -> Result<CapSets, String> {
        let Some(c) = caps else {
            return Ok(CapSets::default());
        };
        Ok(CapSets {
            bounding: mask(c.bounding())?,
            effective: mask(c.effective())?,
            permitted: mask(c.permitted())?,
            inheritable: mask(c.inheritable())?,
            ambient: mask(c.ambient())?,
        })
    }

    /// Drops everything outside the bounding set. Needs CAP_SETPCAP: call before
    /// changing user.
    pub fn drop_bounding(&self) -> Result<(), String> {
        let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40);
        for cap in 0..=last {
            if self.bounding & (1 << cap) == 0 {
                // SAFETY: prctl with integer arguments only.
                if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0
                {
                    return Err(format!(
                        "drop {} from the bounding set: {}",
                        NAMES.get(cap as usize).unwrap_or(&"?"),
                        nix::Error::last()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Sets effective/permitted/inheritable (limited to what this process still holds:
    /// a cap we lack, like CAP_SYS_RESOURCE on some hosts, cannot be granted), then the
    /// ambient set.
    pub fn apply(&self) -> Result<(), String> {
        let held = current_permitted()?;
        let (e, p, i) = (
            self.effective & held,
            self.permitted & held,
            self.inheritable & held,
        );
        capset(e, p, i).map_err(|errno| format!("capset: {}", nix::Error::from_raw(errno)))?;
        // SAFETY: prctl with integer arguments only.
        unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        for cap in 0..64u32 {
            if self.ambient & p & i & (1 << cap) != 0 {
                // SAFETY: as above.
                if unsafe {
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                        cap as libc::c_ulong,
                        0,
                        0,
                    )
                } < 0
                {
                    return Err(format!(
                        "raise ambient {}: {}",
                        NAMES.get(cap as usize).unwrap_or(&"?"),
                        nix::Error::last()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Sets this thread's effective, permitted and inheritable sets (raw `capset(2)`).
/// Allocates nothing, so the pod init may call it after fork; fails with the errno.
pub(super) fn capset(effective: u64, permitted: u64, inheritable: u64) -> Result<(), i32> {
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let (e, p, i) = (effective, permitted, inheritable);
    let data = [
        CapData {
            effective: e as u32,
            permitted: p as u32,
            inheritable: i as u32,
        },
        CapData {
            effective: (e >> 32) as u32,
            permitted: (p >> 32) as u32,
            inheritable: (i >> 32) as u32,
        },
    ];
    // SAFETY: header and data are valid, correctly laid out capset arguments.
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) } < 0 {
        return Err(nix::Error::last_raw());
    }
    Ok(())
}

/// Keeps the permitted set across setuid from root (PR_SET_KEEPCAPS).
pub fn keep_caps(on: bool) -> Result<(), String> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, on as libc::c_ulong, 0, 0, 0) } < 0 {
        return Err(format!("PR_SET_KEEPCAPS: {}", nix::Error::last()));
    }
    Ok(())
}

fn current_permitted() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("read /proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapPrm:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| "no CapPrm in /proc/self/status".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_kernel_header() {
        assert_eq!(number("CAP_CHOWN"), Some(0));
        assert_eq!(number("CAP_NET_RAW"), Some(13));
        assert_eq!(number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("CAP_NOPE"), None);
    }

    #[test]
    fn masks_from_spec() {
        let caps: LinuxCapabilities = serde_json::from_str(
            r#"{"bounding":["CAP_CHOWN","CAP_NET_RAW"],"effective":["CAP_CHOWN"],"permitted":["CAP_CHOWN"],"inheritable":[],"ambient":[]}"#,
        )
        .unwrap();
        let sets = CapSets::from_spec(Some(&caps)).unwrap();
        assert_eq!(sets.bounding, 1 | (1 << 13));
        assert_eq!(sets.effective, 1);
        assert_eq!(sets.ambient, 0);
    }
}
