//! Issue 13, follow-ups from a review of its fixes. Each test drives the real crustd
//! and fails on the code before the fix:
//!
//! - a permissive umask (000) leaked into files crustd makes (world-writable pod
//!   files, records, bundles, log directories);
//! - `<state>/pods` and the socket's lock file were readable by every local user
//!   (anyone could hold the lock's flock and keep crustd from starting);
//! - labels and annotations were bounded each on its own (512 KiB together), and a
//!   pod at the API server's 256 KiB annotation limit plus kubelet's own was refused;
//! - image names were unbounded (logged whole, looked up as they were);
//! - under constant connection traffic the pod monitor never reaped: StopContainer
//!   hung ("still running after SIGKILL");
//! - a gzip bomb under its declared compressed size unpacked without bound.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    os::unix::{fs::MetadataExt, net::UnixStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crust_e2e::{
    Sandbox, SpawnOptions, bytes_below,
    image_builder::{Compression, Image, LayerBuilder, host_arch},
    world::{PodOptions, World, busybox_image},
};
use crust_proto::runtime::v1::{
    ContainerState, ImageSpec, ImageStatusRequest, ListImagesRequest, PodSandboxConfig,
    PodSandboxMetadata, PullImageRequest, RemoveImageRequest, RunPodSandboxRequest,
    StopContainerRequest,
};
use tonic::Code;

const APPLETS: &[&str] = &["sh", "sleep", "cat", "true"];

/// How long crustd may take to answer once an attack was refused (it answers in
/// milliseconds); this only turns a hang into a failure instead of a stuck test.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

async fn world(repo: &str, extra_config: &str, options: &SpawnOptions) -> World {
    World::start_with(&busybox_image(APPLETS, |_| {}), repo, extra_config, options).await
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// Everything below `dir` that other users may write to: files and directories
/// (symlinks have no mode of their own, sockets are checked elsewhere). What crustd
/// does not make itself is skipped: other filesystems mounted below (the pod's
/// /dev/shm tmpfs, namespace pins, container rootfs overlays), image layer contents
/// and containers' writable layers (their modes come from the image or the container).
fn world_writable_below(dir: &Path) -> Vec<(PathBuf, u32)> {
    let Ok(top) = fs::symlink_metadata(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != top.dev() || meta.file_type().is_symlink() {
            continue;
        }
        if (meta.is_file() || meta.is_dir()) && meta.mode() & 0o002 != 0 {
            found.push((path.clone(), meta.mode() & 0o7777));
        }
        if !meta.is_dir() {
            continue;
        }
        if path.ends_with("image/layers") {
            continue;
        }
        let container_dir = path
            .parent()
            .is_some_and(|p| p.ends_with("root/containers"));
        for entry in fs::read_dir(&path).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if container_dir && matches!(name.to_str(), Some("upper" | "work" | "rootfs")) {
                continue;
            }
            stack.push(entry.path());
        }
    }
    found
}

/// Follow-up 1. crustd started under umask 000 (what a careless init system or shell
/// hands it). Before, every file it made without an explicit mode was world-writable:
/// the pod's hostname, hosts and resolv.conf (bind-mounted into its containers, so any
/// local user could rewrite a pod's DNS), records, bundles, CNI caches, log
/// directories. Now crustd sets umask 0022 first thing: nothing it made is writable
/// by other users.
#[tokio::test(flavor = "multi_thread")]
async fn review1_umask_000_does_not_reach_crustds_files() {
    let options = SpawnOptions {
        umask: Some(0),
        ..Default::default()
    };
    let w = world("umask", "", &options).await;
    let pod = w.run_pod(&PodOptions::named("umask")).await;
    let id = w.run(&pod, w.config("c", &["sleep", "1000"])).await;
    assert_eq!(
        w.d.container_status(&id).await.state,
        i32::from(ContainerState::ContainerRunning)
    );
    let pod_dir = w.sb.state().join("pods").join(&pod);
    for name in ["hostname", "hosts", "resolv.conf"] {
        let path = pod_dir.join(name);
        assert_eq!(mode(&path), 0o644, "{}: {:o}", path.display(), mode(&path));
    }
    let mut found = Vec::new();
    for dir in [w.sb.root(), w.sb.state(), w.logs.clone()] {
        found.extend(world_writable_below(&dir));
    }
    let found: Vec<String> = found
        .iter()
        .map(|(p, m)| format!("{} ({m:o})", p.display()))
        .collect();
    assert!(
        found.is_empty(),
        "writable by every local user under umask 000: {found:#?}"
    );
}

