//! Capabilities, masked and read-only paths, seccomp, AppArmor and SELinux, following
//! containerd's CRI plugin (`WithCapabilities`, `WithPrivileged`,
//! `GenerateSeccompSpecOpts`, `GenerateApparmorSpecOpts`).

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, LinuxSeccomp};

use super::{
    CapabilitiesSpec, SecurityContextSpec, SecurityProfile, SpecError, field, seccomp_default,
};

/// Docker's and containerd's default set (`pkg/oci/spec.go`), 14 capabilities.
const DEFAULT_CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability the kernel knows today (0..=40, up to CAP_CHECKPOINT_RESTORE).
const ALL_CAPS: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// Kubernetes' and containerd's default masked paths (kubelet sends these for
/// `procMount: Default`; we apply them when CRI sends none).
pub(crate) const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub(crate) const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub(crate) fn default_capabilities() -> Capabilities {
    DEFAULT_CAPS.into_iter().collect()
}

pub(crate) fn all_capabilities() -> Capabilities {
    ALL_CAPS.into_iter().collect()
}

/// The capabilities of a `CapEff`-style mask (bit n = capability n); bits the table
/// does not know are left out.
pub(crate) fn capabilities_of_mask(mask: u64) -> Capabilities {
    ALL_CAPS
        .into_iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, cap)| cap)
        .collect()
}

fn is_all(name: &str) -> bool {
    name.eq_ignore_ascii_case("ALL")
}

/// Parses a CRI capability name (`NET_ADMIN`; `CAP_NET_ADMIN` and any case tolerated).
fn parse_capability(name: &str, field: String) -> Result<Capability, SpecError> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| SpecError::invalid(field, format!("unknown capability {name:?}")))
}

/// The effective/permitted/bounding set and the ambient set.
///
/// Order as in containerd: `add: [ALL]` first, then `drop: [ALL]`, then individual adds,
/// then individual drops, so `add: [ALL], drop: [CHOWN]` is everything but CHOWN and
/// `drop: [ALL], add: [NET_ADMIN]` is only NET_ADMIN.
///
/// "All" (privileged, or `add: [ALL]`) is what crustd itself holds (`host_mask`, its
/// effective set), as containerd's `WithAllCurrentCapabilities`: a capability outside
/// the runtime's own bounding set cannot be granted (runc fails "unable to apply
/// caps"). `None`: every capability the kernel knows.
pub(crate) fn capabilities(
    privileged: bool,
    spec: Option<&CapabilitiesSpec>,
    host_mask: Option<u64>,
) -> Result<(Capabilities, Capabilities), SpecError> {
    let f = format!("{}.capabilities", field::SC);
    let all_capabilities = || host_mask.map_or_else(all_capabilities, capabilities_of_mask);
    if privileged {
        return Ok((all_capabilities(), Capabilities::new()));
    }
    let mut caps = default_capabilities();
    let Some(spec) = spec else {
        return Ok((caps, Capabilities::new()));
    };
    if spec.add.iter().any(|c| is_all(c)) {
        caps = all_capabilities();
    }
    if spec.drop.iter().any(|c| is_all(c)) {
        caps.clear();
    }
    for (i, c) in spec.add.iter().enumerate().filter(|(_, c)| !is_all(c)) {
        caps.insert(parse_capability(c, format!("{f}.add_capabilities[{i}]"))?);
    }
    for (i, c) in spec.drop.iter().enumerate().filter(|(_, c)| !is_all(c)) {
        caps.remove(&parse_capability(c, format!("{f}.drop_capabilities[{i}]"))?);
    }
    let mut ambient = Capabilities::new();
    for (i, c) in spec.add_ambient.iter().enumerate() {
        let field = format!("{f}.add_ambient_capabilities[{i}]");
        let cap = parse_capability(c, field.clone())?;
        // The kernel keeps an ambient capability only while it is permitted.
        if !caps.contains(&cap) {
            return Err(SpecError::invalid(
                field,
                format!("{c:?} is not in the container's capability set"),
            ));
        }
        ambient.insert(cap);
    }
    Ok((caps, ambient))
}

