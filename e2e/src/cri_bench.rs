//! The CRI benchmark behind `bench-cri`: drives any CRI endpoint through the CRI API
//! only, so the same code measures crust and containerd.
//!
//! - Latency: after the images are pulled and one unrecorded warm-up round, N rounds
//!   of RunPodSandbox; CreateContainer+StartContainer (`sleep 3600`); ExecSync `true`;
//!   StopContainer+RemoveContainer (timeout 0); StopPodSandbox+RemovePodSandbox; and
//!   the whole pod+container start (RunPodSandbox through StartContainer returning).
//! - Density: M pods with one `sleep` container each, started `concurrency` at a time;
//!   time until all run; RSS and PSS (`/proc/<pid>/smaps_rollup`) of the daemon and of
//!   the per-pod processes, found by PID through `PodSandboxStatus` (verbose): the
//!   helper (crust: `monitor.pid`; otherwise the parent of the pod's sandbox process,
//!   containerd's shim) and the pod infra process (crust: `init.pid`; containerd:
//!   `pid`, the pause process); then the teardown time.
//!
//! Every pod carries the label `crust-bench=<run id>`; after the run (or a failure)
//! whatever still carries it is stopped and removed, and the count that had to be is
//! reported.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};
use tonic::transport::Channel;

pub mod breakdown;
mod churn;
mod procs;
mod report;

pub use churn::{Churn, churn};

pub use procs::{parent_pid, smaps_rollup, socket_owner};
pub use report::{Density, Memory, Report, Row, print_comparison, ratio_json};

use crate::{
    image_builder::{Compression, Image, LayerBuilder, host_arch},
    registry::Registry,
};
use crust_proto::runtime::v1::{
    ContainerConfig, ContainerFilter, ContainerMetadata, CreateContainerRequest, ExecSyncRequest,
    ImageSpec, LinuxPodSandboxConfig, ListContainersRequest, ListPodSandboxRequest,
    PodSandboxConfig, PodSandboxFilter, PodSandboxMetadata, PodSandboxStatusRequest,
    PullImageRequest, RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StatusRequest, StopContainerRequest, StopPodSandboxRequest,
    VersionRequest, runtime_service_client::RuntimeServiceClient,
};

type Runtime = RuntimeServiceClient<Channel>;

const LABEL: &str = "crust-bench";
const RPC_TIMEOUT: Duration = Duration::from_secs(300);

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Latency rounds (N).
    pub iterations: usize,
    /// Density pods (0: no density run).
    pub pods: usize,
    pub concurrency: usize,
    /// The container image (busybox with `sleep` and `true`), pulled first.
    pub image: String,
    /// More images to pull first (containerd's pause image), not timed.
    pub pre_pull: Vec<String>,
    /// Where the pods' log directories go.
    pub log_dir: PathBuf,
    /// Every timed RPC group of a latency round on a connection of its own, made
    /// inside the timed span, as a CLI (one process per command) sees it; otherwise
    /// one connection for the whole run, as kubelet keeps it.
    pub fresh_connections: bool,
}

/// The runtime under test.
#[derive(Clone, Debug)]
pub struct Target {
    /// Label in the output (`crust`, `containerd`).
    pub name: String,
    pub endpoint: String,
    /// The daemon's PID, for its memory; found from the socket if `None`.
    pub daemon_pid: Option<i32>,
}

/// The test images in a registry: busybox (`sh`, `sleep`, `true`) and a pause image
/// for containerd's sandboxes (busybox `sleep`, as small as pause in what it maps).
pub struct TestImages {
    pub busybox: String,
    pub pause: String,
}

pub async fn push_test_images(registry: &Registry) -> anyhow::Result<TestImages> {
    let mut layer = LayerBuilder::new();
    layer.busybox(&["sh", "sleep", "true"])?;
    for dir in ["etc", "proc", "sys", "dev", "tmp"] {
        layer.dir(dir, 0o755);
    }
    layer
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .file("etc/group", b"root:x:0:\n", 0o644);
    let busybox = Image::build(
        vec![layer.finish(Compression::Gzip)],
        host_arch(),
        json!({"Cmd": ["sh"], "Env": ["PATH=/bin"]}),
    );
    registry
        .push_image("bench/busybox", &["v1"], &busybox)
        .await?;
    let mut layer = LayerBuilder::new();
    layer.busybox(&["sleep"])?;
    let pause = Image::build(
        vec![layer.finish(Compression::Gzip)],
        host_arch(),
        json!({"Entrypoint": ["/bin/sleep", "2147483647"], "Env": ["PATH=/bin"]}),
    );
    registry.push_image("bench/pause", &["v1"], &pause).await?;
    Ok(TestImages {
        busybox: format!("{}/bench/busybox:v1", registry.host()),
        pause: format!("{}/bench/pause:v1", registry.host()),
    })
}

