//! The built-in launcher end to end (run as root): a spec generated from a CRI-like
//! container config, created and started by a real `crust-monitor` in a real pod, on a
//! busybox rootfs. Checks are made from outside (`/proc/<pid>`) and from the
//! container's own output in its CRI log.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Duration,
};

use crust_runtime::{
    container::{
        self, CapabilitiesSpec, ContainerSpec, HostContext, HostDevices, ImageConfigView,
        PodContext, SecurityContextSpec, SpecInput,
    },
    monitor::{self, ExitRecord, MonitorPids, MonitorSpec, Request},
    sandbox::NsMode,
};

struct Pod {
    dir: tempfile::TempDir,
    pids: MonitorPids,
    spec: MonitorSpec,
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.pids.monitor.kill();
        if let Some(init) = self.pids.init {
            init.kill();
        }
        for ns in ["net", "ipc", "uts", "pid"] {
            let _ = nix::mount::umount2(
                &self.dir.path().join("ns").join(ns),
                nix::mount::MntFlags::MNT_DETACH,
            );
        }
    }
}

async fn pod() -> Pod {
    let dir = tempfile::Builder::new()
        .prefix("crust-launch-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let d = dir.path();
    let spec = MonitorSpec {
        pod_id: "launch".into(),
        socket: d.join("m.sock"),
        pid_file: d.join("monitor.json"),
        pins_dir: d.join("ns"),
        new_net: true,
        join_net: None,
        new_ipc: true,
        new_uts: true,
        new_pid: false,
        hostname: "launch-pod".into(),
        sysctls: vec![],
        monitor_cgroup_dirs: vec![],
        pod_cgroup_dirs: vec![],
        userns: None,
    };
    fs::write(d.join("spec.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    let pids = monitor::spawn(
        Path::new(env!("CARGO_BIN_EXE_crust-monitor")),
        &d.join("spec.json"),
        &d.join("monitor.log"),
    )
    .await
    .unwrap();
    Pod { dir, pids, spec }
}

/// A busybox rootfs with hard-linked applets, as upstream busybox images are built.
fn rootfs(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("rootfs");
    for sub in ["bin", "etc", "dev", "proc", "sys", "tmp"] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static installed");
    for applet in [
        "sh", "cat", "id", "sleep", "echo", "ls", "hostname", "grep", "readlink", "mount", "touch",
    ] {
        fs::hard_link(root.join("bin/busybox"), root.join("bin").join(applet)).unwrap();
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
    )
    .unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    root
}

fn spec_input(
    pod: &Pod,
    root: &Path,
    command: &[&str],
    mut security: SecurityContextSpec,
) -> SpecInput {
    // The test pod has no shared PID namespace.
    security.pid_mode = NsMode::Container;
    let pins = pod.dir.path().join("ns");
    let files = pod.dir.path().join("files");
    fs::create_dir_all(&files).unwrap();
    for (name, text) in [
        ("hosts", "127.0.0.1 localhost\n"),
        ("hostname", "launch-pod\n"),
        ("resolv.conf", "nameserver 10.0.0.10\n"),
    ] {
        fs::write(files.join(name), text).unwrap();
    }
    SpecInput {
        container: ContainerSpec {
            command: command.iter().map(|s| s.to_string()).collect(),
            envs: vec![("GREETING".into(), "hi".into())],
            security,
            ..Default::default()
        },
        image: ImageConfigView {
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        },
        pod: PodContext {
            sandbox_id: "launch".into(),
            net_ns: Some(pins.join("net")),
            ipc_ns: Some(pins.join("ipc")),
            uts_ns: Some(pins.join("uts")),
            pid_ns: None,
            hostname: "launch-pod".into(),
            hosts_file: Some(files.join("hosts")),
            hostname_file: Some(files.join("hostname")),
            resolv_conf: Some(files.join("resolv.conf")),
            shm_dir: None,
            cgroup_path: "/crust-launch-test".into(),
            ..Default::default()
        },
        host: HostContext::default(),
        rootfs: root.to_path_buf(),
        etc_passwd: Some(fs::read_to_string(root.join("etc/passwd")).unwrap()),
        etc_group: Some(fs::read_to_string(root.join("etc/group")).unwrap()),
        volumes_root: pod.dir.path().join("volumes"),
        ..Default::default()
    }
}

async fn wait_exit(path: &Path) -> ExitRecord {
    for _ in 0..1000 {
        if let Ok(bytes) = fs::read(path) {
            return serde_json::from_slice(&bytes).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no exit recorded at {}", path.display());
}

async fn create_and_start(
    pod: &Pod,
    id: &str,
    input: &SpecInput,
) -> (
    crust_runtime::proc::ProcRef,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let spec = container::generate_spec(input, &HostDevices::default()).expect("spec");
    create_and_start_spec(pod, id, &spec, vec![]).await
}

/// Creates and starts a container from a spec, placed in `cgroup_dirs`.
async fn create_and_start_spec(
    pod: &Pod,
    id: &str,
    spec: &oci_spec::runtime::Spec,
    cgroup_dirs: Vec<PathBuf>,
) -> (crust_runtime::proc::ProcRef, PathBuf, PathBuf) {
    try_create_and_start_spec(pod, id, spec, cgroup_dirs)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// [`create_and_start_spec`], saying why the monitor refused.
async fn try_create_and_start_spec(
    pod: &Pod,
    id: &str,
    spec: &oci_spec::runtime::Spec,
    cgroup_dirs: Vec<PathBuf>,
) -> Result<(crust_runtime::proc::ProcRef, PathBuf, PathBuf), String> {
    let d = pod.dir.path();
    let spec_path = d.join(format!("{id}.json"));
    fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let (log, exit) = (d.join(format!("{id}.log")), d.join(format!("{id}.exit")));
    let req = Request::CreateContainer {
        id: id.into(),
        spec: spec_path,
        log_path: log.clone(),
        exit_file: exit.clone(),
        cgroup_dirs,
        overlay: None,
        stdin: false,
        stdin_once: false,
        tty: false,
        oci: None,
        max_log_line: crust_runtime::monitor::DEFAULT_MAX_LOG_LINE,
        restore: None,
    };
    let reply = monitor::request(&pod.spec.socket, &req, Duration::from_secs(10))
        .await
        .unwrap();
    if !reply.ok {
        return Err(format!("create: {:?}", reply.error));
    }
    let pid = reply.pid.expect("pid");
    let reply = monitor::request(
        &pod.spec.socket,
        &Request::StartContainer { id: id.into() },
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    if !reply.ok {
        return Err(format!("start: {:?}", reply.error));
    }
    Ok((pid, log, exit))
}

fn log_lines(path: &Path) -> Vec<(String, String)> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut p = l.splitn(4, ' ');
            let (_, stream, tag, text) = (
                p.next(),
                p.next().unwrap(),
                p.next().unwrap(),
                p.next().unwrap_or(""),
            );
            assert_eq!(tag, "F", "{l}");
            (stream.to_string(), text.to_string())
        })
        .collect()
}

#[tokio::test]
async fn runs_a_container_with_its_identity_capabilities_and_logs() {
    let pod = pod().await;
    let root = rootfs(pod.dir.path());
    let script = "echo hello $GREETING; echo oops >&2; id -u; id -g; echo pid=$$; hostname; \
                  grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; ls /; cat /etc/resolv.conf; exit 3";
    let security = SecurityContextSpec {
        run_as_user: Some(65534),
        no_new_privs: true,
        capabilities: Some(CapabilitiesSpec {
            drop: vec!["ALL".into()],
            add: vec!["NET_BIND_SERVICE".into()],
            ..Default::default()
        }),
        pid_mode: NsMode::Container,
        ..Default::default()
    };
    let input = spec_input(&pod, &root, &["/bin/sh", "-c", script], security);
    let (_, log, exit) = create_and_start(&pod, "c1", &input).await;
    let record = wait_exit(&exit).await;
    assert_eq!(record.exit_code, 3);
    assert_eq!(record.signal, None);
    let lines = log_lines(&log);
    let stdout: Vec<&str> = lines
        .iter()
        .filter(|(s, _)| s == "stdout")
        .map(|(_, t)| t.as_str())
        .collect();
    let stderr: Vec<&str> = lines
        .iter()
        .filter(|(s, _)| s == "stderr")
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(stdout[0], "hello hi");
    assert_eq!(stderr, vec!["oops"]);
    assert_eq!(stdout[1], "65534", "uid");
    assert_eq!(stdout[2], "65534", "gid from /etc/passwd");
    assert_eq!(stdout[3], "pid=1", "PID 1 of its own PID namespace");
    assert_eq!(stdout[4], "launch-pod", "the pod's UTS namespace");
    // Only CAP_NET_BIND_SERVICE (bit 10) is left in the bounding set; as a non-root
    // user without ambient capabilities, exec leaves it no effective ones (Linux
    // capability rules; the same under runc and Docker).
    assert!(stdout.contains(&"CapBnd:\t0000000000000400"), "{stdout:?}");
    assert!(stdout.contains(&"CapEff:\t0000000000000000"), "{stdout:?}");
    assert!(stdout.contains(&"NoNewPrivs:\t1"), "{stdout:?}");
    assert!(
        !stdout.contains(&"work") && stdout.contains(&"bin"),
        "sees only its rootfs: {stdout:?}"
    );
    assert!(
        stdout.contains(&"nameserver 10.0.0.10"),
        "the pod's resolv.conf: {stdout:?}"
    );
}

#[tokio::test]
async fn joins_the_pod_namespaces_and_stops_on_a_signal() {
    let pod = pod().await;
    let root = rootfs(pod.dir.path());
    let input = spec_input(
        &pod,
        &root,
        &["/bin/sleep", "1000"],
        SecurityContextSpec::default(),
    );
    let (pid, _, exit) = create_and_start(&pod, "sleeper", &input).await;
    assert!(pid.is_alive());
    let ino = |p: String| fs::metadata(p).unwrap().ino();
    for ns in ["net", "ipc", "uts"] {
        assert_eq!(
            ino(format!("/proc/{}/ns/{ns}", pid.pid)),
            ino(pod.dir.path().join("ns").join(ns).display().to_string()),
            "{ns}"
        );
    }
    for ns in ["mnt", "pid"] {
        assert_ne!(
            ino(format!("/proc/{}/ns/{ns}", pid.pid)),
            ino(format!("/proc/self/ns/{ns}")),
            "{ns} is its own"
        );
    }
    let reply = monitor::request(
        &pod.spec.socket,
        &Request::Signal {
            id: "sleeper".into(),
            signal: 15,
        },
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(reply.ok);
    // sleep is PID 1 of its namespace and has no SIGTERM handler: SIGTERM is ignored
    // there, as in any container; SIGKILL ends it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(pid.is_alive(), "PID 1 without a handler ignores SIGTERM");
    monitor::request(
        &pod.spec.socket,
        &Request::Signal {
            id: "sleeper".into(),
            signal: 9,
        },
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let record = wait_exit(&exit).await;
    assert_eq!((record.exit_code, record.signal), (137, Some(9)));
}

#[tokio::test]
async fn exec_failure_is_reported_by_start() {
    let pod = pod().await;
    let root = rootfs(pod.dir.path());
    let input = spec_input(
        &pod,
        &root,
        &["/bin/no-such-binary"],
        SecurityContextSpec::default(),
    );
    let spec = container::generate_spec(&input, &HostDevices::default()).unwrap();
    let spec_path = pod.dir.path().join("bad.json");
    fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let req = Request::CreateContainer {
        id: "bad".into(),
        spec: spec_path,
        log_path: pod.dir.path().join("bad.log"),
        exit_file: pod.dir.path().join("bad.exit"),
        cgroup_dirs: vec![],
        overlay: None,
        stdin: false,
        stdin_once: false,
        tty: false,
        oci: None,
        max_log_line: crust_runtime::monitor::DEFAULT_MAX_LOG_LINE,
        restore: None,
    };
    assert!(
        monitor::request(&pod.spec.socket, &req, Duration::from_secs(10))
            .await
            .unwrap()
            .ok
    );
    let reply = monitor::request(
        &pod.spec.socket,
        &Request::StartContainer { id: "bad".into() },
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(!reply.ok);
    assert!(reply.error.unwrap().contains("no-such-binary"));
}

#[tokio::test]
async fn root_keeps_exactly_the_requested_capabilities() {
    let pod = pod().await;
    let root = rootfs(pod.dir.path());
    let security = SecurityContextSpec {
        capabilities: Some(CapabilitiesSpec {
            drop: vec!["ALL".into()],
            add: vec!["NET_BIND_SERVICE".into(), "CHOWN".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let input = spec_input(
        &pod,
        &root,
        &[
            "/bin/grep",
            "-E",
            "^(CapEff|CapPrm|CapBnd|NoNewPrivs)",
            "/proc/self/status",
        ],
        security,
    );
    let (_, log, exit) = create_and_start(&pod, "caps", &input).await;
    assert_eq!(wait_exit(&exit).await.exit_code, 0);
    let out: Vec<String> = log_lines(&log).into_iter().map(|(_, t)| t).collect();
    for want in [
        "CapEff:\t0000000000000401",
        "CapPrm:\t0000000000000401",
        "CapBnd:\t0000000000000401",
        "NoNewPrivs:\t0",
    ] {
        assert!(out.iter().any(|l| l == want), "{want} not in {out:?}");
    }
}

/// Stdout lines of a finished container.
fn stdout(log: &Path) -> Vec<String> {
    log_lines(log)
        .into_iter()
        .filter(|(s, _)| s == "stdout")
        .map(|(_, t)| t)
        .collect()
}

/// A cgroup directory the test made; removed (after its processes are gone) on drop.
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            if fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A spec that asks for a cgroup namespace of its own (what spec generation does on
/// cgroup v2; this host is v1/hybrid, so the spec is edited by hand): the container's
/// cgroups become its namespace's root. It enters the namespace only after the
/// monitor placed it in its cgroup: from a namespace made before the move, its own
/// cgroup would read as a path below the root, not as `/`.
#[tokio::test]
async fn own_cgroup_namespace_is_entered_after_placement() {
    let pod = pod().await;
    let root = rootfs(pod.dir.path());
    let name = pod
        .dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let cgroup = TestCgroup(Path::new("/sys/fs/cgroup/pids").join(name));
    fs::create_dir(&cgroup.0).unwrap();
    let input = spec_input(
        &pod,
        &root,
        &[
            "/bin/sh",
            "-c",
            "readlink /proc/self/ns/cgroup; grep :pids: /proc/self/cgroup; exec sleep 60",
        ],
        SecurityContextSpec::default(),
    );
    let mut spec = container::generate_spec(&input, &HostDevices::default()).unwrap();
    let mut linux = spec.linux().clone().unwrap();
    let mut namespaces = linux.namespaces().clone().unwrap();
    let mut cgroupns = oci_spec::runtime::LinuxNamespace::default();
    cgroupns.set_typ(oci_spec::runtime::LinuxNamespaceType::Cgroup);
    namespaces.push(cgroupns);
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
    let (pid, log, exit) = create_and_start_spec(&pod, "cgns", &spec, vec![cgroup.0.clone()]).await;
    for _ in 0..500 {
        if stdout(&log).len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // An exec joins the container's cgroup namespace too (as runc exec does).
    let exec = std::process::Command::new(env!("CARGO_BIN_EXE_crust-monitor"))
        .args(["exec", "--spec"])
        .arg(pod.dir.path().join("cgns.json"))
        .args([
            "--pid",
            &pid.pid.to_string(),
            "--",
            "/bin/readlink",
            "/proc/self/ns/cgroup",
        ])
        .output()
        .unwrap();
    pid.kill();
    assert_eq!(
        wait_exit(&exit).await.exit_code,
        137,
        "{:?}",
        log_lines(&log)
    );
    let out = stdout(&log);
    assert_eq!(
        String::from_utf8_lossy(&exec.stdout).trim(),
        out[0],
        "the exec is in the container's cgroup namespace: {}",
        String::from_utf8_lossy(&exec.stderr)
    );
    let host_ns = fs::read_link("/proc/self/ns/cgroup").unwrap();
    assert!(out[0].starts_with("cgroup:["), "{out:?}");
    assert_ne!(Path::new(&out[0]), host_ns, "a cgroup namespace of its own");
    assert!(
        out[1].ends_with(":pids:/"),
        "its pids cgroup ({}) is its namespace's root: {out:?}",
        cgroup.0.display()
    );
}

/// Mounts the test made on the host, detached (deepest first) on drop.
struct HostMounts(Vec<PathBuf>);

impl Drop for HostMounts {
    fn drop(&mut self) {
        for target in self.0.iter().rev() {
            let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn host_mount_points_under(dir: &Path) -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// A CRI Bidirectional mount (`rshared`, rootfsPropagation `rshared`): a mount the
/// container makes under it reaches the host, and nothing else the launcher mounts
/// does. The source and the rootfs share one shared host mount (the hard case: it is
/// also the mount that holds the rootfs), made shared by the test as kubelet's hosts
/// are; the host's `/` is left alone.
#[tokio::test]
async fn bidirectional_mounts_reach_the_host() {
    use nix::mount::{MsFlags, mount};
    let pod = pod().await;
    let shared = pod.dir.path().join("shared");
    fs::create_dir_all(shared.join("vol/sub")).unwrap();
    let mut host = HostMounts(vec![]);
    mount(
        Some(&shared),
        &shared,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    host.0.push(shared.clone());
    mount(
        None::<&str>,
        &shared,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .unwrap();
    // The container's mount, as the host will see it: detached at the end too.
    host.0.push(shared.join("vol/sub"));
    let root = rootfs(&shared);
    let mut input = spec_input(
        &pod,
        &root,
        &[
            "/bin/sh",
            "-c",
            "mount -t tmpfs tmpfs /mnt/bidi/sub && touch /mnt/bidi/sub/from-container && \
             sleep 1000",
        ],
        SecurityContextSpec {
            capabilities: Some(CapabilitiesSpec {
                add: vec!["SYS_ADMIN".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    input.container.mounts = vec![container::MountSpec {
        container_path: "/mnt/bidi".into(),
        host_path: shared.join("vol").display().to_string(),
        readonly: false,
        propagation: container::Propagation::Bidirectional,
        recursive_read_only: false,
        image: None,
        idmap: None,
    }];
    let (pid, log, exit) = create_and_start(&pod, "bidi", &input).await;
    let marker = shared.join("vol/sub/from-container");
    for _ in 0..500 {
        if marker.exists() || !pid.is_alive() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = host_mount_points_under(&shared);
    let _ = monitor::request(
        &pod.spec.socket,
        &Request::Signal {
            id: "bidi".into(),
            signal: 9,
        },
        Duration::from_secs(5),
    )
    .await;
    let record = wait_exit(&exit).await;
    assert!(
        marker.exists(),
        "the container's tmpfs is not on the host (exit {record:?}): {:?}",
        log_lines(&log)
    );
    assert_eq!(
        seen,
        vec![shared.clone(), shared.join("vol/sub")],
        "the host sees the container's mount and none of the launcher's"
    );
}

/// A Bidirectional mount from a source that is not on a shared host mount could never
/// propagate: CreateContainer fails and says why (containerd's `ensureShared`).
#[tokio::test]
async fn bidirectional_mount_needs_a_shared_source() {
    let pod = pod().await;
    let root = rootfs(pod.dir.path());
    // The test's directory is on a private host mount (this host's `/` is private).
    let vol = pod.dir.path().join("vol");
    fs::create_dir_all(&vol).unwrap();
    let mut input = spec_input(&pod, &root, &["/bin/true"], SecurityContextSpec::default());
    input.container.mounts = vec![container::MountSpec {
        container_path: "/mnt/bidi".into(),
        host_path: vol.display().to_string(),
        readonly: false,
        propagation: container::Propagation::Bidirectional,
        recursive_read_only: false,
        image: None,
        idmap: None,
    }];
    let spec = container::generate_spec(&input, &HostDevices::default()).unwrap();
    let spec_path = pod.dir.path().join("private.json");
    fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let req = Request::CreateContainer {
        id: "private".into(),
        spec: spec_path,
        log_path: pod.dir.path().join("private.log"),
        exit_file: pod.dir.path().join("private.exit"),
        cgroup_dirs: vec![],
        overlay: None,
        stdin: false,
        stdin_once: false,
        tty: false,
        oci: None,
        max_log_line: crust_runtime::monitor::DEFAULT_MAX_LOG_LINE,
        restore: None,
    };
    let reply = monitor::request(&pod.spec.socket, &req, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(!reply.ok, "created with a private bidirectional source");
    let error = reply.error.unwrap_or_default();
    assert!(error.contains("not shared"), "{error}");
}

/// The mounts of the item 6 tests: `shared` (a volume another container also has) at
/// /vol, and `source` (holding `marker`) at `/vol/<through>/x`.
fn volume_mounts(shared: &Path, source: &Path, through: &str) -> Vec<container::MountSpec> {
    let bind = |container_path: String, host: &Path| container::MountSpec {
        container_path,
        host_path: host.display().to_string(),
        readonly: false,
        propagation: container::Propagation::Private,
        recursive_read_only: false,
        image: None,
        idmap: None,
    };
    vec![
        bind("/vol".into(), shared),
        bind(format!("/vol/{through}/x"), source),
    ]
}

fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Issue 13, item 6 (static half). A volume holds `link -> <a host directory>`, and a
/// mount's target runs through it (`/vol/link/x`): the link is read inside the rootfs
/// (RESOLVE_IN_ROOT), so the mount lands at `<rootfs><host dir>/x` and the host
/// directory itself stays untouched.
#[tokio::test]
async fn item6_symlink_in_a_mount_target_resolves_inside_the_rootfs() {
    let pod = pod().await;
    let d = pod.dir.path();
    let root = rootfs(d);
    let (shared, source, host_dir) = (d.join("shared"), d.join("source"), d.join("host-dir"));
    for dir in [&shared, &source, &host_dir] {
        fs::create_dir_all(dir).unwrap();
    }
    fs::write(source.join("marker"), "from-source\n").unwrap();
    std::os::unix::fs::symlink(&host_dir, shared.join("link")).unwrap();
    let mut input = spec_input(
        &pod,
        &root,
        &["/bin/cat", "/vol/link/x/marker"],
        SecurityContextSpec::default(),
    );
    input.container.mounts = volume_mounts(&shared, &source, "link");
    let (_, log, exit) = create_and_start(&pod, "static", &input).await;
    let record = wait_exit(&exit).await;
    assert_eq!(
        (record.exit_code, log_lines(&log)),
        (0, vec![("stdout".into(), "from-source".into())]),
        "the container sees the mount through the link"
    );
    assert!(
        entries(&host_dir).is_empty(),
        "the host directory the link names is untouched: {:?}",
        entries(&host_dir)
    );
    let inside = root.join(host_dir.strip_prefix("/").unwrap()).join("x");
    assert!(inside.is_dir(), "the target was made inside the rootfs");
}

/// Issue 13, item 6 (CVE-2021-30465 class). Another container sharing the volume swaps
/// a component of a mount target between a directory and a symlink to a host
/// directory (`renameat2(RENAME_EXCHANGE)` in a tight loop). Resolving the target by
/// path and then creating and mounting by path let the swap land in between: the
/// target directory was created in, and the mount made on, the host directory. With
/// targets held by descriptors resolved in the rootfs, every one of the containers
/// gets its mount inside its rootfs, and the host directory never receives anything.
#[tokio::test]
async fn item6_racing_symlink_swap_never_moves_a_mount_out_of_the_rootfs() {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    };
    const TRIALS: usize = 20;
    let pod = pod().await;
    let d = pod.dir.path();
    let root = rootfs(d);
    let (shared, source, host_dir) = (d.join("shared"), d.join("source"), d.join("host-dir"));
    for dir in [&shared.join("sub"), &source, &host_dir] {
        fs::create_dir_all(dir).unwrap();
    }
    fs::write(source.join("marker"), "from-source\n").unwrap();
    std::os::unix::fs::symlink(&host_dir, shared.join("swap")).unwrap();

    // The attacker: `sub` and `swap` trade places as fast as the kernel allows. The
    // test pauses it to look: `paused` stops new swaps, holding `turn` waits out the
    // one in flight.
    let paused = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let turn = Arc::new(Mutex::new(()));
    let swapper = {
        let (paused, stop, swaps, turn, shared) = (
            paused.clone(),
            stop.clone(),
            swaps.clone(),
            turn.clone(),
            shared.clone(),
        );
        std::thread::spawn(move || {
            let dir = fs::File::open(&shared).unwrap();
            while !stop.load(Ordering::SeqCst) {
                if paused.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let _turn = turn.lock().unwrap();
                if paused.load(Ordering::SeqCst) {
                    continue;
                }
                nix::fcntl::renameat2(
                    &dir,
                    "sub",
                    &dir,
                    "swap",
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                )
                .unwrap();
                swaps.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    struct StopOnDrop(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
            if let Some(t) = self.1.take() {
                let _ = t.join();
            }
        }
    }
    let _swapper = StopOnDrop(stop, Some(swapper));

    let in_rootfs_host_dir = root.join(host_dir.strip_prefix("/").unwrap()).join("x");
    let mut broken = Vec::new();
    for trial in 0..TRIALS {
        let id = format!("race{trial}");
        let mut input = spec_input(
            &pod,
            &root,
            &["/bin/sleep", "1000"],
            SecurityContextSpec::default(),
        );
        input.container.mounts = volume_mounts(&shared, &source, "sub");
        let spec = container::generate_spec(&input, &HostDevices::default()).expect("spec");
        let created = try_create_and_start_spec(&pod, &id, &spec, vec![]).await;

        paused.store(true, Ordering::SeqCst);
        let still = turn.lock().unwrap();
        // Checked first, whether or not the container came up: what a lost race
        // leaves on the host.
        assert!(
            entries(&host_dir).is_empty(),
            "trial {trial}: the host directory received {:?} ({created:?})",
            entries(&host_dir)
        );
        let (pid, _, exit) = match created {
            Ok(created) => created,
            Err(e) => {
                // Asserted at the end, so that the host check above runs every trial.
                broken.push(format!("trial {trial}: {e}"));
                drop(still);
                paused.store(false, Ordering::SeqCst);
                continue;
            }
        };
        // The mount is in the container's rootfs: on the real directory (whichever
        // name it has now) or, through the link read in the rootfs, below
        // <rootfs><host dir>.
        let real = if fs::symlink_metadata(shared.join("sub")).unwrap().is_dir() {
            "sub"
        } else {
            "swap"
        };
        let in_container = |p: &Path| {
            let rel = p.strip_prefix(&root).unwrap();
            PathBuf::from(format!("/proc/{}/root", pid.pid))
                .join(rel)
                .join("marker")
        };
        let candidates = [
            root.join("vol").join(real).join("x"),
            in_rootfs_host_dir.clone(),
        ];
        let found = candidates
            .iter()
            .filter(|p| fs::read_to_string(in_container(p)).is_ok_and(|t| t == "from-source\n"))
            .count();
        assert_eq!(
            found,
            1,
            "trial {trial}: the mount is in the rootfs, at one of {candidates:?}; the \
             container's mounts: {}",
            fs::read_to_string(format!("/proc/{}/mountinfo", pid.pid)).unwrap_or_default()
        );
        drop(still);
        let _ = monitor::request(
            &pod.spec.socket,
            &Request::Signal {
                id: id.clone(),
                signal: 9,
            },
            Duration::from_secs(5),
        )
        .await;
        wait_exit(&exit).await;
        paused.store(false, Ordering::SeqCst);
    }
    eprintln!(
        "{} swaps during {TRIALS} trials",
        swaps.load(Ordering::SeqCst)
    );
}