/// The process capabilities: bounding = effective = permitted; inheritable holds only
/// the ambient ones (CVE-2022-24769: no inheritable set by default).
pub(crate) fn linux_capabilities(caps: &Capabilities, ambient: &Capabilities) -> LinuxCapabilities {
    let mut lc = LinuxCapabilities::default();
    lc.set_bounding(Some(caps.clone()));
    lc.set_effective(Some(caps.clone()));
    lc.set_permitted(Some(caps.clone()));
    lc.set_inheritable(Some(ambient.clone()));
    lc.set_ambient(Some(ambient.clone()));
    lc
}

fn check_paths(paths: &[String], field: &str) -> Result<Vec<String>, SpecError> {
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if p.starts_with('/') {
                Ok(p.clone())
            } else {
                Err(SpecError::invalid(
                    format!("{field}[{i}]"),
                    format!("{p:?} is not an absolute path"),
                ))
            }
        })
        .collect()
}

/// Masked and read-only paths: none when privileged, the defaults when CRI sent none.
pub(crate) fn masked_and_readonly(
    sc: &SecurityContextSpec,
) -> Result<(Vec<String>, Vec<String>), SpecError> {
    if sc.privileged {
        return Ok((Vec::new(), Vec::new()));
    }
    let or_default = |paths: &[String], default: &[&str], field: &str| {
        if paths.is_empty() {
            Ok(default.iter().map(|p| p.to_string()).collect())
        } else {
            check_paths(paths, field)
        }
    };
    Ok((
        or_default(
            &sc.masked_paths,
            DEFAULT_MASKED_PATHS,
            &format!("{}.masked_paths", field::SC),
        )?,
        or_default(
            &sc.readonly_paths,
            DEFAULT_READONLY_PATHS,
            &format!("{}.readonly_paths", field::SC),
        )?,
    ))
}

/// The seccomp filter, or `None` for none (privileged, Unconfined).
pub(crate) fn seccomp(
    sc: &SecurityContextSpec,
    bounding: &Capabilities,
    localhost_contents: Option<&str>,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    if sc.privileged {
        return Ok(None);
    }
    let f = format!("{}.seccomp", field::SC);
    match &sc.seccomp {
        SecurityProfile::Unconfined => Ok(None),
        SecurityProfile::RuntimeDefault => {
            Ok(Some(seccomp_default::default_seccomp_profile(bounding)))
        }
        SecurityProfile::Localhost(path) => {
            let field = format!("{f}.localhost_ref");
            let Some(contents) = localhost_contents else {
                return Err(SpecError::invalid(
                    field,
                    format!("the profile {path:?} was not read"),
                ));
            };
            parse_localhost(contents, path, field).map(Some)
        }
    }
}

/// Parses an OCI seccomp profile (`LinuxSeccomp` JSON). Docker-format extras such as
/// `archMap` are ignored; unknown actions, operators and architectures are errors.
pub(crate) fn parse_localhost(
    contents: &str,
    path: &str,
    field: String,
) -> Result<LinuxSeccomp, SpecError> {
    let bad = |reason: String| {
        SpecError::invalid(field.clone(), format!("seccomp profile {path:?}: {reason}"))
    };
    let profile: LinuxSeccomp = serde_json::from_str(contents).map_err(|e| bad(e.to_string()))?;
    for (i, s) in profile.syscalls().iter().flatten().enumerate() {
        if s.names().is_empty() || s.names().iter().any(|n| n.is_empty()) {
            return Err(bad(format!("syscalls[{i}]: empty syscall name")));
        }
        for (j, a) in s.args().iter().flatten().enumerate() {
            if a.index() > 5 {
                return Err(bad(format!(
                    "syscalls[{i}].args[{j}]: index {} out of range 0..=5",
                    a.index()
                )));
            }
        }
    }
    Ok(profile)
}

/// The AppArmor profile name for the process, if any.
///
/// containerd's rules: privileged and Unconfined get none; RuntimeDefault gets the
/// runtime's default profile ([`crate::apparmor::DEFAULT_PROFILE`]) where AppArmor is
/// enabled and is ignored elsewhere; Localhost is an error without AppArmor. Whether
/// the profile is loaded is the caller's check (it reads the host).
pub(crate) fn apparmor(
    sc: &SecurityContextSpec,
    host_has_apparmor: bool,
) -> Result<Option<String>, SpecError> {
    match &sc.apparmor {
        SecurityProfile::Unconfined => Ok(None),
        SecurityProfile::RuntimeDefault => Ok((host_has_apparmor && !sc.privileged)
            .then(|| crate::apparmor::DEFAULT_PROFILE.to_string())),
        SecurityProfile::Localhost(name) => {
            let field = format!("{}.apparmor.localhost_ref", field::SC);
            if !host_has_apparmor {
                return Err(SpecError::Unsupported {
                    field,
                    what: format!("AppArmor profile {name:?}"),
                    reason: "AppArmor is not enabled on this host".into(),
                });
            }
            if sc.privileged {
                return Ok(None);
            }
            let name = name.strip_prefix("localhost/").unwrap_or(name);
            if name.is_empty() {
                return Err(SpecError::invalid(field, "empty AppArmor profile name"));
            }
            Ok(Some(name.to_string()))
        }
    }
}

