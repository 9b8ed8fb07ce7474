//! The built-in launcher end to end (run as root): a spec generated from a CRI-like
//! container config, created and started by a real `crust-monitor` in a real pod, on a
//! busybox rootfs. Checks are made from outside (`/proc/<pid>`) and from the
//! container's own output in its CRI log.

use std::{fs, os::unix::fs::MetadataExt, path::Path, time::Duration};

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
        new_ipc: true,
        new_uts: true,
        new_pid: false,
        hostname: "launch-pod".into(),
        sysctls: vec![],
        monitor_cgroup_dirs: vec![],
        pod_cgroup_dirs: vec![],
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
    for applet in ["sh", "cat", "id", "sleep", "echo", "ls", "hostname", "grep"] {
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
    let d = pod.dir.path();
    let spec_path = d.join(format!("{id}.json"));
    fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let (log, exit) = (d.join(format!("{id}.log")), d.join(format!("{id}.exit")));
    let req = Request::CreateContainer {
        id: id.into(),
        spec: spec_path,
        log_path: log.clone(),
        exit_file: exit.clone(),
        cgroup_dirs: vec![],
        overlay: None,
        stdin: false,
        stdin_once: false,
        tty: false,
        oci: None,
        max_log_line: crust_runtime::monitor::DEFAULT_MAX_LOG_LINE,
    };
    let reply = monitor::request(&pod.spec.socket, &req, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(reply.ok, "create: {:?}", reply.error);
    let pid = reply.pid.expect("pid");
    let reply = monitor::request(
        &pod.spec.socket,
        &Request::StartContainer { id: id.into() },
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(reply.ok, "start: {:?}", reply.error);
    (pid, log, exit)
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
