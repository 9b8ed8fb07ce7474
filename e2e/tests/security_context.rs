//! Each field of a container's security context (issue 5), checked from inside the
//! container (`/proc/<pid>/status` of its main process and of an exec, `id`, reads and
//! writes) or on CreateContainer's error, with the built-in launcher and with runc on
//! the same specs. `privileged` is covered in container_config.rs and `oom_score_adj`
//! in launcher_setup.rs.

use std::{collections::BTreeSet, path::Path};

use crust_e2e::{
    image_builder::{Compression, Image, LayerBuilder, host_arch},
    world::{PodOptions, World},
};
use crust_proto::runtime::v1::{
    Capability, ContainerConfig, Int64Value, LinuxContainerConfig, LinuxContainerSecurityContext,
    Mount, NamespaceMode, NamespaceOption, SeLinuxOption, SecurityProfile,
    SupplementalGroupsPolicy, security_profile::ProfileType,
};
use tonic::Code;

const RUNC: &str = "/usr/sbin/runc";
/// The built-in launcher (the default handler) and runc.
const HANDLERS: [&str; 2] = ["", "runc"];
/// Docker's and containerd's 14 default capabilities as a `CapEff` mask.
const DEFAULT_CAPS: u64 = 0xa804_25fb;

type Sc = LinuxContainerSecurityContext;

/// busybox with `app` (1000:1000) listed as a member of `extra` (3000) in /etc/group,
/// and an `/etc/secret` to mask.
fn image() -> Image {
    let mut layer = LayerBuilder::new();
    layer
        .busybox(&[
            "sh", "id", "cat", "sleep", "stat", "touch", "mkdir", "ls", "echo",
        ])
        .expect("busybox-static is installed");
    for dir in ["etc", "proc", "sys", "dev", "tmp", "data"] {
        layer.dir(dir, 0o755);
    }
    layer
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
            0o644,
        )
        .file(
            "etc/group",
            b"root:x:0:\napp:x:1000:\nextra:x:3000:app\n",
            0o644,
        )
        .file("etc/secret", b"s3cret\n", 0o644);
    Image::build(
        vec![layer.finish(Compression::Gzip)],
        host_arch(),
        serde_json::json!({"Cmd": ["sh"], "Env": ["PATH=/bin"]}),
    )
}

async fn world(repo: &str) -> World {
    assert!(
        Path::new(RUNC).is_file(),
        "{RUNC} not found: install it with `apt-get install runc`"
    );
    World::start(
        &image(),
        repo,
        &format!("[runtime.handlers.runc]\ntype = \"oci\"\npath = \"{RUNC}\"\n"),
    )
    .await
}

fn label(handler: &str) -> &str {
    if handler.is_empty() {
        "built-in"
    } else {
        handler
    }
}

/// A pod whose containers each get their own PID namespace, so that `/proc/1` is the
/// container's main process.
async fn pod(w: &World, handler: &str, name: &str) -> String {
    w.run_pod(
        &PodOptions::named(&format!("{name}-{}", label(handler)))
            .handler(handler)
            .pid(NamespaceMode::Container),
    )
    .await
}

