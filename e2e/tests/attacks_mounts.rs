//! Issue 13, items 4, 6 and 8: a container that floods its monitor with output, device
//! nodes smuggled in through an image VOLUME, and mount targets redirected by a
//! symlink (the real-kernel half of item 6 is in runtime/tests/launcher.rs).

use std::{
    future::Future,
    time::{Duration, Instant},
};

use crust_e2e::{
    image_builder::{Compression, Image, LayerBuilder, host_arch},
    world::{PodOptions, World, busybox_image},
};
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

/// An image whose `VOLUME /data` holds a character device with /dev/zero's numbers
/// (1:5, which the device cgroup allows, so only the mount decides) and a fifo.
fn image_with_device_in_volume() -> Image {
    let mut layer = LayerBuilder::new();
    layer
        .busybox(&["sh", "head", "mknod", "grep", "sleep", "echo", "ls"])
        .expect("busybox-static is installed");
    for dir in ["etc", "proc", "sys", "dev", "tmp", "data"] {
        layer.dir(dir, 0o755);
    }
    layer
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .file("data/seed", b"seed\n", 0o644)
        .char_device("data/zero", 0o666, 1, 5)
        .fifo("data/pipe", 0o644);
    Image::build(
        vec![layer.finish(Compression::Gzip)],
        host_arch(),
        serde_json::json!({
            "Cmd": ["sh"],
            "Env": ["PATH=/bin"],
            "Volumes": {"/data": {}},
        }),
    )
}

/// What the container can do with device nodes in the volume: the image's, and one
/// it makes itself (it has CAP_MKNOD), then the volume's mount options.
const DEVICE_PROBE: &str = "\
if head -c 4 /data/zero >/dev/null 2>&1; then echo image-node-works; else echo image-node-dead; fi; \
if mknod /data/made c 1 5 2>/dev/null; then \
  if head -c 4 /data/made >/dev/null 2>&1; then echo made-node-works; else echo made-node-dead; fi; \
else echo mknod-refused; fi; \
ls /data; \
grep ' /data ' /proc/mounts";

/// Item 4. Attack: an image ships a device node inside a `VOLUME` directory. The
/// copy-up recreated it (mknod) in the volume's host directory, and the volume was
/// bound without nodev, so the node was live in the container (unlike the rootfs,
/// which is nodev): with a disk's or /dev/mem's numbers only the device cgroup stood
/// between the image and the host's hardware. Now the copy-up skips device nodes and
/// fifos, and volumes are mounted nodev (so one the container makes is dead too), with
/// the built-in launcher and with runc.
#[tokio::test]
async fn item4_device_nodes_in_an_image_volume_do_not_work() {
    let runc = "[runtime.handlers.runc]\ntype = \"oci\"\npath = \"/usr/sbin/runc\"\n";
    assert!(
        std::path::Path::new("/usr/sbin/runc").exists(),
        "runc (apt-get install runc) drives the oci handler half of this test"
    );
    let w = World::start(&image_with_device_in_volume(), "test/devvol", runc).await;
    for handler in ["", "runc"] {
        let name = if handler.is_empty() {
            "builtin"
        } else {
            handler
        };
        let pod = w
            .run_pod(&PodOptions::named(&format!("devvol-{name}")).handler(handler))
            .await;
        let id = w.run(&pod, w.config("holder", &["sleep", "3600"])).await;
        let (code, out, err) = w.exec(&id, &["sh", "-c", DEVICE_PROBE]).await;
        assert_eq!(code, 0, "{name}: the probe runs: {out} {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines.first().copied(),
            Some("image-node-dead"),
            "{name}: the image's device node must not work: {out}"
        );
        assert!(
            lines.contains(&"made-node-dead") || lines.contains(&"mknod-refused"),
            "{name}: a node made in the volume must not work either: {out}"
        );
        assert!(
            lines.contains(&"seed") && !lines.contains(&"zero") && !lines.contains(&"pipe"),
            "{name}: the seed file is copied up, the device node and fifo are not: {out}"
        );
        let mount = lines.last().copied().unwrap_or_default();
        assert!(
            mount
                .split(' ')
                .nth(3)
                .is_some_and(|o| o.split(',').any(|o| o == "nodev")),
            "{name}: the volume is mounted nodev: {mount:?}"
        );
    }
}

/// Swaps `dir/sub` and `dir/swap` (a directory and a symlink) as fast as the kernel
/// allows until dropped: what a container sharing the volume `dir` can do.
struct Swapper {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Swapper {
    fn start(dir: &std::path::Path) -> Swapper {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let dir = std::fs::File::open(dir).expect("open the volume");
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut swaps = 0;
                while !stop.load(Ordering::SeqCst) {
                    nix::fcntl::renameat2(
                        &dir,
                        "sub",
                        &dir,
                        "swap",
                        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                    )
                    .expect("swap");
                    swaps += 1;
                }
                swaps
            })
        };
        Swapper {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Item 6 (CVE-2021-30465 class), through crustd. Attack: a pod's volume is shared
/// with a container that swaps `sub` in it between a directory and a symlink to a host
/// directory while a sibling is created with a mount at `/vol/sub/x`. The built-in
/// launcher resolved the target by path and then created and mounted by path, so a
/// swap in between created `x` in (and mounted onto) the host directory. Now the
/// target is resolved with openat2(RESOLVE_IN_ROOT) and mounted by descriptor: every
/// sibling is created and the host directory never receives anything. (The runtime's
/// launcher test checks where the mount lands.)
#[tokio::test]
async fn item6_racing_symlink_swap_in_a_shared_volume_cannot_redirect_a_mount() {
    const TRIALS: usize = 30;
    let image = busybox_image(&["sh", "true"], |_| {});
    let w = World::start(&image, "test/swap", "").await;
    let base = w.sb.path().join("item6");
    let (vol, source, host_dir) = (base.join("vol"), base.join("source"), base.join("host-dir"));
    for dir in [&vol.join("sub"), &source, &host_dir] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(source.join("marker"), "from-source\n").unwrap();
    std::os::unix::fs::symlink(&host_dir, vol.join("swap")).unwrap();
    let pod = w.run_pod(&PodOptions::named("swap")).await;
    let entries = || -> Vec<String> {
        std::fs::read_dir(&host_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };

    let swapper = Swapper::start(&vol);
    let mut broken = Vec::new();
    for trial in 0..TRIALS {
        let mut config = w.config(&format!("victim{trial}"), &["true"]);
        config.mounts = vec![
            crust_proto::runtime::v1::Mount {
                container_path: "/vol".into(),
                host_path: vol.display().to_string(),
                ..Default::default()
            },
            crust_proto::runtime::v1::Mount {
                container_path: "/vol/sub/x".into(),
                host_path: source.display().to_string(),
                ..Default::default()
            },
        ];
        let created = w.create(&pod, config).await;
        assert!(
            entries().is_empty(),
            "trial {trial}: the host directory received {:?} ({created:?})",
            entries()
        );
        if let Err(e) = created {
            broken.push(format!("trial {trial}: {e}"));
        }
    }
    eprintln!("{} swaps during {TRIALS} creates", swapper.stop());
    assert!(broken.is_empty(), "the race broke creates: {broken:?}");
}