/// Follow-up 2. `<state>/pods` (each pod's monitor spec, hosts and resolv.conf) and
/// the records under `<root>` were 0755: any local user could read every pod's
/// config. Now they are 0700, also when an older crustd left them open.
#[tokio::test(flavor = "multi_thread")]
async fn review2_pods_dir_and_records_are_private() {
    let sb = Sandbox::new().unwrap();
    sb.write_config("").unwrap();
    // Left by an older crustd.
    for dir in [sb.state().join("pods"), sb.root().join("records")] {
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    for dir in [
        sb.state().join("pods"),
        sb.root().join("records"),
        sb.root().join("quarantine"),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}: {:o}", dir.display(), mode(&dir));
    }
    drop(d);

    // A pod made after a start where `pods/` did not exist yet.
    let w = world("pods-dir", "", &SpawnOptions::default()).await;
    let pods = w.sb.state().join("pods");
    fs::remove_dir(&pods).expect("no pod yet: pods/ is empty");
    let pod = w.run_pod(&PodOptions::named("private")).await;
    assert_eq!(mode(&pods), 0o700, "{}: {:o}", pods.display(), mode(&pods));
    assert!(pods.join(&pod).join("hosts").is_file());
}

/// Follow-up 3. The CRI socket's lock file (`<socket>.lock`) was 0644: any local user
/// could open it and hold its flock, and the next crustd would refuse to start
/// ("another crustd is serving"). Now it is 0600, also when it existed before.
#[tokio::test(flavor = "multi_thread")]
async fn review3_socket_lock_file_is_0600() {
    let sb = Sandbox::new().unwrap();
    sb.write_config("").unwrap();
    let lock = PathBuf::from(format!("{}.lock", sb.socket().display()));
    fs::create_dir_all(sb.state()).unwrap();
    fs::write(&lock, b"").unwrap();
    fs::set_permissions(&lock, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    assert_eq!(mode(&lock), 0o600, "{}: {:o}", lock.display(), mode(&lock));
    drop(d);
    // A fresh one, under umask 000.
    let sb = Sandbox::new().unwrap();
    sb.write_config("").unwrap();
    let mut d = sb
        .start_with(&SpawnOptions {
            umask: Some(0),
            ..Default::default()
        })
        .unwrap();
    d.wait_ready().await.unwrap();
    let lock = PathBuf::from(format!("{}.lock", sb.socket().display()));
    assert_eq!(mode(&lock), 0o600, "{}: {:o}", lock.display(), mode(&lock));
}

fn pod_config(w: &World, name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "e2e".into(),
            attempt: 0,
        }),
        log_directory: w.logs.join(name).display().to_string(),
        ..Default::default()
    }
}

