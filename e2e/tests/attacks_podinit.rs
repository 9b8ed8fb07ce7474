//! Issue 13, items 2, 3 and 5: what a container (or a local user) reaches through the
//! processes crust runs for a pod, attacked through the real crustd with both the
//! built-in launcher and runc: the pod init's root and credentials, descriptors crustd
//! inherited, and the monitor's control socket.
#![allow(unsafe_code)]

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use crust_e2e::{
    SpawnOptions,
    world::{PodOptions, World, busybox_image},
};
use crust_proto::runtime::v1::{
    Capability, ContainerConfig, LinuxContainerConfig, LinuxContainerSecurityContext,
    PodSandboxState, PodSandboxStatusRequest,
};

const RUNC: &str = "/usr/sbin/runc";
/// The built-in launcher (the default handler) and runc.
const HANDLERS: [&str; 2] = ["", "runc"];

fn label(handler: &str) -> &str {
    if handler.is_empty() {
        "built-in"
    } else {
        handler
    }
}

async fn world(repo: &str, options: &SpawnOptions) -> World {
    assert!(
        Path::new(RUNC).is_file(),
        "{RUNC} not found: install it with `apt-get install runc`"
    );
    let image = busybox_image(&["sh", "ls", "cat", "sleep", "readlink", "echo"], |_| {});
    World::start_with(
        &image,
        repo,
        &format!("[runtime.handlers.runc]\ntype = \"oci\"\npath = \"{RUNC}\"\n"),
        options,
    )
    .await
}

fn with_caps(mut c: ContainerConfig, add: &[&str]) -> ContainerConfig {
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                add_capabilities: add.iter().map(|c| c.to_string()).collect(),
                drop_capabilities: Vec::new(),
                add_ambient_capabilities: Vec::new(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

/// The main process's pid of running container `id`, from its verbose status.
async fn container_pid(w: &World, id: &str) -> i32 {
    w.verbose_info(id).await["pid"]
        .as_i64()
        .expect("a running container has a pid") as i32
}

/// `field:` of a `/proc/<pid>/status` text.
fn status_field<'a>(status: &'a str, field: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim_start_matches(':').trim())
}

