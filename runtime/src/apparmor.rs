//! AppArmor: the `crust-default` profile crust ships for `RuntimeDefault`, and the
//! check that a profile a container asks for is loaded before the container is made.
//!
//! The profile is loaded lazily, by the first container that needs it, with
//! `apparmor_parser -Kr` (replace, skip the cache: the text is crust's, not a file the
//! parser could cache by mtime), as containerd does for `cri-containerd.apparmor.d`.
//! Applying a profile is the launcher's job (`exec <name>` written to the process's
//! `attr/apparmor/exec` before its exec; runc gets `process.apparmorProfile`).

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
};

/// The profile `RuntimeDefault` means on an AppArmor host.
pub const DEFAULT_PROFILE: &str = "crust-default";

/// Why a profile cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AppArmorError {
    /// A Localhost profile nobody loaded: the kernel would refuse the exec transition.
    #[error("{field}: AppArmor profile {profile:?} is not loaded on this host")]
    NotLoaded { field: String, profile: String },
    #[error("load AppArmor profile {profile:?} with {parser}: {reason}", parser = parser.display())]
    Load {
        profile: String,
        parser: PathBuf,
        reason: String,
    },
    #[error("read the loaded AppArmor profiles from {path}: {source}", path = path.display())]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Which parts of the host's AppArmor policy directory the default profile may use.
/// Each is optional so the profile also loads where the distribution ships no policy
/// files (the rules below spell out `/proc/` instead of `@{PROC}` for that reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolicyIncludes {
    /// `abi/3.0`: pins the rule semantics. Under ABI 4.0 a bare `network,` no longer
    /// covers unix sockets (containerd issue 12726), which would break most workloads.
    pub abi_3_0: bool,
    /// `tunables/global`: the variables `abstractions/base` uses.
    pub tunables: bool,
    /// `abstractions/base`: what every program needs (libraries, locale, ...).
    pub base: bool,
}

/// The text of `crust-default`, modelled on Docker's and containerd's default profile:
/// everything allowed but mount, writes to the host-wide files of /proc and /sys
/// (sysrq-trigger, /proc/sys outside the namespaced kernel.shm*, sysfs outside
/// cgroupfs, firmware, securityfs), with signals and ptrace only among its own
/// processes and from unconfined ones (crustd, crust-monitor).
pub fn default_profile(includes: PolicyIncludes) -> String {
    let mut text = String::new();
    if includes.abi_3_0 {
        text.push_str("abi <abi/3.0>,\n\n");
    }
    if includes.tunables {
        text.push_str("#include <tunables/global>\n\n");
    }
    text.push_str(&format!(
        "profile {DEFAULT_PROFILE} flags=(attach_disconnected,mediate_deleted) {{\n"
    ));
    if includes.base && includes.tunables {
        text.push_str("  #include <abstractions/base>\n\n");
    }
    text.push_str(&RULES.replace("{name}", DEFAULT_PROFILE));
    text.push_str("}\n");
    text
}

