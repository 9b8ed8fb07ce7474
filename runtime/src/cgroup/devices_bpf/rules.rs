//! The v1 device cgroup's semantics, replayed in memory: OCI device rules in, the
//! equivalent minimal allow or deny list out. The eBPF program is generated from that
//! list, so a container gets on cgroup v2 exactly what `devices.allow`/`devices.deny`
//! give it on v1 (runc's `devices.Emulator` does the same for its `devicefilter`).
//!
//! The kernel's v1 model (Documentation/admin-guide/cgroup-v1/devices.rst): a cgroup
//! has a default (allow or deny everything) and a list of exceptions. `a` resets the
//! default and drops every exception; any other rule adds an exception when its action
//! differs from the default, or removes (part of) one when it matches it.

use std::collections::BTreeMap;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// `access_type` bits of `struct bpf_cgroup_dev_ctx` (include/uapi/linux/bpf.h
/// `BPF_DEVCG_ACC_*`), also used here for a rule's access set.
pub const ACC_MKNOD: u8 = 1;
pub const ACC_READ: u8 = 2;
pub const ACC_WRITE: u8 = 4;
pub const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// Device type values of `struct bpf_cgroup_dev_ctx` (`BPF_DEVCG_DEV_*`).
pub const DEV_BLOCK: u8 = 1;
pub const DEV_CHAR: u8 = 2;

/// A device rule the emulator or the program builder cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("device rule {rule}: unknown access {access:?} (only r, w and m)")]
    Access { rule: String, access: String },
    #[error("device rule {rule}: major/minor {number} is out of range")]
    Number { rule: String, number: i64 },
    /// v1 silently ignores removing part of a wildcard exception; refusing it is
    /// safer than a filter that allows more than the rules seem to say (runc refuses
    /// it for the same reason).
    #[error(
        "device rule {rule}: cannot punch a hole into the wildcard rule {wildcard} \
         (cgroup v1 would ignore it)"
    )]
    WildcardHole { rule: String, wildcard: String },
}

/// Which device a rule or exception matches: block or char, and a number or any
/// (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeviceMatch {
    /// Field order is the sort order: by major, then minor, then type, wildcards
    /// first (the order runc's emulator lists its rules in).
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// [`DEV_BLOCK`] or [`DEV_CHAR`].
    pub kind: u8,
}

impl DeviceMatch {
    fn text(&self, access: u8) -> String {
        let num = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        format!(
            "{} {}:{} {}",
            if self.kind == DEV_BLOCK { 'b' } else { 'c' },
            num(self.major),
            num(self.minor),
            access_text(access)
        )
    }
}

pub fn access_text(access: u8) -> String {
    [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')]
        .iter()
        .filter(|(bit, _)| access & bit != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// One exception of the final list, with the access it grants (or denies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exception {
    pub device: DeviceMatch,
    pub access: u8,
}

/// The outcome of a rule list: the default and its exceptions, in sorted order (each
/// exception's action is the opposite of the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    pub default_allow: bool,
    pub exceptions: Vec<Exception>,
}

/// A v1 device cgroup in memory. A new one denies everything, as the spec's first rule
/// (`a *:* rwm` deny, which crust always writes) makes it.
#[derive(Debug, Default)]
struct Emulator {
    default_allow: bool,
    exceptions: BTreeMap<DeviceMatch, u8>,
}

impl Emulator {
    fn apply(
        &mut self,
        kind: Option<u8>,
        device: DeviceMatch,
        access: u8,
        allow: bool,
    ) -> Result<(), RuleError> {
        let Some(kind) = kind else {
            // `a`: whatever the numbers and access say, the kernel resets (v1
            // devcgroup_update_access, case 'a').
            *self = Emulator {
                default_allow: allow,
                exceptions: BTreeMap::new(),
            };
            return Ok(());
        };
        let device = DeviceMatch { kind, ..device };
        if allow == self.default_allow {
            self.remove(device, access)
        } else {
            *self.exceptions.entry(device).or_insert(0) |= access;
            Ok(())
        }
    }

    fn remove(&mut self, device: DeviceMatch, access: u8) -> Result<(), RuleError> {
        let wildcards = [
            DeviceMatch {
                major: None,
                ..device
            },
            DeviceMatch {
                minor: None,
                ..device
            },
            DeviceMatch {
                major: None,
                minor: None,
                ..device
            },
        ];
        for wildcard in wildcards {
            if wildcard == device {
                continue;
            }
            if let Some(have) = self.exceptions.get(&wildcard)
                && have & access != 0
            {
                return Err(RuleError::WildcardHole {
                    rule: device.text(access),
                    wildcard: wildcard.text(*have),
                });
            }
        }
        if let Some(have) = self.exceptions.get_mut(&device) {
            *have &= !access;
            if *have == 0 {
                self.exceptions.remove(&device);
            }
        }
        Ok(())
    }
}

/// Replays OCI device rules (in order) and returns what they leave. Fifo rules are
/// skipped, as on v1 (the device cgroup knows only `a`, `b` and `c`); `u` is a char
/// device. Empty access means all of `rwm`, as v1's file format.
pub fn resolve(rules: &[LinuxDeviceCgroup]) -> Result<RuleSet, RuleError> {
    let mut emu = Emulator::default();
    for rule in rules {
        let kind = match rule.typ() {
            None | Some(LinuxDeviceType::A) => None,
            Some(LinuxDeviceType::B) => Some(DEV_BLOCK),
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => Some(DEV_CHAR),
            Some(LinuxDeviceType::P) => continue,
        };
        let describe = || {
            format!(
                "{:?} {:?}:{:?} {:?} allow={}",
                rule.typ(),
                rule.major(),
                rule.minor(),
                rule.access(),
                rule.allow()
            )
        };
        let number = |n: Option<i64>| -> Result<Option<u32>, RuleError> {
            match n {
                None => Ok(None),
                Some(n) if n < 0 => Ok(None),
                // The program compares against a sign-extended 32-bit immediate, so
                // numbers past i32::MAX could never match; the kernel's majors and
                // minors are far below (12 and 20 bits).
                Some(n) if n > i64::from(i32::MAX) => Err(RuleError::Number {
                    rule: describe(),
                    number: n,
                }),
                Some(n) => Ok(Some(n as u32)),
            }
        };
        let access_str = rule.access().clone().unwrap_or_default();
        let mut access = 0;
        for c in access_str.chars() {
            access |= match c {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                _ => {
                    return Err(RuleError::Access {
                        rule: describe(),
                        access: access_str.clone(),
                    });
                }
            };
        }
        if access == 0 {
            access = ACC_ALL;
        }
        let device = DeviceMatch {
            major: number(rule.major())?,
            minor: number(rule.minor())?,
            kind: 0,
        };
        emu.apply(kind, device, access, rule.allow())?;
    }
    Ok(RuleSet {
        default_allow: emu.default_allow,
        exceptions: emu
            .exceptions
            .into_iter()
            .map(|(device, access)| Exception { device, access })
            .collect(),
    })
}

impl RuleSet {
    /// Whether v1 would let `access` (one `ACC_*` bit) to device `kind major:minor`
    /// through: the reference the generated program is tested against.
    pub fn allows(&self, kind: u8, major: u32, minor: u32, access: u8) -> bool {
        let hit = self.exceptions.iter().any(|e| {
            e.device.kind == kind
                && e.device.major.is_none_or(|m| m == major)
                && e.device.minor.is_none_or(|m| m == minor)
                && e.access & access == access
        });
        hit != self.default_allow
    }
}