/// Runs the benchmark against `target`.
pub async fn run(target: &Target, opts: &Options) -> anyhow::Result<Report> {
    let mut reports = run_sides(&[(target, opts)]).await?;
    Ok(reports.pop().expect("one report"))
}

/// Two runtimes measured side by side ([`run`]'s rounds, alternated): after both are
/// prepared and warmed up, latency round `i` runs on one and then the other, the
/// order swapped every round, so a load change during the run falls on both halves
/// alike. Density runs after, one runtime at a time (the other idle). Each runtime
/// is cleaned up whatever happened.
pub async fn run_interleaved(
    a: (&Target, &Options),
    b: (&Target, &Options),
) -> anyhow::Result<(Report, Report)> {
    let mut reports = run_sides(&[a, b]).await?;
    let b_report = reports.pop().expect("two reports");
    let a_report = reports.pop().expect("two reports");
    Ok((a_report, b_report))
}

/// Prepares every runtime, runs their latency rounds alternated and then their
/// density, and cleans each up whatever happened: one report per runtime, in order.
async fn run_sides(targets: &[(&Target, &Options)]) -> anyhow::Result<Vec<Report>> {
    let mut sides = Vec::new();
    for (target, opts) in targets {
        let (rt, version, daemon_pid) = prepare(target, opts).await?;
        let bench = Bench {
            run_id: format!("{}-{}", std::process::id(), unique()),
            opts: (*opts).clone(),
            endpoint: target.endpoint.clone(),
        };
        sides.push(Side {
            target: (*target).clone(),
            rt,
            version,
            daemon_pid,
            bench,
            rows: Vec::new(),
        });
    }
    let result = interleave(&mut sides).await;
    let mut leftovers = Vec::new();
    for side in &mut sides {
        // Whatever the run left (all of it on a failure), on every runtime.
        leftovers.push(side.bench.cleanup(&mut side.rt).await);
    }
    let densities = result?;
    let mut reports = Vec::new();
    for ((side, left), density) in sides.into_iter().zip(leftovers).zip(densities) {
        let (leftover_pods, leftover_containers) = left?;
        reports.push(Report {
            target: side.target.name,
            endpoint: side.target.endpoint,
            version: side.version,
            iterations: side.bench.opts.iterations,
            rows: side.rows,
            density,
            leftover_pods,
            leftover_containers,
        });
    }
    Ok(reports)
}

/// One runtime of a run.
struct Side {
    target: Target,
    rt: Runtime,
    version: String,
    daemon_pid: Option<i32>,
    bench: Bench,
    rows: Vec<Row>,
}

/// The warm-ups, the alternated latency rounds, then each side's density.
async fn interleave(sides: &mut [Side]) -> anyhow::Result<Vec<Option<Density>>> {
    let iterations = sides[0].bench.opts.iterations;
    for side in sides.iter_mut() {
        side.rows = ROW_NAMES
            .iter()
            .map(|&name| Row {
                name,
                samples: Vec::new(),
            })
            .collect();
        if iterations > 0 {
            side.bench.round(&mut side.rt, "warmup").await?;
        }
    }
    for i in 0..iterations {
        // Each round starts with the next runtime: with two, the order swaps.
        let n = sides.len();
        for k in (0..n).map(|k| (k + i) % n) {
            let side = &mut sides[k];
            let sample = side.bench.round(&mut side.rt, &format!("lat-{i}")).await?;
            for (row, v) in side.rows.iter_mut().zip(sample) {
                row.samples.push(v);
            }
        }
    }
    let mut densities = Vec::new();
    for side in sides.iter_mut() {
        for row in &mut side.rows {
            row.samples.sort_by(f64::total_cmp);
        }
        densities.push(if side.bench.opts.pods > 0 {
            Some(side.bench.density(&mut side.rt, side.daemon_pid).await?)
        } else {
            None
        });
    }
    Ok(densities)
}

/// The latency rows, in [`Bench::round`]'s order.
const ROW_NAMES: [&str; 6] = [
    "RunPodSandbox",
    "CreateContainer+StartContainer",
    "ExecSync true",
    "StopContainer+RemoveContainer",
    "StopPodSandbox+RemovePodSandbox",
    "pod+container start-to-running",
];

