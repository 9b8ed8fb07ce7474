//! Issue 13, items 4, 6 and 8: a container that floods its monitor with output, device
//! nodes smuggled in through an image VOLUME, and mount targets redirected by a
//! symlink (the real-kernel half of item 6 is in runtime/tests/launcher.rs).

use std::{
    future::Future,
    time::{Duration, Instant},
};

use crust_e2e::world::{PodOptions, World, busybox_image};
use crust_proto::runtime::v1::{
    ContainerConfig, CreateContainerRequest, ExecSyncRequest, LinuxContainerConfig,
    LinuxContainerResources, ReopenContainerLogRequest, StartContainerRequest,
    StopContainerRequest,
};

/// The deadline every RPC of the flood test gets: generous for an idle pod (they take
/// milliseconds there), far below the 30 s CreateContainer took under the flood.
const DEADLINE: Duration = Duration::from_secs(10);

/// Runs one RPC under [`DEADLINE`] (sent as its grpc-timeout too, as kubelet does) and
/// prints how long it took; panics if it fails or misses the deadline.
async fn within_deadline<T, F>(what: &str, rpc: F) -> T
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let began = Instant::now();
    let result = tokio::time::timeout(DEADLINE, rpc).await;
    let took = began.elapsed();
    eprintln!("{what}: {took:?}");
    match result {
        Ok(Ok(reply)) => reply.into_inner(),
        Ok(Err(status)) => panic!("{what} failed after {took:?}: {status}"),
        Err(_) => panic!("{what} missed its {DEADLINE:?} deadline (DEADLINE_EXCEEDED)"),
    }
}

fn deadline<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.set_timeout(DEADLINE);
    req
}

/// `command` limited to 0.3 CPU (CFS quota 30000 of a 100000 period).
fn throttled(w: &World, name: &str, command: &[&str]) -> ContainerConfig {
    let mut config = w.config(name, command);
    config.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 30_000,
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

/// Item 8. Attack: a container writing as fast as it can (`yes`, or one endless line
/// with no newline) starved its pod's monitor. The monitor drained each output pipe
/// until it was empty, which it never is while the writer runs, formatting and writing
/// one log record per 2-byte line; the control socket was looked at only after that.
/// So in the same pod CreateContainer of a sibling timed out after 30 s,
/// ReopenContainerLog failed and StopContainer of the chatty one took 8 s.
/// Now every loop turn serves the control socket first and reads at most one bounded
/// chunk per stream, and a chunk's records go to the log in one write.
#[tokio::test]
async fn item8_chatty_container_does_not_starve_its_monitor() {
    let image = busybox_image(&["sh", "yes", "tr", "sleep", "echo", "true"], |_| {});
    let w = World::start(&image, "test/chatty", "").await;
    let pod = w.run_pod(&PodOptions::named("chatty")).await;
    let yes = w.run(&pod, throttled(&w, "yes", &["yes"])).await;
    // One line that never ends: the monitor must cut it into P records, not hold it.
    let long = w
        .run(
            &pod,
            throttled(&w, "long", &["sh", "-c", "yes | tr -d '\\n'"]),
        )
        .await;
    let yes_log = w.logs.join("chatty").join("yes.log");
    let long_log = w.logs.join("chatty").join("long.log");
    // Poll until both floods are on: their logs grow.
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    for _ in 0..1000 {
        if size(&yes_log) > 1 << 20 && size(&long_log) > 1 << 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(size(&yes_log) > 1 << 20, "yes writes its log");
    assert!(
        size(&long_log) > 1 << 20,
        "the endless line is logged in parts"
    );
    let flood_began = Instant::now();

    let mut rt = w.d.runtime().await.expect("connect");
    let sibling = within_deadline(
        "CreateContainer of a sibling",
        rt.create_container(deadline(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(w.config("sibling", &["sleep", "3600"])),
            sandbox_config: None,
        })),
    )
    .await
    .container_id;
    within_deadline(
        "StartContainer of the sibling",
        rt.start_container(deadline(StartContainerRequest {
            container_id: sibling.clone(),
        })),
    )
    .await;

    std::fs::rename(&yes_log, w.logs.join("chatty").join("yes.log.1")).expect("rotate");
    within_deadline(
        "ReopenContainerLog of the chatty one",
        rt.reopen_container_log(deadline(ReopenContainerLogRequest {
            container_id: yes.clone(),
        })),
    )
    .await;
    for _ in 0..1000 {
        if yes_log.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(yes_log.exists(), "the monitor writes to the reopened log");

    for id in [&yes, &sibling] {
        let reply = within_deadline(
            "ExecSync",
            rt.exec_sync(deadline(ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec!["echo".into(), "alive".into()],
                timeout: 8,
            })),
        )
        .await;
        assert_eq!(
            (reply.exit_code, reply.stdout.as_slice()),
            (0, &b"alive\n"[..])
        );
    }

    // `long` is a shell with a pipeline: its writers outlive the shell until the
    // monitor kills what is left in the cgroup, which it must not put off while
    // draining their pipe.
    for id in [&yes, &long] {
        within_deadline(
            "StopContainer of a chatty one",
            rt.stop_container(deadline(StopContainerRequest {
                container_id: id.clone(),
                timeout: 2,
            })),
        )
        .await;
        let status = w.d.container_status(id).await;
        assert_eq!(
            status.state,
            crust_proto::runtime::v1::ContainerState::ContainerExited as i32,
            "{id} stopped"
        );
    }
    let logged = size(&yes_log) + size(&w.logs.join("chatty").join("yes.log.1"));
    eprintln!(
        "yes logged {} MiB, long {} MiB in {:?} of flood",
        logged >> 20,
        size(&long_log) >> 20,
        flood_began.elapsed()
    );
}