/// The body of the default profile. `attach_disconnected`: paths outside the process's
/// mount namespace root (its rootfs after pivot_root) are still mediated by name.
const RULES: &str = r"  network,
  capability,
  file,
  umount,

  # crust-monitor and crustd (unconfined) stop and kill containers; runc and crun
  # may run under profiles of their own.
  signal (receive) peer=unconfined,
  signal (receive) peer=runc,
  signal (receive) peer=crun,
  # A container's processes (and its execs, which join the profile) signal each other.
  signal (send,receive) peer={name},
  # ps and top inside the container read their peers.
  ptrace (trace,read,tracedby,readby) peer={name},

  # The container's rootfs and mounts are made by the runtime; a process with
  # CAP_SYS_ADMIN must not remount them (or mount procfs to unmask paths).
  deny mount,

  # /proc: host-wide files at the top level (sysrq-trigger, kmsg, ...) and in every
  # directory but the per-process ones and /proc/sys.
  deny /proc/* w,
  deny /proc/{[^1-9],[^1-9][^0-9],[^1-9s][^0-9y][^0-9s],[^1-9][^0-9][^0-9][^0-9/]*}/** w,
  # /proc/sys: only the IPC namespace's kernel.shm* sysctls are the container's.
  deny /proc/sys/[^k]** w,
  deny /proc/sys/kernel/{?,??,[^s][^h][^m]**} w,
  deny /proc/sysrq-trigger rwklx,
  deny /proc/kcore rwklx,

  # sysfs is the host's, except the container's own cgroup files.
  deny /sys/[^f]*/** wklx,
  deny /sys/f[^s]*/** wklx,
  deny /sys/fs/[^c]*/** wklx,
  deny /sys/fs/c[^g]*/** wklx,
  deny /sys/fs/cg[^r]*/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/devices/virtual/powercap/** rwklx,
  deny /sys/kernel/security/** rwklx,
";

/// Whether `name` is in the kernel's profile list (securityfs `apparmor/profiles`,
/// one `name (mode)` per line, the mode being `enforce`, `complain`, `kill`, ...).
pub fn is_loaded(profiles: &str, name: &str) -> bool {
    profiles
        .lines()
        .filter_map(|line| line.rsplit_once(" ("))
        .any(|(loaded, _mode)| loaded == name)
}

/// The profile name of a deprecated CRI `apparmor_profile` string, as the CRI
/// documents it: `runtime/default` (and Docker's `docker/default`, and empty: the
/// runtime's default, kubernetes#51746), `unconfined`, `localhost/<name>`. `None`: none
/// of these.
pub fn parse_deprecated(value: &str) -> Option<crate::container::SecurityProfile> {
    use crate::container::SecurityProfile;
    match value {
        "" | "runtime/default" | "docker/default" => Some(SecurityProfile::RuntimeDefault),
        "unconfined" => Some(SecurityProfile::Unconfined),
        _ => value
            .strip_prefix("localhost/")
            .filter(|name| !name.is_empty())
            .map(|name| SecurityProfile::Localhost(name.to_string())),
    }
}

/// The kernel side of profile handling, behind a trait so the decisions are unit
/// tested. Both methods block (a file read; a process run).
pub trait ProfileStore: Send + Sync {
    /// The kernel's list of loaded profiles, as [`is_loaded`] reads it.
    fn loaded(&self) -> Result<String, AppArmorError>;
    /// Loads `policy` (replacing a profile of the same name).
    fn load(&self, profile: &str, policy: &str) -> Result<(), AppArmorError>;
    /// The includes the host's policy directory offers.
    fn includes(&self) -> PolicyIncludes;
}

/// What [`AppArmor::ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    AlreadyLoaded,
    /// `crust-default` was not loaded; it is now.
    LoadedDefault,
}

/// Profiles for one crustd: the store and a lock so concurrent CreateContainers load
/// the default profile once.
pub struct AppArmor {
    store: Box<dyn ProfileStore>,
    loading: Mutex<()>,
}

impl AppArmor {
    pub fn new(store: Box<dyn ProfileStore>) -> AppArmor {
        AppArmor {
            store,
            loading: Mutex::new(()),
        }
    }

    /// Makes sure `profile` can be applied: `crust-default` is loaded if the kernel
    /// does not list it (again after a policy reload emptied the list); any other
    /// profile must already be loaded (CRI: Localhost profiles are "loaded on the node
    /// by name"), else [`AppArmorError::NotLoaded`] naming `field`. Blocking.
    pub fn ensure(&self, profile: &str, field: &str) -> Result<Ensured, AppArmorError> {
        if is_loaded(&self.store.loaded()?, profile) {
            return Ok(Ensured::AlreadyLoaded);
        }
        if profile != DEFAULT_PROFILE {
            return Err(AppArmorError::NotLoaded {
                field: field.to_string(),
                profile: profile.to_string(),
            });
        }
        let _one_at_a_time = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if is_loaded(&self.store.loaded()?, profile) {
            return Ok(Ensured::AlreadyLoaded);
        }
        self.store
            .load(profile, &default_profile(self.store.includes()))?;
        Ok(Ensured::LoadedDefault)
    }
}

/// The real store: securityfs and `apparmor_parser`.
pub struct HostProfiles {
    /// `<securityfs>/apparmor/profiles`.
    pub profiles: PathBuf,
    /// The parser's policy directory (`/etc/apparmor.d`), where the includes live.
    pub policy_dir: PathBuf,
    /// `apparmor_parser`, looked up in PATH when not absolute.
    pub parser: PathBuf,
}

impl HostProfiles {
    /// The standard places under a sysfs root (`/sys`).
    pub fn under(sys_root: &Path) -> HostProfiles {
        HostProfiles {
            profiles: sys_root.join("kernel/security/apparmor/profiles"),
            policy_dir: PathBuf::from("/etc/apparmor.d"),
            parser: PathBuf::from("apparmor_parser"),
        }
    }
}

impl ProfileStore for HostProfiles {
    fn loaded(&self) -> Result<String, AppArmorError> {
        std::fs::read_to_string(&self.profiles).map_err(|source| AppArmorError::List {
            path: self.profiles.clone(),
            source,
        })
    }

    fn load(&self, profile: &str, policy: &str) -> Result<(), AppArmorError> {
        let fail = |reason: String| AppArmorError::Load {
            profile: profile.to_string(),
            parser: self.parser.clone(),
            reason,
        };
        let mut child = Command::new(&self.parser)
            .arg("-Kr")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("start: {e}")))?;
        let written = child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(policy.as_bytes());
        let out = child
            .wait_with_output()
            .map_err(|e| fail(format!("wait: {e}")))?;
        if !out.status.success() {
            return Err(fail(format!(
                "{}: {}",
                out.status,
                crate::excerpt(String::from_utf8_lossy(&out.stderr).trim())
            )));
        }
        written.map_err(|e| fail(format!("write the policy: {e}")))
    }

    fn includes(&self) -> PolicyIncludes {
        let has = |rel: &str| self.policy_dir.join(rel).is_file();
        PolicyIncludes {
            abi_3_0: has("abi/3.0"),
            tunables: has("tunables/global"),
            base: has("abstractions/base"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::SecurityProfile;
    use std::sync::{Arc, Mutex as StdMutex};

    #[test]
    fn default_profile_text() {
        let bare = default_profile(PolicyIncludes::default());
        assert!(
            bare.starts_with(
                "profile crust-default flags=(attach_disconnected,mediate_deleted) {\n"
            ),
            "{bare}"
        );
        assert!(bare.trim_end().ends_with('}'), "{bare}");
        assert!(
            !bare.contains("#include") && !bare.contains("abi <"),
            "{bare}"
        );
        assert!(
            !bare.contains("@{"),
            "no variables without tunables: {bare}"
        );
        for rule in [
            "deny mount,",
            "deny /proc/sysrq-trigger rwklx,",
            "deny /proc/* w,",
            "deny /proc/sys/[^k]** w,",
            "deny /sys/firmware/** rwklx,",
            "deny /sys/kernel/security/** rwklx,",
            "signal (receive) peer=unconfined,",
            "signal (send,receive) peer=crust-default,",
            "ptrace (trace,read,tracedby,readby) peer=crust-default,",
        ] {
            assert!(bare.lines().any(|l| l.trim() == rule), "missing {rule:?}");
        }
        assert_eq!(
            bare.matches('{').count(),
            bare.matches('}').count(),
            "{bare}"
        );

        let full = default_profile(PolicyIncludes {
            abi_3_0: true,
            tunables: true,
            base: true,
        });
        assert!(full.starts_with("abi <abi/3.0>,\n"), "{full}");
        let tunables = full.find("#include <tunables/global>").unwrap();
        let profile = full.find("profile crust-default").unwrap();
        let base = full.find("#include <abstractions/base>").unwrap();
        assert!(tunables < profile && profile < base, "{full}");

        let base_alone = default_profile(PolicyIncludes {
            base: true,
            ..Default::default()
        });
        assert!(
            !base_alone.contains("abstractions/base"),
            "base needs the tunables' variables"
        );
    }

    #[test]
    fn loaded_list_parsing() {
        let list = "crust-default (enforce)\n/usr/bin/man (complain)\nfoo bar (enforce)\nlsb_release (kill)\n";
        let cases = [
            ("crust-default", true),
            ("/usr/bin/man", true),
            ("foo bar", true),
            ("lsb_release", true),
            ("crust", false),
            ("enforce", false),
            ("crust-default (enforce)", false),
            ("", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_loaded(list, name), want, "{name:?}");
        }
        assert!(!is_loaded("", "crust-default"));
    }

    #[test]
    fn deprecated_field_table() {
        let cases = [
            ("", Some(SecurityProfile::RuntimeDefault)),
            ("runtime/default", Some(SecurityProfile::RuntimeDefault)),
            ("docker/default", Some(SecurityProfile::RuntimeDefault)),
            ("unconfined", Some(SecurityProfile::Unconfined)),
            (
                "localhost/my-profile",
                Some(SecurityProfile::Localhost("my-profile".into())),
            ),
            ("localhost/", None),
            ("my-profile", None),
            ("Unconfined", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_deprecated(value), want, "{value:?}");
        }
    }

    #[derive(Default)]
    struct Fake {
        list: StdMutex<String>,
        loads: StdMutex<Vec<(String, String)>>,
        fail_load: bool,
    }

    impl ProfileStore for Arc<Fake> {
        fn loaded(&self) -> Result<String, AppArmorError> {
            Ok(self.list.lock().unwrap().clone())
        }
        fn load(&self, profile: &str, policy: &str) -> Result<(), AppArmorError> {
            if self.fail_load {
                return Err(AppArmorError::Load {
                    profile: profile.into(),
                    parser: "apparmor_parser".into(),
                    reason: "syntax error".into(),
                });
            }
            self.loads
                .lock()
                .unwrap()
                .push((profile.into(), policy.into()));
            self.list
                .lock()
                .unwrap()
                .push_str(&format!("{profile} (enforce)\n"));
            Ok(())
        }
        fn includes(&self) -> PolicyIncludes {
            PolicyIncludes {
                abi_3_0: true,
                ..Default::default()
            }
        }
    }

    #[test]
    fn default_is_loaded_once_lazily() {
        let fake = Arc::new(Fake::default());
        let aa = AppArmor::new(Box::new(fake.clone()));
        assert_eq!(
            aa.ensure(DEFAULT_PROFILE, "f").unwrap(),
            Ensured::LoadedDefault
        );
        assert_eq!(
            aa.ensure(DEFAULT_PROFILE, "f").unwrap(),
            Ensured::AlreadyLoaded,
            "listed now: not loaded again"
        );
        let loads = fake.loads.lock().unwrap();
        assert_eq!(loads.len(), 1);
        assert_eq!(loads[0].0, DEFAULT_PROFILE);
        assert!(
            loads[0].1.starts_with("abi <abi/3.0>,") && loads[0].1.contains("deny mount,"),
            "the store's includes shape the text: {}",
            loads[0].1
        );
    }

    #[test]
    fn default_already_listed_is_not_loaded() {
        let fake = Arc::new(Fake::default());
        *fake.list.lock().unwrap() = "crust-default (enforce)\n".into();
        let aa = AppArmor::new(Box::new(fake.clone()));
        assert_eq!(
            aa.ensure(DEFAULT_PROFILE, "f").unwrap(),
            Ensured::AlreadyLoaded
        );
        assert!(fake.loads.lock().unwrap().is_empty());
    }

    #[test]
    fn localhost_must_be_loaded_and_is_never_loaded_by_crust() {
        let fake = Arc::new(Fake::default());
        *fake.list.lock().unwrap() = "mine (complain)\n".into();
        let aa = AppArmor::new(Box::new(fake.clone()));
        assert_eq!(aa.ensure("mine", "f").unwrap(), Ensured::AlreadyLoaded);
        let field = "config.linux.security_context.apparmor.localhost_ref";
        let err = aa.ensure("theirs", field).unwrap_err();
        assert!(matches!(err, AppArmorError::NotLoaded { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(field) && msg.contains("\"theirs\""), "{msg}");
        assert!(fake.loads.lock().unwrap().is_empty());
    }

    #[test]
    fn a_failed_load_is_an_error() {
        let fake = Arc::new(Fake {
            fail_load: true,
            ..Default::default()
        });
        let aa = AppArmor::new(Box::new(fake));
        let err = aa.ensure(DEFAULT_PROFILE, "f").unwrap_err();
        assert!(matches!(err, AppArmorError::Load { .. }), "{err}");
        assert!(err.to_string().contains("syntax error"), "{err}");
    }

    /// The real store against files in a temp dir (securityfs and the policy dir), and
    /// a parser that is not there.
    #[test]
    fn host_store_reads_its_roots() {
        let dir = tempfile::tempdir().unwrap();
        let store = HostProfiles {
            profiles: dir.path().join("profiles"),
            policy_dir: dir.path().join("apparmor.d"),
            parser: dir.path().join("no-such-parser"),
        };
        assert!(matches!(store.loaded(), Err(AppArmorError::List { .. })));
        std::fs::write(dir.path().join("profiles"), "a (enforce)\n").unwrap();
        assert_eq!(store.loaded().unwrap(), "a (enforce)\n");
        assert_eq!(store.includes(), PolicyIncludes::default());
        std::fs::create_dir_all(dir.path().join("apparmor.d/abi")).unwrap();
        std::fs::write(dir.path().join("apparmor.d/abi/3.0"), "").unwrap();
        assert!(store.includes().abi_3_0);
        let err = store.load("p", "profile p {}\n").unwrap_err();
        assert!(err.to_string().contains("no-such-parser"), "{err}");
    }
}