/// `sleep 3600` in a PID namespace of its own, with the security context `f` makes.
fn ctr(w: &World, name: &str, f: impl FnOnce(&mut Sc)) -> ContainerConfig {
    let mut sc = Sc {
        namespace_options: Some(NamespaceOption {
            pid: NamespaceMode::Container.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    f(&mut sc);
    let mut c = w.config(name, &["sleep", "3600"]);
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    });
    c
}

fn profile(t: ProfileType, localhost_ref: &str) -> Option<SecurityProfile> {
    Some(SecurityProfile {
        profile_type: t.into(),
        localhost_ref: localhost_ref.into(),
    })
}

/// Runs `cmd` in `id`; asserts it succeeded and returns its trimmed stdout.
async fn ok(w: &World, id: &str, cmd: &[&str]) -> String {
    let (code, out, err) = w.exec(id, cmd).await;
    assert_eq!(code, 0, "{cmd:?} in {id}: {out}{err}");
    out.trim().to_string()
}

/// Runs `cmd` in `id`; asserts it failed with `wanted` in its stderr.
async fn fails(w: &World, id: &str, cmd: &[&str], wanted: &str) {
    let (code, out, err) = w.exec(id, cmd).await;
    assert_ne!(code, 0, "{cmd:?} in {id} must fail: {out}");
    assert!(
        err.contains(wanted),
        "{cmd:?} in {id}: {err:?} lacks {wanted:?}"
    );
}

/// `key` of `/proc/<pid>/status` for the container's main process and for an exec,
/// asserted equal (execs get the container's identity and confinement).
async fn status(w: &World, id: &str, key: &str) -> String {
    let get = |s: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{key} missing from {s}"))
    };
    let main = get(&ok(w, id, &["cat", "/proc/1/status"]).await);
    let exec = get(&ok(w, id, &["cat", "/proc/self/status"]).await);
    assert_eq!(main, exec, "{key}: main process vs exec in {id}");
    main
}

fn ids(s: &str) -> BTreeSet<u32> {
    s.split_whitespace()
        .map(|g| g.parse().expect("numeric id"))
        .collect()
}

/// CreateContainer of `config` fails with `code` and a message naming each of `named`.
async fn refused(w: &World, pod: &str, config: ContainerConfig, code: Code, named: &[&str]) {
    let err = w.create(pod, config).await.expect_err("must be refused");
    assert_eq!(err.code(), code, "{err:?}");
    for n in named {
        assert!(err.message().contains(n), "{:?} lacks {n:?}", err.message());
    }
}

/// run_as_username, run_as_user with run_as_group, and supplemental groups under both
/// policies (api.proto: Merge adds the groups the image's /etc/group gives the user,
/// Strict only the requested ones); run_as_group alone and an unknown user are errors.
#[tokio::test]
async fn users_and_groups() {
    let w = world("test/users").await;
    // (name, run_as_username, run_as_user, run_as_group, supplemental_groups, Strict,
    //  then `id -u`, `id -g`, `id -G`)
    #[rustfmt::skip]
    type Case<'a> = (&'a str, &'a str, Option<i64>, Option<i64>, &'a [i64], bool, &'a str, &'a str, &'a str);
    #[rustfmt::skip]
    let cases: [Case; 5] = [
        ("root", "", None, None, &[], false, "0", "0", "0"),
        ("username", "app", None, None, &[], false, "1000", "1000", "1000 3000"),
        ("uid-gid", "", Some(1000), Some(2000), &[], false, "1000", "2000", "2000 3000"),
        ("merge", "app", None, None, &[4000], false, "1000", "1000", "1000 3000 4000"),
        ("strict", "app", None, None, &[4000], true, "1000", "1000", "1000 4000"),
    ];
    for handler in HANDLERS {
        let h = label(handler);
        let pod = pod(&w, handler, "users").await;
        for (name, username, user, group, supplemental, strict, uid, gid, groups) in cases {
            let c = ctr(&w, name, |sc| {
                sc.run_as_username = username.into();
                sc.run_as_user = user.map(|value| Int64Value { value });
                sc.run_as_group = group.map(|value| Int64Value { value });
                sc.supplemental_groups = supplemental.to_vec();
                if strict {
                    sc.supplemental_groups_policy = SupplementalGroupsPolicy::Strict.into();
                }
            });
            let id = w.run(&pod, c).await;
            for (what, got, want) in [
                ("id -u", ok(&w, &id, &["id", "-u"]).await, uid),
                ("id -g", ok(&w, &id, &["id", "-g"]).await, gid),
                ("id -G", ok(&w, &id, &["id", "-G"]).await, groups),
                ("Uid (real..fs)", status(&w, &id, "Uid").await, uid),
                ("Gid (real..fs)", status(&w, &id, "Gid").await, gid),
                ("Groups", status(&w, &id, "Groups").await, groups),
            ] {
                assert_eq!(ids(&got), ids(want), "{h} {name}: {what}: {got}");
            }
        }
        let ghost = ctr(&w, "ghost", |sc| sc.run_as_username = "ghost".into());
        let named = ["run_as_username", "ghost"];
        refused(&w, &pod, ghost, Code::InvalidArgument, &named).await;
        let group_only = ctr(&w, "group-only", |sc| {
            sc.run_as_group = Some(Int64Value { value: 2000 })
        });
        let named = ["run_as_group"];
        refused(&w, &pod, group_only, Code::InvalidArgument, &named).await;
    }
}

