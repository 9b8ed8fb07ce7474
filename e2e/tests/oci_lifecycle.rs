//! runc-run containers (`type = "oci"` handler) through what the built-in launcher's
//! containers are also put through: a crustd restart with one container running and
//! one exiting while crustd is down, and attach to a container's stdin and output.
//! The same tests run again with crun inside a guest node (the last test here).

use std::{io::Write, path::Path, process::Stdio, time::Duration};

use crust_e2e::{
    guest::{in_guest_run, oci_runtime_under_test, run_suite_in_guest},
    world::{PodOptions, World, busybox_image},
};
use crust_proto::runtime::v1::{ContainerState, StopPodSandboxRequest};

async fn world() -> World {
    let runtime = oci_runtime_under_test();
    assert!(
        Path::new(&runtime).is_file(),
        "{runtime} not found: install it with `apt-get install runc`"
    );
    let image = busybox_image(&["sh", "echo", "sleep", "cat"], |_| {});
    World::start(
        &image,
        "test/oci",
        &format!("[runtime.handlers.runc]\ntype = \"oci\"\npath = \"{runtime}\"\n"),
    )
    .await
}

#[tokio::test]
async fn runc_containers_survive_a_crustd_restart_and_exits_while_down_are_reported() {
    let mut w = world().await;
    let pod = w
        .run_pod(&PodOptions::named("restart").handler("runc"))
        .await;
    let long = w.run(&pod, w.config("long", &["sleep", "1000"])).await;
    let short = w
        .run(&pod, w.config("short", &["sh", "-c", "sleep 1; exit 3"]))
        .await;

    assert!(w.d.terminate().await.unwrap().success());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    w.d = w.sb.start().unwrap();
    w.d.wait_ready().await.unwrap();
    assert_eq!(
        w.d.container_status(&long).await.state,
        i32::from(ContainerState::ContainerRunning),
        "still running"
    );
    let (code, out, _) = w.exec(&long, &["echo", "alive"]).await;
    assert_eq!((code, out.as_str()), (0, "alive\n"), "and reachable");
    let s = w.d.container_status(&short).await;
    assert_eq!(
        (s.state, s.exit_code),
        (i32::from(ContainerState::ContainerExited), 3),
        "exit while crustd was down"
    );
    w.d.runtime()
        .await
        .unwrap()
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        w.d.container_status(&long).await.state,
        i32::from(ContainerState::ContainerExited),
        "stopping the pod stops its runc containers"
    );
}

#[tokio::test]
async fn attach_reaches_a_runc_containers_stdin_and_output() {
    let w = world().await;
    let pod = w
        .run_pod(&PodOptions::named("attach").handler("runc"))
        .await;
    let mut config = w.config("reader", &["sh", "-c", "read line; echo got-$line"]);
    config.stdin = true;
    config.stdin_once = true;
    let id = w.run(&pod, config).await;

    let mut attach = std::process::Command::new(crust_e2e::binary("crustctl"))
        .args(["-r", &w.sb.endpoint(), "attach", "-i", &id])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    attach.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let status = w.d.wait_exited(&id).await;
    assert_eq!(status.exit_code, 0, "{status:?}");
    let pid = attach.id();
    let waited = tokio::task::spawn_blocking(move || attach.wait_with_output());
    let out = match tokio::time::timeout(Duration::from_secs(20), waited).await {
        Ok(done) => done.unwrap().unwrap(),
        Err(_) => {
            // Ours, by PID: do not leave it behind.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("crustctl attach did not end with the container");
        }
    };
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "got-hello\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(w.d.container_status(&id).await.log_path).unwrap();
    assert!(
        log.contains(" stdout F got-hello"),
        "also in the log: {log}"
    );
}

/// This file's other tests, again with crun on a pure cgroup v2 node (crun refuses
/// this host's hybrid cgroups).
#[test]
fn the_same_with_crun_on_a_guest_node() {
    assert!(!in_guest_run(), "run with --skip with_crun in the guest");
    run_suite_in_guest("oci-lifecycle-crun", "/usr/bin/crun", "with_crun", 2);
}
