//! Which sysctls a pod may set: only those the kernel namespaces, and only in a
//! namespace the pod owns (kubelet's own safe/unsafe split is policy; this is physics).

use super::NsMode;

/// The namespace a sysctl lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysctlNs {
    Net,
    Ipc,
    Uts,
}

/// Classifies a sysctl name (dotted or slashed form).
pub fn namespace_of(name: &str) -> Option<SysctlNs> {
    let name = name.replace('/', ".");
    const IPC: &[&str] = &[
        "kernel.shmmax",
        "kernel.shmall",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
    ];
    if name.starts_with("net.") {
        Some(SysctlNs::Net)
    } else if IPC.contains(&name.as_str()) || name.starts_with("fs.mqueue.") {
        Some(SysctlNs::Ipc)
    } else if name == "kernel.hostname" || name == "kernel.domainname" {
        Some(SysctlNs::Uts)
    } else {
        None
    }
}

/// Checks every sysctl can be applied inside the pod. Returns the error text naming the
/// offending sysctl.
pub fn validate(sysctls: &[(String, String)], network: NsMode, ipc: NsMode) -> Result<(), String> {
    for (name, value) in sysctls {
        if name.is_empty()
            || name.contains("..")
            || name.starts_with(['.', '/'])
            || value.contains('\n')
        {
            return Err(format!("sysctl {name:?}={value:?} is malformed"));
        }
        match namespace_of(name) {
            None => {
                return Err(format!(
                    "sysctl {name:?} is not namespaced; it cannot be set per pod"
                ));
            }
            Some(SysctlNs::Net | SysctlNs::Uts) if network == NsMode::Node => {
                return Err(format!(
                    "sysctl {name:?} needs the pod's own network namespace (network is NODE)"
                ));
            }
            Some(SysctlNs::Ipc) if ipc == NsMode::Node => {
                return Err(format!(
                    "sysctl {name:?} needs the pod's own IPC namespace (ipc is NODE)"
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Checks every sysctl exists under `proc_sys` (crustd's `/proc/sys`). The pod's are
/// written by its monitor in the pod's new namespaces, where an unknown name failed
/// with ENOENT and came back as a monitor failure (INTERNAL) after the namespaces were
/// made; the namespaced sysctls exist in crustd's namespaces too, so an unknown one is
/// refused up front as the caller's error.
pub fn check_known(sysctls: &[(String, String)], proc_sys: &std::path::Path) -> Result<(), String> {
    for (name, _) in sysctls {
        let path = proc_sys.join(crate::monitor::daemon::sysctl_path(name));
        if !path.is_file() {
            return Err(format!(
                "sysctl {:?} is not known to this kernel (no {})",
                crate::excerpt(name),
                crate::excerpt(&path.display().to_string())
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_and_validation() {
        let s = |n: &str| vec![(n.to_string(), "1".to_string())];
        let cases: &[(&str, NsMode, NsMode, bool)] = &[
            ("net.ipv4.ip_forward", NsMode::Pod, NsMode::Pod, true),
            (
                "net/ipv4/conf/all/forwarding",
                NsMode::Pod,
                NsMode::Pod,
                true,
            ),
            ("net.ipv4.ip_forward", NsMode::Node, NsMode::Pod, false),
            ("kernel.shm_rmid_forced", NsMode::Pod, NsMode::Pod, true),
            ("kernel.shm_rmid_forced", NsMode::Pod, NsMode::Node, false),
            ("fs.mqueue.msg_max", NsMode::Node, NsMode::Pod, true),
            ("kernel.domainname", NsMode::Pod, NsMode::Pod, true),
            ("kernel.pid_max", NsMode::Pod, NsMode::Pod, false),
            ("vm.swappiness", NsMode::Pod, NsMode::Pod, false),
            ("net/../kernel/pid_max", NsMode::Pod, NsMode::Pod, false),
            ("", NsMode::Pod, NsMode::Pod, false),
        ];
        for (name, net, ipc, ok) in cases {
            let result = validate(&s(name), *net, *ipc);
            assert_eq!(
                result.is_ok(),
                *ok,
                "{name} net={net:?} ipc={ipc:?}: {result:?}"
            );
            if let Err(e) = result {
                assert!(
                    e.contains(&format!("{name:?}")),
                    "error names the sysctl: {e}"
                );
            }
        }
    }

    #[test]
    fn unknown_sysctls_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("net/ipv4")).unwrap();
        std::fs::write(tmp.path().join("net/ipv4/ip_forward"), "0").unwrap();
        let s = |n: &str| vec![(n.to_string(), "1".to_string())];
        assert!(check_known(&s("net.ipv4.ip_forward"), tmp.path()).is_ok());
        let err = check_known(&s("net.ipv4.no_such_thing"), tmp.path()).unwrap_err();
        assert!(err.contains("net.ipv4.no_such_thing"), "{err}");
        assert!(
            check_known(&s("net.ipv4"), tmp.path()).is_err(),
            "a directory is no sysctl"
        );
    }
}