/// Pod init runs as root in the HOST mount namespace (issue 13, item 2). With
/// `pid: POD`, the CRI default, PID 1 of the pod's namespace was a fork of the monitor:
/// full capabilities, dumpable, the host's root and mount namespace, and the monitor's
/// command line (`/usr/.../crust-monitor --spec /run/...`). A container given only
/// CAP_SYS_PTRACE read and wrote any host file through `/proc/1/root`. Now the init
/// lives in a mount namespace of its own whose root is an empty read-only tmpfs, holds
/// no capability in any set, has no fd open and shows only `crust-pod-init` as its
/// command line. It is non-dumpable too: with no capabilities left, any container's
/// would be a superset of its own, which is all ptrace "read" access (its environ and
/// root) asks of a dumpable process. And it still reaps the pod's orphans.
#[tokio::test]
async fn item2_pod_init_reveals_no_host_root_through_proc_1_root() {
    let w = world("test/podinit", &SpawnOptions::default()).await;
    let secret = w.sb.path().join("host-secret");
    let content = "host file the container must not see\n";
    fs::write(&secret, content).unwrap();
    let created = w.sb.path().join("created-by-container");
    for handler in HANDLERS {
        let h = label(handler);
        let pod = w
            .run_pod(&PodOptions::named(&format!("ptrace-{}", label(handler))).handler(handler))
            .await;
        let tracer = w
            .run(
                &pod,
                with_caps(w.config("tracer", &["sleep", "3600"]), &["SYS_PTRACE"]),
            )
            .await;
        let plain = w.run(&pod, w.config("plain", &["sleep", "3600"])).await;

        // The init's root and cwd hold nothing: the host's top-level entries are not
        // there.
        for dir in ["/proc/1/root/", "/proc/1/cwd/"] {
            let (code, listing, err) = w.exec(&tracer, &["ls", "-a", dir]).await;
            let names: BTreeSet<&str> = listing
                .split_whitespace()
                .filter(|n| !matches!(*n, "." | ".."))
                .collect();
            assert!(
                names.is_empty(),
                "{h}: {dir} lists {names:?} (ls exit {code}, {err})"
            );
        }
        // Reading the host file through it fails.
        let inside = format!("/proc/1/root{}", secret.display());
        let (code, out, _) = w.exec(&tracer, &["cat", &inside]).await;
        assert!(
            code != 0 && !out.contains("must not see"),
            "{h}: cat {inside} exited {code} with {out:?}"
        );
        // Writing through it, over the file and beside it, fails.
        for target in [&secret, &created] {
            let inside = format!("/proc/1/root{}", target.display());
            let (code, _, err) = w
                .exec(&tracer, &["sh", "-c", &format!("echo owned > {inside}")])
                .await;
            assert_ne!(code, 0, "{h}: writing {inside} succeeded ({err})");
        }
        assert_eq!(fs::read_to_string(&secret).unwrap(), content, "{h}");
        assert!(!created.exists(), "{h}: a file appeared on the host");

        // No host path in its command line, no capability in any set.
        let (code, cmdline, err) = w.exec(&tracer, &["cat", "/proc/1/cmdline"]).await;
        assert_eq!(code, 0, "{h}: cat /proc/1/cmdline: {err}");
        assert!(
            !cmdline.contains('/') && cmdline.contains("crust-pod-init"),
            "{h}: /proc/1/cmdline is {cmdline:?}"
        );
        let (code, status, err) = w.exec(&tracer, &["cat", "/proc/1/status"]).await;
        assert_eq!(code, 0, "{h}: cat /proc/1/status: {err}");
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(
                status_field(&status, set),
                Some("0000000000000000"),
                "{h}: {set} of the pod init"
            );
        }
        assert_eq!(status_field(&status, "NoNewPrivs"), Some("1"), "{h}");
        // Non-dumpable: a container without CAP_SYS_PTRACE, whose capabilities are a
        // superset of the init's (none), still cannot read its environment or root.
        for cmd in [["cat", "/proc/1/environ"], ["ls", "/proc/1/root/"]] {
            let (code, out, _) = w.exec(&plain, &cmd).await;
            assert_ne!(code, 0, "{h}: {cmd:?} without SYS_PTRACE: {out:?}");
        }
        // The init holds no descriptor at all (nothing to reopen through /proc/1/fd).
        let (code, fds, err) = w.exec(&tracer, &["ls", "/proc/1/fd"]).await;
        assert_eq!(code, 0, "{h}: ls /proc/1/fd: {err}");
        assert_eq!(fds.trim(), "", "{h}: the pod init's fds");
        // Seen from the host: the same command line, no environment, a mount
        // namespace of its own holding one read-only tmpfs.
        let init = monitor_pids(&w, &pod).init.expect("pid: POD has an init");
        let proc = format!("/proc/{}", init.pid);
        assert_eq!(
            fs::read(format!("{proc}/cmdline")).unwrap(),
            b"crust-pod-init\0"
        );
        let environ = fs::read(format!("{proc}/environ")).unwrap();
        assert!(environ.is_empty(), "{h}: environ {environ:?}");
        // Its own executable, exec'd from a sealed memfd: none of the monitor's
        // pages, and no host file behind /proc/1/exe to rewrite (CVE-2019-5736).
        let exe = fs::read_link(format!("{proc}/exe")).unwrap();
        assert_eq!(
            exe.to_string_lossy(),
            "/memfd:crust-pod-init (deleted)",
            "{h}: the pod init's executable"
        );
        assert_eq!(
            fs::read_to_string(format!("{proc}/comm")).unwrap(),
            "crust-pod-init\n",
            "{h}"
        );
        let (code, _, err) = w
            .exec(&tracer, &["sh", "-c", "echo owned >> /proc/1/exe"])
            .await;
        assert_ne!(code, 0, "{h}: appending to /proc/1/exe succeeded ({err})");
        let mountinfo = fs::read_to_string(format!("{proc}/mountinfo")).unwrap();
        let mounts: Vec<&str> = mountinfo.lines().collect();
        assert!(
            mounts.len() == 1 && mounts[0].contains(" / / ro,") && mounts[0].contains("tmpfs"),
            "{h}: the init's mounts: {mounts:#?}"
        );
        let ns = |p: &str| fs::read_link(p).unwrap();
        assert_ne!(
            ns(&format!("{proc}/ns/mnt")),
            ns("/proc/self/ns/mnt"),
            "{h}"
        );
        // Still the pod's reaper: an orphan of a container is adopted by it, and
        // reaped (not left a zombie) once killed.
        let orphaner = w.config("orphaner", &["sh", "-c", "(sleep 3600 &); exec sleep 3600"]);
        w.run(&pod, orphaner).await;
        let orphan = poll(&format!("{h}: an orphan adopted by the pod init"), || {
            children(init.pid).first().copied()
        })
        .await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(orphan),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        poll(&format!("{h}: the pod init reaps orphan {orphan}"), || {
            (!children(init.pid).contains(&orphan)).then_some(())
        })
        .await;
        // Printed, not asserted: what the init costs.
        let status = fs::read_to_string(format!("{proc}/status")).unwrap();
        eprintln!(
            "{h}: pod init VmRSS {}",
            status_field(&status, "VmRSS").unwrap_or("?")
        );
    }
}