/// The SELinux process label, if any. Options on a host without SELinux are an error
/// rather than silently ignored.
pub(crate) fn selinux(
    sc: &SecurityContextSpec,
    host_has_selinux: bool,
) -> Result<Option<String>, SpecError> {
    let Some(opts) = sc.selinux.as_ref().filter(|o| !o.is_empty()) else {
        return Ok(None);
    };
    let field = format!("{}.selinux_options", field::SC);
    if !host_has_selinux {
        return Err(SpecError::Unsupported {
            field,
            what: "SELinux options".into(),
            reason: "SELinux is not enabled on this host".into(),
        });
    }
    if opts.user.is_empty() || opts.role.is_empty() || opts.r#type.is_empty() {
        return Err(SpecError::invalid(
            field,
            "user, role and type are all needed for a label",
        ));
    }
    let mut label = format!("{}:{}:{}", opts.user, opts.role, opts.r#type);
    if !opts.level.is_empty() {
        label.push(':');
        label.push_str(&opts.level);
    }
    Ok(Some(label))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::SelinuxOptions;

    fn caps(names: &[Capability]) -> Capabilities {
        names.iter().copied().collect()
    }

    fn spec(add: &[&str], drop: &[&str]) -> CapabilitiesSpec {
        CapabilitiesSpec {
            add: add.iter().map(|s| s.to_string()).collect(),
            drop: drop.iter().map(|s| s.to_string()).collect(),
            add_ambient: Vec::new(),
        }
    }

    #[test]
    fn capability_table() {
        use Capability::*;
        let mut default_plus_admin = default_capabilities();
        default_plus_admin.insert(SysAdmin);
        let mut default_minus = default_capabilities();
        default_minus.remove(&NetRaw);
        default_minus.remove(&Mknod);
        let mut all_minus_chown = all_capabilities();
        all_minus_chown.remove(&Chown);
        let cases: Vec<(&str, bool, Option<CapabilitiesSpec>, Capabilities)> = vec![
            (
                "none given: default 14",
                false,
                None,
                default_capabilities(),
            ),
            (
                "add one",
                false,
                Some(spec(&["SYS_ADMIN"], &[])),
                default_plus_admin.clone(),
            ),
            (
                "CAP_ prefix and lower case tolerated",
                false,
                Some(spec(&["cap_sys_admin"], &[])),
                default_plus_admin,
            ),
            (
                "drop two",
                false,
                Some(spec(&[], &["NET_RAW", "MKNOD"])),
                default_minus,
            ),
            (
                "add ALL",
                false,
                Some(spec(&["ALL"], &[])),
                all_capabilities(),
            ),
            (
                "add ALL drop one",
                false,
                Some(spec(&["ALL"], &["CHOWN"])),
                all_minus_chown,
            ),
            (
                "drop ALL",
                false,
                Some(spec(&[], &["all"])),
                Capabilities::new(),
            ),
            (
                "drop ALL add one",
                false,
                Some(spec(&["NET_ADMIN"], &["ALL"])),
                caps(&[NetAdmin]),
            ),
            (
                "add and drop ALL: drop wins",
                false,
                Some(spec(&["ALL"], &["ALL"])),
                Capabilities::new(),
            ),
            (
                "privileged ignores drops",
                true,
                Some(spec(&[], &["ALL"])),
                all_capabilities(),
            ),
        ];
        for (name, privileged, s, want) in cases {
            let (got, ambient) = capabilities(privileged, s.as_ref(), None).unwrap();
            assert_eq!(got, want, "{name}");
            assert!(ambient.is_empty(), "{name}");
        }
        assert_eq!(default_capabilities().len(), 14);
        assert_eq!(all_capabilities().len(), 41);
    }

    /// "All" is crustd's own set: a host without CAP_SYS_RESOURCE (bit 24) cannot
    /// grant it, privileged or `add: [ALL]`.
    #[test]
    fn all_means_the_hosts_capabilities() {
        let mask = 0x000001fffeffffff_u64;
        for (name, privileged, s) in [
            ("privileged", true, None),
            ("add ALL", false, Some(spec(&["ALL"], &[]))),
        ] {
            let (got, _) = capabilities(privileged, s.as_ref(), Some(mask)).unwrap();
            assert_eq!(got.len(), 40, "{name}");
            assert!(!got.contains(&Capability::SysResource), "{name}");
            assert!(
                got.contains(&Capability::CheckpointRestore),
                "{name}: bit 40"
            );
        }
        assert_eq!(capabilities_of_mask(u64::MAX), all_capabilities());
        assert_eq!(capabilities_of_mask(1), caps(&[Capability::Chown]));
    }

    #[test]
    fn unknown_capability_names_field() {
        let err = capabilities(false, Some(&spec(&["NET_ADMIN", "FLY"], &[])), None).unwrap_err();
        assert!(
            err.to_string()
                .contains("config.linux.security_context.capabilities.add_capabilities[1]"),
            "{err}"
        );
        let err = capabilities(false, Some(&spec(&[], &["NOPE"])), None).unwrap_err();
        assert!(err.to_string().contains("drop_capabilities[0]"), "{err}");
    }

    #[test]
    fn ambient_capabilities() {
        let mut s = spec(&["NET_ADMIN"], &[]);
        s.add_ambient = vec!["NET_ADMIN".into()];
        let (set, ambient) = capabilities(false, Some(&s), None).unwrap();
        assert_eq!(ambient, caps(&[Capability::NetAdmin]));
        let lc = linux_capabilities(&set, &ambient);
        assert_eq!(lc.inheritable().as_ref().unwrap(), &ambient);
        assert_eq!(lc.bounding().as_ref().unwrap(), &set);
        s.add_ambient = vec!["SYS_ADMIN".into()];
        assert!(
            capabilities(false, Some(&s), None).is_err(),
            "ambient outside the permitted set"
        );
    }

    #[test]
    fn masked_paths_table() {
        let d = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases = vec![
            (
                "defaults when empty",
                SecurityContextSpec::default(),
                d(DEFAULT_MASKED_PATHS),
                d(DEFAULT_READONLY_PATHS),
            ),
            (
                "given lists replace defaults",
                SecurityContextSpec {
                    masked_paths: d(&["/proc/x"]),
                    readonly_paths: d(&["/proc/y"]),
                    ..Default::default()
                },
                d(&["/proc/x"]),
                d(&["/proc/y"]),
            ),
            (
                "privileged has none",
                SecurityContextSpec {
                    privileged: true,
                    masked_paths: d(&["/proc/x"]),
                    ..Default::default()
                },
                vec![],
                vec![],
            ),
        ];
        for (name, sc, masked, ro) in cases {
            assert_eq!(masked_and_readonly(&sc).unwrap(), (masked, ro), "{name}");
        }
        let sc = SecurityContextSpec {
            masked_paths: d(&["proc/kcore"]),
            ..Default::default()
        };
        assert!(
            masked_and_readonly(&sc)
                .unwrap_err()
                .to_string()
                .contains("masked_paths[0]")
        );
    }

    #[test]
    fn seccomp_selection() {
        let bounding = default_capabilities();
        let sc = |p: SecurityProfile, privileged: bool| SecurityContextSpec {
            seccomp: p,
            privileged,
            ..Default::default()
        };
        assert!(
            seccomp(&sc(SecurityProfile::Unconfined, false), &bounding, None)
                .unwrap()
                .is_none()
        );
        assert!(
            seccomp(&sc(SecurityProfile::RuntimeDefault, false), &bounding, None)
                .unwrap()
                .is_some()
        );
        assert!(
            seccomp(&sc(SecurityProfile::RuntimeDefault, true), &bounding, None)
                .unwrap()
                .is_none(),
            "privileged"
        );
        let local = sc(SecurityProfile::Localhost("/p.json".into()), false);
        let err = seccomp(&local, &bounding, None).unwrap_err();
        assert!(err.to_string().contains("seccomp.localhost_ref"), "{err}");
        let p = seccomp(
            &local,
            &bounding,
            Some(r#"{"defaultAction":"SCMP_ACT_LOG"}"#),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            p.default_action(),
            oci_spec::runtime::LinuxSeccompAction::ScmpActLog
        );
    }

    #[test]
    fn localhost_parsing_table() {
        let ok = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64"],
            "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []}],
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
            ]
        }"#;
        let p = parse_localhost(ok, "/ok.json", "f".into()).unwrap();
        assert_eq!(p.syscalls().as_ref().unwrap().len(), 3);
        assert_eq!(p.syscalls().as_ref().unwrap()[2].errno_ret(), Some(13));
        assert_eq!(p.default_errno_ret(), Some(1));
        let cases = [
            ("not json", "{", "/a.json"),
            (
                "no default action",
                r#"{"syscalls": []}"#,
                "missing field `defaultAction`",
            ),
            (
                "unknown action",
                r#"{"defaultAction": "SCMP_ACT_MAYBE"}"#,
                "SCMP_ACT_MAYBE",
            ),
            (
                "unknown arch",
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}"#,
                "SCMP_ARCH_Z80",
            ),
            (
                "unknown operator",
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["a"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_ABOUT"}]}]}"#,
                "SCMP_CMP_ABOUT",
            ),
            (
                "empty names",
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":[],"action":"SCMP_ACT_ALLOW"}]}"#,
                "syscalls[0]: empty syscall name",
            ),
            (
                "arg index out of range",
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["a"],"action":"SCMP_ACT_ALLOW","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
                "index 6",
            ),
        ];
        for (name, json, want) in cases {
            let err =
                parse_localhost(json, "/a.json", "config.x.localhost_ref".into()).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(want) && msg.contains("config.x.localhost_ref"),
                "{name}: {msg}"
            );
        }
    }

    #[test]
    fn apparmor_table() {
        let sc = |p: SecurityProfile| SecurityContextSpec {
            apparmor: p,
            ..Default::default()
        };
        let local = sc(SecurityProfile::Localhost("localhost/my-profile".into()));
        assert_eq!(
            apparmor(&sc(SecurityProfile::Unconfined), false).unwrap(),
            None
        );
        assert_eq!(
            apparmor(&sc(SecurityProfile::RuntimeDefault), false).unwrap(),
            None,
            "ignored without AppArmor"
        );
        assert_eq!(
            apparmor(&sc(SecurityProfile::RuntimeDefault), true)
                .unwrap()
                .as_deref(),
            Some("crust-default"),
            "the shipped profile where AppArmor is on"
        );
        let privileged = SecurityContextSpec {
            privileged: true,
            ..sc(SecurityProfile::RuntimeDefault)
        };
        assert_eq!(apparmor(&privileged, true).unwrap(), None, "privileged");
        assert_eq!(
            apparmor(&sc(SecurityProfile::Unconfined), true).unwrap(),
            None,
            "unconfined where AppArmor is on"
        );
        assert_eq!(
            apparmor(&local, true).unwrap().as_deref(),
            Some("my-profile")
        );
        assert_eq!(
            apparmor(&sc(SecurityProfile::Localhost("bare".into())), true)
                .unwrap()
                .as_deref(),
            Some("bare"),
            "kubelet sends the name without the prefix"
        );
        let empty = sc(SecurityProfile::Localhost("localhost/".into()));
        assert!(matches!(
            apparmor(&empty, true),
            Err(SpecError::InvalidField { .. })
        ));
        let err = apparmor(&local, false).unwrap_err();
        assert!(matches!(err, SpecError::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains("apparmor.localhost_ref"), "{err}");
    }

    #[test]
    fn selinux_table() {
        let opts = SelinuxOptions {
            user: "system_u".into(),
            role: "system_r".into(),
            r#type: "container_t".into(),
            level: "s0:c1,c2".into(),
        };
        let sc = SecurityContextSpec {
            selinux: Some(opts),
            ..Default::default()
        };
        assert_eq!(
            selinux(&sc, true).unwrap().as_deref(),
            Some("system_u:system_r:container_t:s0:c1,c2")
        );
        assert!(matches!(
            selinux(&sc, false),
            Err(SpecError::Unsupported { .. })
        ));
        let empty = SecurityContextSpec {
            selinux: Some(SelinuxOptions::default()),
            ..Default::default()
        };
        assert_eq!(
            selinux(&empty, false).unwrap(),
            None,
            "empty options are no request"
        );
    }
}