/// Mount points in `id` mounted read-only, from its mountinfo.
async fn readonly_mounts(w: &World, id: &str) -> BTreeSet<String> {
    ok(w, id, &["cat", "/proc/self/mountinfo"])
        .await
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f[5].split(',').any(|o| o == "ro").then(|| f[4].to_string())
        })
        .collect()
}

/// Without CRI paths the defaults apply: masked files (/proc/kcore, /proc/keys,
/// /proc/timer_list: those this kernel has) are /dev/null, /sys/firmware an empty
/// tmpfs (it is not empty on the host), /proc/sys, /proc/sysrq-trigger and others are
/// read-only. Explicit masked_paths and readonly_paths replace the defaults.
#[tokio::test]
async fn masked_and_readonly_paths() {
    let w = world("test/masked").await;
    let masked: Vec<&str> = ["/proc/kcore", "/proc/keys", "/proc/timer_list"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    assert!(!masked.is_empty(), "no default-masked file on this host");
    // Paths the kernel lacks (/proc/sysrq-trigger without CONFIG_MAGIC_SYSRQ) are
    // skipped, by runc too.
    let readonly: Vec<&str> = ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    let host_firmware = std::fs::read_dir("/sys/firmware").map_or(0, |d| d.count());
    for handler in HANDLERS {
        let h = label(handler);
        let pod = pod(&w, handler, "masked").await;
        let id = w.run(&pod, ctr(&w, "defaults", |_| {})).await;
        for p in &masked {
            let dev = ok(&w, &id, &["stat", "-c", "%t:%T", p]).await;
            assert_eq!(dev, "1:3", "{h}: {p} is /dev/null");
            assert_eq!(ok(&w, &id, &["cat", p]).await, "", "{h}: {p}");
        }
        if host_firmware > 0 {
            let fs = ok(&w, &id, &["stat", "-f", "-c", "%T", "/sys/firmware"]).await;
            assert_eq!(fs, "tmpfs", "{h}");
            assert_eq!(ok(&w, &id, &["ls", "-A", "/sys/firmware"]).await, "", "{h}");
        }
        let ro = readonly_mounts(&w, &id).await;
        for p in &readonly {
            assert!(ro.contains(*p), "{h}: {p} read-only: {ro:?}");
        }
        // The IPC namespace's own sysctl, writable to its root were /proc/sys not
        // read-only; `h` (help) is harmless should sysrq-trigger be writable.
        let mut writes = vec!["echo 1 > /proc/sys/kernel/shm_rmid_forced"];
        if readonly.contains(&"/proc/sysrq-trigger") {
            writes.push("echo h > /proc/sysrq-trigger");
        }
        for write in writes {
            fails(&w, &id, &["sh", "-c", write], "Read-only file system").await;
        }
        assert_eq!(ok(&w, &id, &["cat", "/etc/secret"]).await, "s3cret", "{h}");

        let c = ctr(&w, "explicit", |sc| {
            sc.masked_paths = vec!["/etc/secret".into()];
            sc.readonly_paths = vec!["/tmp".into()];
        });
        let id = w.run(&pod, c).await;
        assert_eq!(ok(&w, &id, &["cat", "/etc/secret"]).await, "", "{h}");
        let file = ok(&w, &id, &["stat", "-c", "%F", masked[0]]).await;
        assert!(
            file.starts_with("regular"),
            "{h}: the default masks are replaced: {} is a {file}",
            masked[0]
        );
        let ro = readonly_mounts(&w, &id).await;
        assert!(ro.contains("/tmp"), "{h}: {ro:?}");
        assert!(!ro.contains("/proc/sys"), "{h}: defaults replaced: {ro:?}");
        fails(&w, &id, &["touch", "/tmp/x"], "Read-only file system").await;
    }
}

/// readonly_rootfs: the rootfs (with /tmp: like containerd, crust mounts no tmpfs
/// there) and the pod's /etc/hosts are read-only; a CRI mount and /dev/shm are not.
#[tokio::test]
async fn readonly_rootfs_keeps_mounts_writable() {
    let w = world("test/rorootfs").await;
    for handler in HANDLERS {
        let h = label(handler);
        let host = w.sb.path().join(format!("data-{h}"));
        std::fs::create_dir_all(&host).unwrap();
        let pod = pod(&w, handler, "rorootfs").await;
        let mut c = ctr(&w, "ro", |sc| sc.readonly_rootfs = true);
        c.mounts = vec![Mount {
            container_path: "/data".into(),
            host_path: host.display().to_string(),
            ..Default::default()
        }];
        let id = w.run(&pod, c).await;
        for path in ["/x", "/tmp/x", "/etc/x"] {
            fails(&w, &id, &["touch", path], "Read-only file system").await;
        }
        fails(&w, &id, &["sh", "-c", "echo x >> /etc/hosts"], "Read-only").await;
        ok(&w, &id, &["touch", "/data/written", "/dev/shm/written"]).await;
        assert!(
            host.join("written").is_file(),
            "{h}: the CRI mount is the host's"
        );
    }
}

/// no_new_privs is exactly what was asked, also where a seccomp filter is loaded
/// without it (the launcher must load it while it still holds CAP_SYS_ADMIN, also for
/// a non-root user, as runc does); RuntimeDefault is a filter, Unconfined none.
#[tokio::test]
async fn no_new_privs_and_seccomp_modes() {
    let w = world("test/nnp").await;
    let (default, unconfined) = (
        Some(ProfileType::RuntimeDefault),
        Some(ProfileType::Unconfined),
    );
    // (no_new_privs, seccomp, run_as_user, NoNewPrivs, Seccomp)
    type Case = (bool, Option<ProfileType>, Option<i64>, u8, u8);
    let cases: [Case; 6] = [
        (false, None, None, 0, 0),
        (true, unconfined, None, 1, 0),
        (false, unconfined, None, 0, 0),
        (false, default, None, 0, 2),
        (true, default, None, 1, 2),
        (false, default, Some(1000), 0, 2),
    ];
    for handler in HANDLERS {
        let h = label(handler);
        let pod = pod(&w, handler, "nnp").await;
        for (i, (nnp, seccomp, user, want_nnp, want_seccomp)) in cases.into_iter().enumerate() {
            let c = ctr(&w, &format!("c{i}"), |sc| {
                sc.no_new_privs = nnp;
                sc.seccomp = seccomp.and_then(|t| profile(t, ""));
                sc.run_as_user = user.map(|value| Int64Value { value });
            });
            let id = w.run(&pod, c).await;
            let case = format!("{h}: no_new_privs {nnp}, seccomp {seccomp:?}, user {user:?}");
            let nnp_line = status(&w, &id, "NoNewPrivs").await;
            assert_eq!(nnp_line, want_nnp.to_string(), "{case}");
            let seccomp_line = status(&w, &id, "Seccomp").await;
            assert_eq!(seccomp_line, want_seccomp.to_string(), "{case}");
        }
    }
}

/// The default set is Docker's 14; add and drop (ALL first, as containerd) change the
/// bounding, permitted and effective sets alike; a non-root user keeps the bounding
/// set but, with no ambient capabilities, loses the rest at exec.
#[tokio::test]
async fn capabilities_add_and_drop() {
    let w = world("test/caps").await;
    const NET_ADMIN: u64 = 1 << 12;
    const RAW_MKNOD: u64 = 1 << 13 | 1 << 27;
    // (name, add, drop, CapEff and CapPrm, CapBnd)
    type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a str], u64, u64);
    #[rustfmt::skip]
    let cases: [Case; 5] = [
        ("default", &[], &[], DEFAULT_CAPS, DEFAULT_CAPS),
        ("only-bind", &["NET_BIND_SERVICE"], &["ALL"], 0x400, 0x400),
        ("add", &["NET_ADMIN"], &[], DEFAULT_CAPS | NET_ADMIN, DEFAULT_CAPS | NET_ADMIN),
        ("drop", &[], &["NET_RAW", "MKNOD"], DEFAULT_CAPS & !RAW_MKNOD, DEFAULT_CAPS & !RAW_MKNOD),
        ("non-root", &[], &[], 0, DEFAULT_CAPS),
    ];
    for handler in HANDLERS {
        let h = label(handler);
        let pod = pod(&w, handler, "caps").await;
        for (name, add, drop, eff, bnd) in cases {
            let c = ctr(&w, name, |sc| {
                sc.capabilities = Some(Capability {
                    add_capabilities: add.iter().map(|c| c.to_string()).collect(),
                    drop_capabilities: drop.iter().map(|c| c.to_string()).collect(),
                    add_ambient_capabilities: Vec::new(),
                });
                if name == "non-root" {
                    sc.run_as_user = Some(Int64Value { value: 1000 });
                }
            });
            let id = w.run(&pod, c).await;
            for (key, want) in [
                ("CapEff", eff),
                ("CapPrm", eff),
                ("CapBnd", bnd),
                ("CapInh", 0),
                ("CapAmb", 0),
            ] {
                let got = status(&w, &id, key).await;
                assert_eq!(got, format!("{want:016x}"), "{h} {name}: {key}");
            }
        }
    }
}