/// The children of host process `pid` (zombies included: they are children until
/// reaped).
fn children(pid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Polls `f` every 10 ms until it yields a value; panics naming `what` after 30 s
/// (a bound for a hung run, not a measurement).
async fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..3000 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The monitor and init pids crust recorded for `pod`.
fn monitor_pids(w: &World, pod: &str) -> crust_runtime::monitor::MonitorPids {
    let path = w.sb.state().join("pods").join(pod).join("monitor.json");
    serde_json::from_slice(&fs::read(&path).unwrap()).unwrap()
}

/// The fds `/proc/<pid>/fd` of a host process lists, with their targets.
fn host_fds(pid: i32) -> Vec<(String, String)> {
    let dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let mut fds: Vec<(String, String)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .map(|e| {
            let target = fs::read_link(e.path()).unwrap_or_default();
            (
                e.file_name().to_string_lossy().into_owned(),
                target.display().to_string(),
            )
        })
        .collect();
    fds.sort();
    fds
}

/// `ls -l /proc/self/fd` output as (fd, target) pairs.
fn listed_fds(listing: &str) -> Vec<(String, String)> {
    listing
        .lines()
        .filter_map(|l| l.split_once(" -> "))
        .map(|(left, target)| {
            let fd = left.split_whitespace().last().unwrap_or_default();
            (fd.to_string(), target.trim().to_string())
        })
        .collect()
}

/// Inherited fds reach containers (issue 13, item 3; CVE-2024-21626 class). crustd
/// started with fd 7 open on /etc without close-on-exec (`exec 7</etc` in the shell
/// that starts it) passed it to every monitor, and from there to every built-in
/// container and every ExecSync (also in runc pods, whose execs crust runs itself):
/// `fchdir(7)` or `/proc/self/fd/7/..` then walks the host's filesystem. (The test's
/// own fds inherited from cargo leaked the same way.) Now crustd marks every inherited
/// fd close-on-exec as it starts, the monitor closes what it inherited, and the
/// launcher and the exec helper mark everything above 2 right before they exec.
#[tokio::test]
async fn item3_fd_inherited_by_crustd_reaches_no_container() {
    let leaked = 7;
    let options = SpawnOptions {
        inherited_fd: Some((leaked, PathBuf::from("/etc"))),
        ..Default::default()
    };
    let w = world("test/fds", &options).await;
    let is_leak = |(_, target): &(String, String)| target == "/etc";
    // Every place is checked before failing, so a failure names all of them.
    let mut leaks = Vec::new();
    for handler in HANDLERS {
        let h = label(handler);
        let pod = w
            .run_pod(&PodOptions::named(&format!("fds-{}", label(handler))).handler(handler))
            .await;
        let id = w.run(&pod, w.config("app", &["sleep", "3600"])).await;
        // The container's main process, seen from the host: stdio only.
        let fds = host_fds(container_pid(&w, &id).await);
        let numbers: Vec<&str> = fds.iter().map(|(n, _)| n.as_str()).collect();
        if numbers != ["0", "1", "2"] {
            leaks.push(format!("{h} container: {fds:?}"));
        }
        // An ExecSync: stdio plus the directory `ls` itself opened.
        let (code, listing, err) = w.exec(&id, &["ls", "-l", "/proc/self/fd"]).await;
        assert_eq!(code, 0, "{h}: ls: {err}");
        let fds = listed_fds(&listing);
        assert!(fds.len() >= 3, "{h}: ls said {listing:?}");
        let extra = fds
            .iter()
            .any(|(n, t)| !matches!(n.as_str(), "0" | "1" | "2") && !t.starts_with("/proc/"));
        if extra || fds.iter().any(is_leak) {
            leaks.push(format!("{h} ExecSync: {fds:?}"));
        }
    }
    // The monitors and pod inits hold nothing crustd inherited.
    let helpers = w.sb.live_monitor_pids();
    assert_eq!(helpers.len(), 4, "two monitors and two pod inits");
    for pid in helpers {
        let fds = host_fds(pid);
        if fds.iter().any(is_leak) {
            leaks.push(format!("monitor or pod init {pid}: {fds:?}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "fd {leaked} leaked:\n{}",
        leaks.join("\n")
    );
    // The setup was real: crustd holds fd 7 on /etc, marked close-on-exec so that no
    // child of crustd (monitor, exec helper, runc, CNI plugin) gets it.
    let crustd = w.d.pid().as_raw();
    let fdinfo = fs::read_to_string(format!("/proc/{crustd}/fdinfo/{leaked}"))
        .expect("crustd holds the inherited fd");
    let flags = u32::from_str_radix(status_field(&fdinfo, "flags").unwrap(), 8).unwrap();
    assert_ne!(
        flags & libc::O_CLOEXEC as u32,
        0,
        "crustd's inherited fd {leaked} is not close-on-exec: {fdinfo}"
    );
}

/// What a process connecting to the monitor socket as uid/gid 65534 got.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// connect(2) failed with this errno.
    ConnectFailed(i32),
    /// The monitor answered the request.
    Answered,
    /// The connection was closed without an answer.
    Closed,
}

/// Forks a child that becomes uid/gid 65534 (no groups), connects to `socket`, sends
/// `request` and reads the reply. Only raw syscalls run in the child (this test
/// process has threads); it reports through its exit code.
fn attempt_as_nobody(socket: &Path, request: &[u8]) -> Attempt {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain old data; all-zero is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let path = socket.as_os_str().as_bytes();
    assert!(path.len() < addr.sun_path.len());
    for (dst, src) in addr.sun_path.iter_mut().zip(path) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the child runs only async-signal-safe syscalls on memory prepared above
    // and leaves with _exit; the parent only waits for it.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork: {}", std::io::Error::last_os_error());
    if child == 0 {
        // SAFETY: raw syscalls on valid arguments, in the forked child (see above).
        unsafe {
            let code = (|| {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(65534) != 0
                    || libc::setuid(65534) != 0
                {
                    return 200;
                }
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                if fd < 0 {
                    return 201;
                }
                let timeout = libc::timeval {
                    tv_sec: 10,
                    tv_usec: 0,
                };
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&timeout as *const libc::timeval).cast(),
                    size_of::<libc::timeval>() as libc::socklen_t,
                );
                if libc::connect(
                    fd,
                    (&addr as *const libc::sockaddr_un).cast(),
                    size_of::<libc::sockaddr_un>() as libc::socklen_t,
                ) != 0
                {
                    // errno values are small; 1..=199 leave room for the others.
                    return (*libc::__errno_location()).clamp(1, 199);
                }
                let sent = libc::send(
                    fd,
                    request.as_ptr().cast(),
                    request.len(),
                    libc::MSG_NOSIGNAL,
                );
                if sent < 0 {
                    return 211;
                }
                let mut buf = [0u8; 64];
                match libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) {
                    n if n > 0 => 210,
                    0 => 211,
                    _ if *libc::__errno_location() == libc::ECONNRESET => 211,
                    _ => 212,
                }
            })();
            libc::_exit(code);
        }
    }
    let status =
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None).expect("wait the child");
    match status {
        nix::sys::wait::WaitStatus::Exited(_, 210) => Attempt::Answered,
        nix::sys::wait::WaitStatus::Exited(_, 211) => Attempt::Closed,
        nix::sys::wait::WaitStatus::Exited(_, errno) if errno < 200 => {
            Attempt::ConnectFailed(errno)
        }
        other => panic!("the uid 65534 client failed: {other:?}"),
    }
}