/// Connects, waits for the network, pulls the images: returns the client, the
/// runtime's name and version, and the daemon's PID if known.
async fn prepare(
    target: &Target,
    opts: &Options,
) -> anyhow::Result<(Runtime, String, Option<i32>)> {
    let channel = crust_ctl::connect(&target.endpoint, RPC_TIMEOUT)
        .await
        .with_context(|| format!("connect to {}", target.endpoint))?;
    let mut rt = crust_ctl::runtime_client(channel.clone());
    let mut images = crust_ctl::image_client(channel);
    let v = rt.version(VersionRequest::default()).await?.into_inner();
    let version = format!("{} {}", v.runtime_name, v.runtime_version);
    let daemon_pid = match target.daemon_pid {
        Some(pid) => Some(pid),
        None => target
            .endpoint
            .strip_prefix("unix://")
            .and_then(|p| socket_owner(Path::new(p))),
    };
    wait_network_ready(&mut rt).await?;
    for image in opts.pre_pull.iter().chain([&opts.image]) {
        images
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                auth: None,
                sandbox_config: None,
            })
            .await
            .with_context(|| format!("PullImage {image} on {}", target.endpoint))?;
    }
    Ok((rt, version, daemon_pid))
}

/// Waits (up to 30 s) until `Status` reports NetworkReady: containerd loads its CNI
/// config asynchronously after it starts serving.
async fn wait_network_ready(rt: &mut Runtime) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = rt
            .status(StatusRequest { verbose: false })
            .await?
            .into_inner();
        let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
        if conditions
            .iter()
            .any(|c| c.r#type == "NetworkReady" && c.status)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("runtime network not ready after 30s: {conditions:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000)
        .unwrap_or(0)
}

struct Bench {
    run_id: String,
    opts: Options,
    endpoint: String,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

impl Bench {
    fn labels(&self) -> HashMap<String, String> {
        HashMap::from([(LABEL.to_string(), self.run_id.clone())])
    }