/// Syscalls busybox's `sh`, `mkdir` and `sleep` and the launchers' last steps before
/// exec need; anything else fails EPERM under the allow-list profile.
const ALLOWED: &str = "access arch_prctl brk capget capset chdir clock_gettime \
    clock_nanosleep clone clone3 close close_range dup dup2 dup3 epoll_create1 epoll_ctl \
    epoll_pwait epoll_wait execve execveat exit exit_group faccessat faccessat2 fchdir \
    fcntl fstat fstatfs futex getcwd getdents64 getegid geteuid getgid getgroups getpgrp \
    getpid getrandom getresgid getresuid getrlimit gettid gettimeofday getuid ioctl kill \
    lseek madvise mmap mprotect mremap munmap nanosleep newfstatat open openat pipe pipe2 \
    poll ppoll prctl pread64 prlimit64 read readlink readlinkat rseq rt_sigaction \
    rt_sigprocmask rt_sigreturn sched_getaffinity sched_yield set_robust_list \
    set_tid_address setgid setgroups setpgid setresgid setresuid setsid setuid sigaltstack \
    stat statx tgkill umask uname vfork wait4 waitid write writev";

/// Localhost profiles are loaded from the host's file: one allowing everything but
/// mkdir, and one failing everything unlisted (EPERM) with `getppid` listed as LOG,
/// an action weaker than that default which must still let it through. A missing
/// profile file is INVALID_ARGUMENT naming the field.
#[tokio::test]
async fn seccomp_localhost_profiles() {
    let w = world("test/seccomp").await;
    let deny_mkdir = w.sb.path().join("deny-mkdir.json");
    let profile_json = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    });
    std::fs::write(&deny_mkdir, profile_json.to_string()).unwrap();
    let allow_list = w.sb.path().join("allow-list.json");
    let profile_json = serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ALLOWED.split_whitespace().collect::<Vec<_>>(), "action": "SCMP_ACT_ALLOW"},
            {"names": ["getppid"], "action": "SCMP_ACT_LOG"},
        ],
    });
    std::fs::write(&allow_list, profile_json.to_string()).unwrap();
    let localhost = |path: &Path| profile(ProfileType::Localhost, &path.display().to_string());

    for handler in HANDLERS {
        let h = label(handler);
        let pod = pod(&w, handler, "seccomp").await;
        let c = ctr(&w, "deny-mkdir", |sc| sc.seccomp = localhost(&deny_mkdir));
        let id = w.run(&pod, c).await;
        assert_eq!(status(&w, &id, "Seccomp").await, "2", "{h}");
        // mkdir itself, not under `sh`, where busybox-static would run it in-process.
        fails(&w, &id, &["mkdir", "/tmp/x"], "Operation not permitted").await;
        ok(&w, &id, &["touch", "/tmp/y"]).await;

        let c = ctr(&w, "allow-list", |sc| {
            sc.seccomp = localhost(&allow_list);
            sc.no_new_privs = true;
        });
        let id = w.run(&pod, c).await;
        // `; true` keeps ash from exec'ing the inner sh in its own place.
        let script = "echo $$; sh -c 'echo $PPID'; true";
        let out = ok(&w, &id, &["sh", "-c", script]).await;
        let (parent, seen) = out.split_once('\n').expect("two lines");
        assert_eq!(seen, parent, "{h}: getppid (SCMP_ACT_LOG) answers");
        fails(&w, &id, &["mkdir", "/tmp/x"], "Operation not permitted").await;

        let missing = w.sb.path().join("missing.json");
        let c = ctr(&w, "missing", |sc| sc.seccomp = localhost(&missing));
        let named = ["seccomp.localhost_ref", "missing.json"];
        refused(&w, &pod, c, Code::InvalidArgument, &named).await;
    }
}