/// The per-pod monitor socket took its mode from crustd's umask and had no peer
/// check (issue 13, item 5). Under umask 000 the socket (and its directory) were
/// world-writable, and any local user could connect and send `shutdown` (killing the
/// pod), `signal`, or `create_container` from a spec path of their choosing. Now the
/// directory is 0700 and the socket 0600 whatever the umask, and the monitor serves
/// only uid 0 (or its own uid): a connection from anyone else is closed unread, which
/// holds even after the test loosens the modes to 0777. The monitor's other files and
/// the containers no longer take crustd's umask either.
#[tokio::test]
async fn item5_monitor_socket_refuses_other_users_under_umask_000() {
    let options = SpawnOptions {
        umask: Some(0),
        ..Default::default()
    };
    let w = world("test/monsock", &options).await;
    let pod = w.run_pod(&PodOptions::named("monsock")).await;
    let app = w.run(&pod, w.config("app", &["sleep", "3600"])).await;
    let dir = w.sb.state().join("sock");
    let socket = dir.join(format!("{}.sock", &pod[..20]));
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    assert_eq!(mode(&socket), 0o600, "{}", socket.display());

    let shutdown = b"{\"op\":\"shutdown\"}\n";
    // Layer one: the file modes keep other users from connecting at all.
    assert_eq!(
        attempt_as_nobody(&socket, shutdown),
        Attempt::ConnectFailed(libc::EACCES),
        "uid 65534 connecting to {}",
        socket.display()
    );
    // Layer two: with the modes loosened, the peer check still refuses.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(
        attempt_as_nobody(&socket, shutdown),
        Attempt::Closed,
        "uid 65534 sending shutdown through a 0777 socket"
    );
    // crustd's umask reaches neither the monitor's files nor the container (runc's
    // default 0022 applies, in the main process and in an exec).
    let pins = w.sb.state().join("ns").join(&pod);
    assert_eq!(mode(&pins) & 0o022, 0, "{}", pins.display());
    let status =
        fs::read_to_string(format!("/proc/{}/status", container_pid(&w, &app).await)).unwrap();
    assert_eq!(status_field(&status, "Umask"), Some("0022"), "container");
    let (_, out, err) = w.exec(&app, &["sh", "-c", "umask"]).await;
    assert_eq!(out.trim(), "0022", "exec: {err}");
    // The pod is untouched: its container runs, and the monitor still serves root.
    let (code, out, err) = w.exec(&app, &["echo", "alive"]).await;
    assert_eq!((code, out.trim()), (0, "alive"), "{err}");
    let status =
        w.d.runtime()
            .await
            .unwrap()
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
    assert_eq!(status.state, i32::from(PodSandboxState::SandboxReady));
    let reply = crust_runtime::monitor::request(
        &socket,
        &crust_runtime::monitor::Request::Ping,
        std::time::Duration::from_secs(10),
    )
    .await
    .expect("root is served");
    assert!(reply.ok && reply.init_alive == Some(true), "{reply:?}");
}
