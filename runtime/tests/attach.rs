//! Containers with stdin and terminals, and attach sessions to them, against a real
//! `crust-monitor` in a real pod on a busybox rootfs (run as root). Sessions are opened
//! with `container::attach_to_monitor`, the crustd half `SandboxManager::attach` uses
//! after its checks, so both ends of the frame protocol are the shipped code.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use crust_runtime::{
    container::{
        self, ContainerSpec, HostDevices, ImageConfigView, PodContext, SecurityContextSpec,
        SpecInput, StdioEnd, StdioOutput, StdioRequest, StdioSession, TerminalSize,
    },
    monitor::{self, ExitRecord, MonitorError, MonitorPids, MonitorSpec, Request},
    proc::ProcRef,
    sandbox::NsMode,
};

struct Pod {
    dir: tempfile::TempDir,
    pids: MonitorPids,
    spec: MonitorSpec,
    containers: Mutex<Vec<ProcRef>>,
}

impl Drop for Pod {
    fn drop(&mut self) {
        // Shutdown kills and reaps the containers; the kills below are for a monitor
        // that does not answer.
        if let Ok(mut conn) = UnixStream::connect(&self.spec.socket) {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = conn.write_all(b"{\"op\":\"shutdown\"}\n");
            let _ = BufReader::new(conn).read_line(&mut String::new());
        }
        for c in self.containers.lock().unwrap().iter() {
            c.kill();
        }
        self.pids.monitor.kill();
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
        .prefix("crust-attach-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let d = dir.path();
    let spec = MonitorSpec {
        pod_id: "attach".into(),
        socket: d.join("m.sock"),
        pid_file: d.join("monitor.json"),
        pins_dir: d.join("ns"),
        new_net: true,
        join_net: None,
        new_ipc: true,
        new_uts: true,
        new_pid: false,
        hostname: "attach-pod".into(),
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
    let root = d.join("rootfs");
    for sub in ["bin", "etc", "dev", "proc", "sys", "tmp"] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static installed");
    for applet in [
        "sh", "cat", "sleep", "echo", "tty", "stty", "head", "tr", "true",
    ] {
        fs::hard_link(root.join("bin/busybox"), root.join("bin").join(applet)).unwrap();
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\ntty:x:5:\n").unwrap();
    Pod {
        dir,
        pids,
        spec,
        containers: Mutex::new(Vec::new()),
    }
}

#[derive(Clone, Copy, Default)]
struct Stdio {
    stdin: bool,
    stdin_once: bool,
    tty: bool,
}

/// Creates and starts container `id` running `command`; returns (log, exit file).
async fn run(pod: &Pod, id: &str, command: &[&str], stdio: Stdio) -> (PathBuf, PathBuf) {
    let d = pod.dir.path();
    let root = d.join("rootfs");
    let input = SpecInput {
        container: ContainerSpec {
            command: command.iter().map(|s| s.to_string()).collect(),
            stdin: stdio.stdin,
            stdin_once: stdio.stdin_once,
            tty: stdio.tty,
            security: SecurityContextSpec {
                pid_mode: NsMode::Container,
                ..Default::default()
            },
            ..Default::default()
        },
        image: ImageConfigView {
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        },
        pod: PodContext {
            sandbox_id: "attach".into(),
            net_ns: Some(d.join("ns/net")),
            ipc_ns: Some(d.join("ns/ipc")),
            uts_ns: Some(d.join("ns/uts")),
            hostname: "attach-pod".into(),
            cgroup_path: "/crust-attach-test".into(),
            ..Default::default()
        },
        rootfs: root.clone(),
        etc_passwd: Some(fs::read_to_string(root.join("etc/passwd")).unwrap()),
        etc_group: Some(fs::read_to_string(root.join("etc/group")).unwrap()),
        volumes_root: d.join("volumes"),
        ..Default::default()
    };
    let spec = container::generate_spec(&input, &HostDevices::default()).expect("spec");
    let spec_path = d.join(format!("{id}.json"));
    fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let (log, exit) = (d.join(format!("{id}.log")), d.join(format!("{id}.exit")));
    let create = Request::CreateContainer {
        id: id.into(),
        spec: spec_path,
        log_path: log.clone(),
        exit_file: exit.clone(),
        cgroup_dirs: vec![],
        overlay: None,
        stdin: stdio.stdin,
        stdin_once: stdio.stdin_once,
        tty: stdio.tty,
        oci: None,
        max_log_line: crust_runtime::monitor::DEFAULT_MAX_LOG_LINE,
        restore: None,
    };
    let reply = monitor::request(&pod.spec.socket, &create, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(reply.ok, "create {id}: {:?}", reply.error);
    pod.containers.lock().unwrap().push(reply.pid.expect("pid"));
    let start = Request::StartContainer { id: id.into() };
    let reply = monitor::request(&pod.spec.socket, &start, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(reply.ok, "start {id}: {:?}", reply.error);
    (log, exit)
}

async fn attach(pod: &Pod, id: &str, req: StdioRequest) -> StdioSession {
    container::attach_to_monitor(&pod.spec.socket, id, req)
        .await
        .unwrap_or_else(|e| panic!("attach {id}: {e}"))
}

/// Reads the session's output until it contains `want`; returns all of it (stdout and
/// stderr merged).
async fn output_until(session: &mut StdioSession, want: &str) -> String {
    let mut seen = Vec::new();
    let found = |seen: &[u8], from: usize| {
        seen[from.saturating_sub(want.len())..]
            .windows(want.len())
            .any(|w| w == want.as_bytes())
    };
    let read = async {
        loop {
            match session.output.recv().await {
                Some(StdioOutput::Stdout(b) | StdioOutput::Stderr(b)) => {
                    // Only the new bytes can complete a match: reading stays linear.
                    let from = seen.len();
                    seen.extend_from_slice(&b);
                    if found(&seen, from) {
                        return true;
                    }
                }
                None => return false,
            }
        }
    };
    let ended = match tokio::time::timeout(Duration::from_secs(10), read).await {
        Ok(true) => return String::from_utf8_lossy(&seen).into_owned(),
        Ok(false) => "the output ended",
        Err(_) => "timed out",
    };
    let tail = String::from_utf8_lossy(&seen[seen.len().saturating_sub(200)..]).into_owned();
    panic!(
        "wanted {want:?}; {ended} after {} bytes, ending {tail:?}",
        seen.len()
    );
}

/// Waits until the log's text (record contents only) satisfies `pred`.
async fn log_until(log: &Path, pred: impl Fn(&str) -> bool) -> String {
    let text = || {
        fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap_or("").to_string() + "\n")
            .collect::<String>()
    };
    for _ in 0..500 {
        if pred(&text()) {
            return text();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("log {} never matched; it has {:?}", log.display(), text());
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

async fn kill(pod: &Pod, id: &str) {
    let req = Request::Signal {
        id: id.into(),
        signal: 9,
    };
    let reply = monitor::request(&pod.spec.socket, &req, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(reply.ok, "kill {id}: {:?}", reply.error);
}

#[tokio::test]
async fn tty_container_has_a_controlling_terminal_that_attach_resizes() {
    let pod = pod().await;
    let script = "tty; stty size; while true; do sleep 0.2; echo size=$(stty size); done";
    let tty = Stdio {
        stdin: true,
        tty: true,
        ..Default::default()
    };
    let (log, exit) = run(&pod, "term", &["sh", "-c", script], tty).await;
    // Everything is `stdout` in the log: a terminal has one output stream.
    let text = log_until(&log, |t| t.contains("24 80")).await;
    assert!(text.starts_with("/dev/pts/"), "tty names a pts: {text:?}");
    assert!(
        fs::read_to_string(&log)
            .unwrap()
            .lines()
            .all(|l| l.split(' ').nth(1) == Some("stdout")),
        "terminal output is logged as stdout"
    );

    let mut session = attach(
        &pod,
        "term",
        StdioRequest {
            stdin: true,
            stdout: true,
            tty: true,
            ..Default::default()
        },
    )
    .await;
    let resize = session.resize.clone().expect("a tty session can resize");
    resize
        .send(TerminalSize {
            width: 100,
            height: 40,
        })
        .await
        .unwrap();
    output_until(&mut session, "size=40 100").await;
    log_until(&log, |t| t.contains("size=40 100")).await;
    // Input reaches the terminal: its echo comes back as output.
    let stdin = session.stdin.clone().expect("stdin requested");
    stdin.send(b"typed-text".to_vec()).await.unwrap();
    output_until(&mut session, "typed-text").await;

    drop((session, resize, stdin));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!exit.exists(), "detaching leaves the container running");
    kill(&pod, "term").await;
    wait_exit(&exit).await;
}

#[tokio::test]
async fn stdin_once_eof_ends_the_container_input() {
    let pod = pod().await;
    let once = Stdio {
        stdin: true,
        stdin_once: true,
        ..Default::default()
    };
    let (log, exit) = run(&pod, "cat-once", &["cat"], once).await;
    let mut session = attach(
        &pod,
        "cat-once",
        StdioRequest {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        },
    )
    .await;
    let stdin = session.stdin.take().expect("stdin requested");
    stdin
        .send(b"hello through attach\n".to_vec())
        .await
        .unwrap();
    output_until(&mut session, "hello through attach\n").await;
    log_until(&log, |t| t.contains("hello through attach")).await;
    drop(stdin);
    let record = wait_exit(&exit).await;
    assert_eq!(record.exit_code, 0, "cat ends at EOF: {record:?}");
    let end = tokio::time::timeout(Duration::from_secs(5), session.end)
        .await
        .expect("the session ends with the container")
        .unwrap();
    assert_eq!(end, StdioEnd::Closed("container exited with code 0".into()));
}

#[tokio::test]
async fn without_stdin_once_stdin_stays_open_for_the_next_attacher() {
    let pod = pod().await;
    let keep = Stdio {
        stdin: true,
        ..Default::default()
    };
    let (log, exit) = run(&pod, "cat-keep", &["cat"], keep).await;
    let want = StdioRequest {
        stdin: true,
        stdout: true,
        ..Default::default()
    };
    let mut first = attach(&pod, "cat-keep", want).await;
    let stdin = first.stdin.take().unwrap();
    stdin.send(b"one\n".to_vec()).await.unwrap();
    output_until(&mut first, "one\n").await;
    drop(stdin); // EOF from this attacher only
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!exit.exists(), "stdin was not closed: cat still runs");

    let mut second = attach(&pod, "cat-keep", want).await;
    let stdin = second.stdin.take().unwrap();
    stdin.send(b"two\n".to_vec()).await.unwrap();
    output_until(&mut second, "two\n").await;
    let text = log_until(&log, |t| t.contains("two")).await;
    assert_eq!(text, "one\ntwo\n");
    kill(&pod, "cat-keep").await;
    assert_eq!(wait_exit(&exit).await.exit_code, 137);
    let end = tokio::time::timeout(Duration::from_secs(5), second.end)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        end,
        StdioEnd::Closed("container exited with code 137".into())
    );
}

#[tokio::test]
async fn attachers_all_get_the_output_and_a_stuck_one_is_dropped() {
    const BYTES: usize = 8_000_000;
    let pod = pod().await;
    // Waits for a go on stdin so that every attacher is there for all of the output;
    // paced (a burst over the 4 MiB per-attacher bound would drop even a reader that
    // keeps up on average: the monitor never slows a container for an attacher).
    let script = format!(
        "read go; i=0; while [ $i -lt {} ]; do head -c 100000 /dev/zero | tr '\\0' x; \
         sleep 0.01; i=$((i+1)); done; echo; echo done",
        BYTES / 100_000
    );
    let with_stdin = Stdio {
        stdin: true,
        ..Default::default()
    };
    let (_log, exit) = run(&pod, "chatty", &["sh", "-c", &script], with_stdin).await;
    let mut a = attach(
        &pod,
        "chatty",
        StdioRequest {
            stdin: true,
            stdout: true,
            ..Default::default()
        },
    )
    .await;
    let mut b = attach(
        &pod,
        "chatty",
        StdioRequest {
            stdout: true,
            ..Default::default()
        },
    )
    .await;
    // An attacher that never reads: the monitor must drop it, not wait for it.
    let mut stuck = UnixStream::connect(&pod.spec.socket).unwrap();
    stuck
        .write_all(b"{\"op\":\"attach\",\"id\":\"chatty\",\"stdout\":true}\n")
        .unwrap();

    a.stdin
        .as_ref()
        .unwrap()
        .send(b"go\n".to_vec())
        .await
        .unwrap();
    let count = |s: &str| s.bytes().filter(|&c| c == b'x').count();
    let (out_a, out_b) = tokio::join!(
        output_until(&mut a, "done\n"),
        output_until(&mut b, "done\n")
    );
    assert_eq!(count(&out_a), BYTES, "first attacher got everything");
    assert_eq!(count(&out_b), BYTES, "second attacher got everything");
    let record = wait_exit(&exit).await;
    assert_eq!(record.exit_code, 0);

    // The stuck one was cut off: what it can read ends well short of the output.
    stuck
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    stuck.read_to_end(&mut got).expect("the monitor closed it");
    assert!(
        got.len() < BYTES,
        "stuck attacher was dropped ({} bytes)",
        got.len()
    );
}

#[tokio::test]
async fn attach_is_refused_for_an_exited_container_and_stdin_without_stdin() {
    let pod = pod().await;
    let (_, exit) = run(&pod, "short", &["true"], Stdio::default()).await;
    wait_exit(&exit).await;
    let err = container::attach_to_monitor(
        &pod.spec.socket,
        "short",
        StdioRequest {
            stdout: true,
            ..Default::default()
        },
    )
    .await
    .map(|_| ())
    .expect_err("attach to an exited container");
    assert!(
        matches!(&err, MonitorError::Refused { reason, .. } if reason.contains("exited")),
        "{err}"
    );

    let (_, exit) = run(&pod, "quiet", &["sleep", "100"], Stdio::default()).await;
    let err = container::attach_to_monitor(
        &pod.spec.socket,
        "quiet",
        StdioRequest {
            stdin: true,
            stdout: true,
            ..Default::default()
        },
    )
    .await
    .map(|_| ())
    .expect_err("stdin of a container without stdin");
    assert!(
        matches!(&err, MonitorError::Refused { reason, .. } if reason.contains("without stdin")),
        "{err}"
    );
    kill(&pod, "quiet").await;
    wait_exit(&exit).await;
}