/// A Localhost AppArmor profile or SELinux options on a host without them are refused
/// naming the field, not ignored; RuntimeDefault AppArmor runs the container
/// unconfined (containerd ignores it where AppArmor is off; `guest_apparmor` tests
/// the `crust-default` profile where it is on).
#[tokio::test]
async fn apparmor_and_selinux_where_the_host_lacks_them() {
    let w = world("test/lsm").await;
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.starts_with('Y'));
    let selinux = Path::new("/sys/fs/selinux/enforce").exists();
    for handler in HANDLERS {
        let h = label(handler);
        let pod = pod(&w, handler, "lsm").await;
        if apparmor {
            eprintln!("{h}: AppArmor is enabled on this host; its refusal is not checked");
        } else {
            let c = ctr(&w, "aa-local", |sc| {
                sc.apparmor = profile(ProfileType::Localhost, "foo")
            });
            let named = ["apparmor.localhost_ref", "foo", "AppArmor is not enabled"];
            refused(&w, &pod, c, Code::InvalidArgument, &named).await;
        }
        if selinux {
            eprintln!("{h}: SELinux is enabled on this host; its refusal is not checked");
        } else {
            let c = ctr(&w, "selinux", |sc| {
                sc.selinux_options = Some(SeLinuxOption {
                    user: "system_u".into(),
                    role: "system_r".into(),
                    r#type: "container_t".into(),
                    level: "s0:c1,c2".into(),
                })
            });
            let named = ["selinux_options", "SELinux is not enabled"];
            refused(&w, &pod, c, Code::InvalidArgument, &named).await;
        }
        let c = ctr(&w, "aa-default", |sc| {
            sc.apparmor = profile(ProfileType::RuntimeDefault, "")
        });
        let id = w.run(&pod, c).await;
        assert_eq!(ok(&w, &id, &["id", "-u"]).await, "0", "{h}");
    }
}