/// Follow-up 4. Labels and annotations were bounded at 256 KiB each, so 512 KiB of
/// them got into every record and every List answer, while a pod at the API server's
/// own limit (256 KiB of annotations) plus what kubelet adds was refused. Now both
/// together are bounded at 256 KiB + 64 KiB of headroom for kubelet: the first is
/// INVALID_ARGUMENT naming config.annotations, the second runs.
#[tokio::test(flavor = "multi_thread")]
async fn review4_labels_and_annotations_are_bounded_together() {
    let w = world("metadata", "", &SpawnOptions::default()).await;
    let mut runtime = w.d.runtime().await.unwrap();

    let mut over = pod_config(&w, "over");
    over.annotations
        .insert("big".into(), "a".repeat(200 * 1024));
    for i in 0..40 {
        over.labels.insert(format!("l{i}"), "v".repeat(4000));
    }
    let err = runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(over),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("360 KiB of labels and annotations are refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("config.annotations") && err.message().contains("labels"),
        "{}",
        err.message()
    );
    assert!(err.message().len() < 400, "{}", err.message());

    let mut at_limit = pod_config(&w, "at-limit");
    at_limit
        .annotations
        .insert("user".into(), "a".repeat(256 * 1024 - 4));
    for (k, v) in [
        ("io.kubernetes.pod.terminationGracePeriod", "30"),
        (
            "kubernetes.io/config.seen",
            "2026-12-03T12:00:00.000000000Z",
        ),
        ("kubernetes.io/config.source", "api"),
    ] {
        at_limit.annotations.insert(k.into(), v.into());
    }
    at_limit
        .labels
        .insert("io.kubernetes.pod.name".into(), "at-limit".into());
    let pod = runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(at_limit),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("a pod at the API's annotation limit runs: {e}"))
        .into_inner()
        .pod_sandbox_id;

    // Containers are bounded the same way.
    let mut config = w.config("over", &["sleep", "1000"]);
    config
        .annotations
        .insert("big".into(), "a".repeat(300 * 1024));
    config.labels.insert("more".into(), "v".repeat(4000));
    for i in 0..10 {
        config.labels.insert(format!("l{i}"), "v".repeat(4000));
    }
    let err = w
        .create(&pod, config)
        .await
        .expect_err("a container with 340 KiB of labels and annotations is refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("config.annotations"),
        "{}",
        err.message()
    );
    w.d.assert_alive("over-long metadata", ANSWER_WITHIN).await;
}