    fn pod_config(&self, name: &str) -> anyhow::Result<PodSandboxConfig> {
        let log_directory = self.opts.log_dir.join(name);
        fs::create_dir_all(&log_directory)?;
        Ok(PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_string(),
                uid: format!("{}-{name}", self.run_id),
                namespace: "bench".into(),
                attempt: 0,
            }),
            hostname: name.to_string(),
            log_directory: log_directory.display().to_string(),
            labels: self.labels(),
            linux: Some(LinuxPodSandboxConfig::default()),
            ..Default::default()
        })
    }

    async fn run_pod(&self, rt: &mut Runtime, config: &PodSandboxConfig) -> anyhow::Result<String> {
        Ok(rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .context("RunPodSandbox")?
            .into_inner()
            .pod_sandbox_id)
    }

    async fn start_container(
        &self,
        rt: &mut Runtime,
        pod: &str,
        pod_config: &PodSandboxConfig,
    ) -> anyhow::Result<String> {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "sleep".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.opts.image.clone(),
                ..Default::default()
            }),
            command: vec!["sleep".into(), "3600".into()],
            log_path: "sleep.log".into(),
            labels: self.labels(),
            ..Default::default()
        };
        let id = rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.to_string(),
                config: Some(config),
                sandbox_config: Some(pod_config.clone()),
            })
            .await
            .context("CreateContainer")?
            .into_inner()
            .container_id;
        rt.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .context("StartContainer")?;
        Ok(id)
    }

    async fn remove_container(&self, rt: &mut Runtime, id: &str) -> anyhow::Result<()> {
        rt.stop_container(StopContainerRequest {
            container_id: id.to_string(),
            timeout: 0,
        })
        .await
        .context("StopContainer")?;
        rt.remove_container(RemoveContainerRequest {
            container_id: id.to_string(),
        })
        .await
        .context("RemoveContainer")?;
        Ok(())
    }

    async fn remove_pod(&self, rt: &mut Runtime, id: &str) -> anyhow::Result<()> {
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .context("StopPodSandbox")?;
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .context("RemovePodSandbox")?;
        Ok(())
    }

    /// The client for one timed group of RPCs: the run's own, or (with
    /// `fresh_connections`) a new connection, made while the clock runs.
    async fn client(&self, rt: &Runtime) -> anyhow::Result<Runtime> {
        if !self.opts.fresh_connections {
            return Ok(rt.clone());
        }
        let channel = crust_ctl::connect(&self.endpoint, RPC_TIMEOUT)
            .await
            .with_context(|| format!("connect to {}", self.endpoint))?;
        Ok(crust_ctl::runtime_client(channel))
    }

    /// One latency round: [run pod, create+start, exec, stop+remove container,
    /// stop+remove pod, pod+container start] in ms.
    async fn round(&self, shared: &mut Runtime, name: &str) -> anyhow::Result<[f64; 6]> {
        let config = self.pod_config(name)?;
        let t0 = Instant::now();
        let mut rt = self.client(shared).await?;
        let pod = self.run_pod(&mut rt, &config).await?;
        let run_pod = ms(t0);
        let t = Instant::now();
        let mut rt = self.client(shared).await?;
        let ctr = self.start_container(&mut rt, &pod, &config).await?;
        let start = ms(t);
        let pod_and_container = ms(t0);
        let t = Instant::now();
        let mut rt = self.client(shared).await?;
        let exec = rt
            .exec_sync(ExecSyncRequest {
                container_id: ctr.clone(),
                cmd: vec!["true".into()],
                timeout: 10,
            })
            .await
            .context("ExecSync")?
            .into_inner();
        let exec_ms = ms(t);
        if exec.exit_code != 0 {
            bail!(
                "ExecSync true exited {}: {}",
                exec.exit_code,
                String::from_utf8_lossy(&exec.stderr)
            );
        }
        let t = Instant::now();
        let mut rt = self.client(shared).await?;
        self.remove_container(&mut rt, &ctr).await?;
        let remove_ctr = ms(t);
        let t = Instant::now();
        let mut rt = self.client(shared).await?;
        self.remove_pod(&mut rt, &pod).await?;
        let remove_pod = ms(t);
        Ok([
            run_pod,
            start,
            exec_ms,
            remove_ctr,
            remove_pod,
            pod_and_container,
        ])
    }

    async fn density(&self, rt: &mut Runtime, daemon_pid: Option<i32>) -> anyhow::Result<Density> {
        let daemon_pids: Vec<i32> = daemon_pid.into_iter().collect();
        let daemon_idle = Memory::of(&daemon_pids);
        let concurrency = self.opts.concurrency.max(1);
        let t = Instant::now();
        let pods: Vec<(String, String)> = stream::iter(0..self.opts.pods)
            .map(|i| {
                let mut rt = rt.clone();
                async move {
                    let config = self.pod_config(&format!("density-{i}"))?;
                    let pod = self.run_pod(&mut rt, &config).await?;
                    let ctr = self.start_container(&mut rt, &pod, &config).await?;
                    anyhow::Ok((pod, ctr))
                }
            })
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        let start_s = t.elapsed().as_secs_f64();

        let mut helpers = Vec::new();
        let mut infra = Vec::new();
        for (pod, _) in &pods {
            let (h, i) = pod_processes(rt, pod).await?;
            helpers.extend(h);
            infra.extend(i);
        }
        helpers.sort_unstable();
        helpers.dedup();
        let daemon = Memory::of(&daemon_pids);
        let helpers = Memory::of(&helpers);
        let infra = Memory::of(&infra);

        let t = Instant::now();
        stream::iter(pods)
            .map(|(pod, ctr)| {
                let mut rt = rt.clone();
                async move {
                    self.remove_container(&mut rt, &ctr).await?;
                    self.remove_pod(&mut rt, &pod).await
                }
            })
            .buffer_unordered(concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        let teardown_s = t.elapsed().as_secs_f64();
        Ok(Density {
            pods: self.opts.pods,
            concurrency,
            start_s,
            teardown_s,
            daemon_idle,
            daemon,
            helpers,
            infra,
        })
    }

    /// Stops and removes everything labelled with this run; returns how many pods and
    /// containers there were.
    async fn cleanup(&self, rt: &mut Runtime) -> anyhow::Result<(usize, usize)> {
        let selector = self.labels();
        let containers = rt
            .list_containers(ListContainersRequest {
                filter: Some(ContainerFilter {
                    label_selector: selector.clone(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .containers;
        let pods = rt
            .list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(PodSandboxFilter {
                    label_selector: selector,
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .items;
        for c in &containers {
            if let Err(e) = self.remove_container(rt, &c.id).await {
                eprintln!("cleanup: container {}: {e:#}", c.id);
            }
        }
        for p in &pods {
            if let Err(e) = self.remove_pod(rt, &p.id).await {
                eprintln!("cleanup: pod {}: {e:#}", p.id);
            }
        }
        Ok((pods.len(), containers.len()))
    }
}

/// The pod's helper process (crust's monitor; otherwise the parent of the sandbox
/// process, containerd's shim) and its infra process (crust's pod init; containerd's
/// pause), from `PodSandboxStatus` verbose info.
async fn pod_processes(rt: &mut Runtime, pod: &str) -> anyhow::Result<(Option<i32>, Option<i32>)> {
    let status = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.to_string(),
            verbose: true,
        })
        .await?
        .into_inner();
    let info: Value = status
        .info
        .get("info")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    let pid = |v: &Value| v.as_i64().filter(|&p| p > 0).map(|p| p as i32);
    let infra = pid(&info["init"]["pid"]).or_else(|| pid(&info["pid"]));
    let helper = pid(&info["monitor"]["pid"]).or_else(|| infra.and_then(parent_pid));
    Ok((helper, infra))
}
