//! The real `crust-monitor` binary: namespaces, pins, hostname, sysctls, pod init,
//! ping and shutdown (run as root).

use std::{fs, os::unix::fs::MetadataExt, path::Path, process::Command, time::Duration};

use crust_runtime::monitor::{self, MonitorSpec, Request};

struct Dir(tempfile::TempDir);

impl Drop for Dir {
    fn drop(&mut self) {
        // Pins are bind mounts: unmount before the temp dir is removed.
        for ns in ["net", "ipc", "uts", "pid"] {
            let _ = nix::mount::umount2(
                &self.0.path().join("ns").join(ns),
                nix::mount::MntFlags::MNT_DETACH,
            );
        }
    }
}

fn inode(path: impl AsRef<Path>) -> u64 {
    fs::metadata(path).unwrap().ino()
}

fn nsenter(args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .args(args)
        .output()
        .expect("nsenter (util-linux)");
    assert!(
        out.status.success(),
        "nsenter {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn monitor_creates_pins_and_shuts_down() {
    let dir = Dir(tempfile::Builder::new()
        .prefix("crust-mon-")
        .tempdir_in("/var/tmp")
        .unwrap());
    let d = dir.0.path();
    let spec = MonitorSpec {
        pod_id: "test".into(),
        socket: d.join("monitor.sock"),
        pid_file: d.join("monitor.json"),
        pins_dir: d.join("ns"),
        new_net: true,
        join_net: None,
        new_ipc: true,
        new_uts: true,
        new_pid: true,
        hostname: "crust-test-pod".into(),
        sysctls: vec![
            ("net.ipv4.ip_forward".into(), "1".into()),
            ("kernel.shm_rmid_forced".into(), "1".into()),
        ],
        monitor_cgroup_dirs: vec![],
        pod_cgroup_dirs: vec![],
        userns: None,
    };
    fs::write(d.join("spec.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_crust-monitor"));
    let pids = monitor::spawn(bin, &d.join("spec.json"), &d.join("monitor.log"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nlog: {}",
                fs::read_to_string(d.join("monitor.log")).unwrap_or_default()
            )
        });
    let init = pids.init.expect("pid: POD starts an init");
    let guard = scopeguard(pids);
    assert!(pids.monitor.is_alive() && init.is_alive());
    assert_ne!(pids.monitor.pid, std::process::id() as i32);

    // The monitor is detached: not our child, its own session.
    let stat = fs::read_to_string(format!("/proc/{}/stat", pids.monitor.pid)).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    assert_ne!(
        fields[1],
        std::process::id().to_string(),
        "parent must not be us"
    );
    assert_eq!(
        fields[3],
        pids.monitor.pid.to_string(),
        "session id is the monitor's own"
    );

    for ns in ["net", "ipc", "uts"] {
        let pinned = inode(d.join("ns").join(ns));
        assert_eq!(
            pinned,
            inode(format!("/proc/{}/ns/{ns}", pids.monitor.pid)),
            "{ns} pin is the monitor's"
        );
        assert_ne!(
            pinned,
            inode(format!("/proc/self/ns/{ns}")),
            "{ns} must be a new namespace"
        );
    }
    assert_eq!(
        inode(d.join("ns/pid")),
        inode(format!("/proc/{}/ns/pid", init.pid))
    );
    assert_ne!(inode(d.join("ns/pid")), inode("/proc/self/ns/pid"));

    let uts = format!("--uts={}", d.join("ns/uts").display());
    assert_eq!(nsenter(&[&uts, "hostname"]), "crust-test-pod");
    let net = format!("--net={}", d.join("ns/net").display());
    assert_eq!(
        nsenter(&[&net, "cat", "/proc/sys/net/ipv4/ip_forward"]),
        "1"
    );
    let ipc = format!("--ipc={}", d.join("ns/ipc").display());
    assert_eq!(
        nsenter(&[&ipc, "cat", "/proc/sys/kernel/shm_rmid_forced"]),
        "1"
    );
    let pid_file: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join("monitor.json")).unwrap()).unwrap();
    assert_eq!(pid_file["monitor"]["pid"], pids.monitor.pid);

    let reply = monitor::request(&spec.socket, &Request::Ping, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(reply.ok);
    assert_eq!(reply.init_alive, Some(true));

    let reply = monitor::request(&spec.socket, &Request::Shutdown, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(reply.ok);
    assert!(
        !init.is_alive(),
        "init is killed before shutdown is acknowledged"
    );
    for _ in 0..500 {
        if !pids.monitor.is_alive() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!pids.monitor.is_alive(), "monitor exits after shutdown");
    assert!(!spec.socket.exists());
    drop(guard);
}

#[tokio::test]
async fn setup_failure_is_reported_and_nothing_keeps_running() {
    let dir = Dir(tempfile::Builder::new()
        .prefix("crust-mon-")
        .tempdir_in("/var/tmp")
        .unwrap());
    let d = dir.0.path();
    let spec = MonitorSpec {
        pod_id: "bad".into(),
        socket: d.join("monitor.sock"),
        pid_file: d.join("monitor.json"),
        pins_dir: d.join("ns"),
        new_net: true,
        join_net: None,
        new_ipc: false,
        new_uts: true,
        new_pid: false,
        hostname: "ok".into(),
        sysctls: vec![("net.no.such.sysctl".into(), "1".into())],
        monitor_cgroup_dirs: vec![],
        pod_cgroup_dirs: vec![],
        userns: None,
    };
    fs::write(d.join("spec.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    let err = monitor::spawn(
        Path::new(env!("CARGO_BIN_EXE_crust-monitor")),
        &d.join("spec.json"),
        &d.join("monitor.log"),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("net.no.such.sysctl"), "{err}");
    assert!(!spec.socket.exists());
    assert!(
        !d.join("monitor.json").exists(),
        "a failed monitor leaves no pid file"
    );
}

/// Kills the monitor and init by PID if a test fails midway.
struct Guard(crust_runtime::monitor::MonitorPids);

fn scopeguard(pids: crust_runtime::monitor::MonitorPids) -> Guard {
    Guard(pids)
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(init) = self.0.init {
            init.kill();
        }
        self.0.monitor.kill();
    }
}