/// Follow-up 5. Image names were unbounded: a 1 MiB name went whole into the RPC's
/// span (the log line) and to the store's lookup. Now PullImage, ImageStatus and
/// RemoveImage refuse a name over 4096 bytes with INVALID_ARGUMENT naming
/// image.image, a short message, and nothing of it in the log.
#[tokio::test(flavor = "multi_thread")]
async fn review5_image_names_are_bounded() {
    let w = world("names", "", &SpawnOptions::default()).await;
    let long = format!("{}/{}:v1", w.registry.host(), "a".repeat(1 << 20));
    let spec = || {
        Some(ImageSpec {
            image: long.clone(),
            ..Default::default()
        })
    };
    let mut images = w.d.image().await.unwrap();
    let answers = [
        (
            "PullImage",
            images
                .pull_image(PullImageRequest {
                    image: spec(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        (
            "ImageStatus",
            images
                .image_status(ImageStatusRequest {
                    image: spec(),
                    verbose: false,
                })
                .await
                .map(|_| ()),
        ),
        (
            "RemoveImage",
            images
                .remove_image(RemoveImageRequest { image: spec() })
                .await
                .map(|_| ()),
        ),
    ];
    for (rpc, answer) in answers {
        let err = answer.expect_err(rpc);
        assert_eq!(err.code(), Code::InvalidArgument, "{rpc}: {err:?}");
        assert!(
            err.message().contains("image.image") && err.message().contains("more than 4096"),
            "{rpc}: {}",
            err.message()
        );
        assert!(
            err.message().len() < 400,
            "{rpc}: {} bytes",
            err.message().len()
        );
    }
    w.d.assert_alive("over-long image names", ANSWER_WITHIN)
        .await;
    let logs = w.d.logs();
    assert!(
        !logs.contains(&"a".repeat(8192)),
        "the log repeats the name ({} bytes of log)",
        logs.len()
    );
    // The world's own image is still there and found.
    let found = images
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: w.image.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image;
    assert!(found.is_some());
}

/// Pings the monitor at `socket` until `stop`, keeping 64 requests in flight (each
/// sent on its own connection before older answers are read), so the monitor's
/// accept queue is never empty, as on a node where probes, stats and status polls
/// come faster than one monitor answers them. Counts the answers.
fn hammer(socket: PathBuf, stop: Arc<AtomicBool>, answered: Arc<AtomicU64>) {
    let mut in_flight = std::collections::VecDeque::new();
    let read_answer = |conn: UnixStream| {
        let mut line = String::new();
        if BufReader::new(&conn).read_line(&mut line).is_ok() && line.contains("\"ok\":true") {
            answered.fetch_add(1, Ordering::Relaxed);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut conn) = UnixStream::connect(&socket)
            && conn.set_read_timeout(Some(Duration::from_secs(5))).is_ok()
            && conn.write_all(b"{\"op\":\"ping\"}\n").is_ok()
        {
            in_flight.push_back(conn);
        }
        if in_flight.len() >= 64
            && let Some(oldest) = in_flight.pop_front()
        {
            read_answer(oldest);
        }
    }
    in_flight.into_iter().for_each(read_answer);
}

/// Whether process `pid` exists at all (a zombie, not yet reaped, does).
fn process_exists(pid: i64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Follow-up 6. The monitor's loop went straight back to poll after a turn that
/// served connections, skipping SIGCHLD: under constant connection traffic (here
/// two clients keeping 64 pings each in flight, as probes and status polls do on a
/// busy node) a killed container was never reaped, so StopContainer waited for an
/// exit that was never recorded. Now exits are reaped in every turn, and output gets
/// a turn after a few connection-only ones: the container's output keeps reaching its
/// log and the stop completes while the traffic goes on.
#[tokio::test(flavor = "multi_thread")]
async fn review6_monitor_reaps_under_constant_connection_traffic() {
    let w = world("busy-monitor", "", &SpawnOptions::default()).await;
    let pod = w.run_pod(&PodOptions::named("busy")).await;
    let id = w
        .run(
            &pod,
            w.config(
                "c",
                &[
                    "sh",
                    "-c",
                    "echo started; while true; do echo tick; sleep 1; done",
                ],
            ),
        )
        .await;
    let pid = w.verbose_info(&id).await["pid"]
        .as_i64()
        .expect("a running container has a pid");
    let socket =
        w.sb.state()
            .join("sock")
            .join(format!("{}.sock", &pod[..20]));
    assert!(socket.exists(), "monitor socket at {}", socket.display());

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (socket, stop, answered) = (socket.clone(), stop.clone(), answered.clone());
            std::thread::spawn(move || hammer(socket, stop, answered))
        })
        .collect();
    // The traffic is on before the stop.
    while answered.load(Ordering::Relaxed) < 2000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Output keeps reaching the log during the traffic: two more ticks get there.
    let log_path = w.logs.join("busy").join("c.log");
    let ticks = || {
        fs::read_to_string(&log_path)
            .unwrap_or_default()
            .matches("tick")
            .count()
    };
    let before = ticks();
    let drained = tokio::time::timeout(ANSWER_WITHIN, async {
        while ticks() < before + 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok();
    let t0 = Instant::now();
    let stopped = tokio::time::timeout(ANSWER_WITHIN, async {
        w.d.runtime()
            .await
            .expect("connect")
            .stop_container(StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            })
            .await
    })
    .await;
    let status = w.d.container_status(&id).await;
    // Reaped by the monitor while the traffic goes on: not even a zombie is left.
    let reaped = tokio::time::timeout(ANSWER_WITHIN, async {
        while process_exists(pid) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .is_ok();
    let during = answered.load(Ordering::Relaxed);
    eprintln!(
        "{during} pings answered by the monitor; StopContainer took {:?}",
        t0.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert!(
        drained,
        "no output reached the log within {ANSWER_WITHIN:?} under monitor traffic ({before} ticks before)"
    );
    assert!(
        reaped,
        "the killed container (pid {pid}) was not reaped within {ANSWER_WITHIN:?} under monitor traffic ({during} pings answered)"
    );
    assert!(
        matches!(stopped, Ok(Ok(_))),
        "StopContainer under monitor traffic ({during} pings answered): {stopped:?}\n{}",
        w.d.logs()
    );
    assert_eq!(
        status.state,
        i32::from(ContainerState::ContainerExited),
        "{status:?}"
    );
    assert_eq!(status.exit_code, 137, "{status:?}");
    let log = fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("started"), "{log:?}");
}

/// An image whose only layer is `size` bytes of zeros: a few KiB of gzip.
fn bomb(size: usize) -> Image {
    let mut layer = LayerBuilder::new();
    layer.file("zeros", &vec![0u8; size], 0o644);
    Image::build(
        vec![layer.finish(Compression::Gzip)],
        host_arch(),
        serde_json::json!({"Cmd": ["sh"]}),
    )
}

/// Follow-up 8. A layer of 64 MiB of zeros is ~64 KiB of gzip: its declared
/// (compressed) size is honest, and before it unpacked whole, as a real bomb of
/// terabytes would have until the disk was full. Now `[image]
/// max_layer_unpacked_bytes` (here 8 MiB) stops it: PullImage fails naming the knob,
/// no more than the bound reached the disk, the partial unpack is gone, and an image
/// under the bound still pulls.
#[tokio::test(flavor = "multi_thread")]
async fn review8_gzip_bomb_stops_at_max_layer_unpacked_bytes() {
    const LIMIT: u64 = 8 << 20;
    let w = world(
        "bomb-world",
        &format!("[image]\nmax_layer_unpacked_bytes = {LIMIT}\n"),
        &SpawnOptions::default(),
    )
    .await;
    let image = bomb(64 << 20);
    let blob = image.layers[0].blob.len();
    assert!(blob < 1 << 20, "the bomb is small: {blob} bytes");
    w.registry
        .push_image("bomb", &["v1"], &image)
        .await
        .unwrap();
    let name = format!("{}/bomb:v1", w.registry.host());
    let layers = w.sb.root().join("image/layers");
    let layers_before: Vec<_> = fs::read_dir(&layers)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let tmp = w.sb.root().join("image/tmp");

    let mut client = w.d.image().await.unwrap();
    let pulling = tokio::spawn({
        let name = name.clone();
        async move {
            client
                .pull_image(PullImageRequest {
                    image: Some(ImageSpec {
                        image: name,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
        }
    });
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pulling.is_finished() {
        most = most.max(bytes_below(&tmp));
        assert!(Instant::now() < deadline, "the pull never ended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let answer = pulling.await.unwrap();
    let err = answer.expect_err("the bomb is refused");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("max_layer_unpacked_bytes")
            && err.message().contains(&LIMIT.to_string()),
        "{}",
        err.message()
    );
    assert!(
        most <= LIMIT,
        "{most} bytes of the bomb reached {}",
        tmp.display()
    );
    let left: Vec<_> = fs::read_dir(&tmp)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "partial unpack left: {left:?}");
    let layers_after: Vec<_> = fs::read_dir(&layers)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(layers_after.len(), layers_before.len(), "no layer kept");
    let listed =
        w.d.image()
            .await
            .unwrap()
            .list_images(ListImagesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .images;
    assert_eq!(listed.len(), 1, "only the world's image: {listed:?}");

    // Under the bound, the same kind of layer pulls.
    w.registry
        .push_image("small", &["v1"], &bomb(4 << 20))
        .await
        .unwrap();
    let small = format!("{}/small:v1", w.registry.host());
    w.d.image()
        .await
        .unwrap()
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: small.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("pull {small}: {e}"));
    w.d.assert_alive("the bomb", ANSWER_WITHIN).await;
}
