//! Container benchmark: starts a loopback registry with a busybox image and crustd on a
//! temp root, runs one pod, and prints CreateContainer+StartContainer latency
//! (p50/p95/max), ExecSync latency (p50/p95), the streaming Exec round trip over SPDY and
//! WebSocket (p50/p95) and the pod monitor's memory with 1 and
//! with 5 running containers. Prints numbers; never passes or fails on them.
//!
//! `cargo build --release --bins && ./target/release/bench-containers [N]` (as root).

use crust_ctl::stream_client::{StreamOpts, Transport, exec_collect};
use crust_e2e::bench::{memory_by_mapping, percentile, proc_kib};
use std::time::Instant;

use crust_e2e::{
    Sandbox,
    cni::TestNetwork,
    image_builder::{Compression, Image, LayerBuilder, host_arch},
    registry::Registry,
};
use crust_proto::runtime::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ExecRequest, ExecSyncRequest,
    ImageSpec, LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxMetadata,
    PodSandboxStatusRequest, PullImageRequest, RemoveContainerRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
    runtime_service_client::RuntimeServiceClient,
};
use serde_json::json;
use tonic::transport::Channel;

fn busybox_image() -> anyhow::Result<Image> {
    let mut layer = LayerBuilder::new();
    layer.busybox(&["sh", "sleep", "true"])?;
    for dir in ["etc", "proc", "sys", "dev", "tmp"] {
        layer.dir(dir, 0o755);
    }
    layer
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .file("etc/group", b"root:x:0:\n", 0o644);
    Ok(Image::build(
        vec![layer.finish(Compression::Gzip)],
        host_arch(),
        json!({"Cmd": ["sh"], "Env": ["PATH=/bin"]}),
    ))
}

struct Pod {
    id: String,
    config: PodSandboxConfig,
    image: String,
}

impl Pod {
    /// Creates and starts a `sleep 1000` container; returns its id and the create+start time.
    async fn run(
        &self,
        rt: &mut RuntimeServiceClient<Channel>,
        name: &str,
    ) -> anyhow::Result<(String, f64)> {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: vec!["sleep".into(), "1000".into()],
            log_path: format!("{name}.log"),
            ..Default::default()
        };
        let req = CreateContainerRequest {
            pod_sandbox_id: self.id.clone(),
            config: Some(config),
            sandbox_config: Some(self.config.clone()),
        };
        let start = Instant::now();
        let id = rt.create_container(req).await?.into_inner().container_id;
        rt.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await?;
        Ok((id, start.elapsed().as_secs_f64() * 1000.0))
    }
}

async fn stop_remove(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> anyhow::Result<()> {
    rt.stop_container(StopContainerRequest {
        container_id: id.into(),
        timeout: 0,
    })
    .await?;
    rt.remove_container(RemoveContainerRequest {
        container_id: id.into(),
    })
    .await?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(50)
        .max(1);
    let registry = Registry::start().await?;
    registry
        .push_image("bench/busybox", &["v1"], &busybox_image()?)
        .await?;
    let image = format!("{}/bench/busybox:v1", registry.host());
    let sb = Sandbox::new()?;
    // A bridge + host-local + portmap network of its own, as a node would have.
    let _net = TestNetwork::install(&sb, &[]);
    let mut d = sb.start()?;
    d.wait_ready().await?;
    let pull = PullImageRequest {
        image: Some(ImageSpec {
            image: image.clone(),
            ..Default::default()
        }),
        auth: None,
        sandbox_config: None,
    };
    d.image().await?.pull_image(pull).await?;
    let mut rt = d.runtime().await?;

    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "bench".into(),
            uid: "uid-bench".into(),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: "bench".into(),
        log_directory: sb.path().join("logs").display().to_string(),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let run = RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: String::new(),
    };
    let pod = Pod {
        id: rt.run_pod_sandbox(run).await?.into_inner().pod_sandbox_id,
        config,
        image,
    };
    let status = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.id.clone(),
            verbose: true,
        })
        .await?
        .into_inner();
    let info: serde_json::Value =
        serde_json::from_str(status.info.get("info").map(String::as_str).unwrap_or("{}"))?;
    let monitor = info["monitor"]["pid"].as_i64().unwrap_or(0) as i32;

    // 1. Create+start, then stop+remove, one container after another.
    let mut start_ms = Vec::new();
    for i in 0..n {
        let (id, ms) = pod.run(&mut rt, &format!("c-{i}")).await?;
        start_ms.push(ms);
        stop_remove(&mut rt, &id).await?;
    }

    // 2. ExecSync `true` in a running container.
    let mut running = vec![pod.run(&mut rt, "exec-target").await?.0];
    let mut exec_ms = Vec::new();
    let mut exec_failures = 0;
    for _ in 0..n {
        let req = ExecSyncRequest {
            container_id: running[0].clone(),
            cmd: vec!["true".into()],
            timeout: 10,
        };
        let start = Instant::now();
        let r = rt.exec_sync(req).await?.into_inner();
        exec_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        exec_failures += usize::from(r.exit_code != 0);
    }

    // 2b. Exec (streaming) round trip: the Exec RPC, the upgrade to SPDY or WebSocket,
    // `true` in the container and its exit status back, as `kubectl exec` does it.
    let mut stream_ms: Vec<(Transport, Vec<f64>)> = Vec::new();
    for transport in [Transport::Spdy, Transport::WebSocket] {
        let mut ms = Vec::new();
        for _ in 0..n {
            let start = Instant::now();
            let url = rt
                .exec(ExecRequest {
                    container_id: running[0].clone(),
                    cmd: vec!["true".into()],
                    stdout: true,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .url;
            let opts = StreamOpts {
                stdout: true,
                ..Default::default()
            };
            let out = exec_collect(&url, transport, opts, b"").await?;
            ms.push(start.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(out.exit_code == 0, "exec true exited {}", out.exit_code);
        }
        ms.sort_by(f64::total_cmp);
        stream_ms.push((transport, ms));
    }

    // 3. The pod monitor's memory with 1, then 5 running containers.
    let mem = |pid: i32| (proc_kib(pid, "VmRSS:"), proc_kib(pid, "Pss:"));
    let one = mem(monitor);
    for i in 1..5 {
        running.push(pod.run(&mut rt, &format!("extra-{i}")).await?.0);
    }
    let five = mem(monitor);
    let breakdown = memory_by_mapping(monitor);

    for id in &running {
        stop_remove(&mut rt, id).await?;
    }
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await?;
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await?;

    start_ms.sort_by(f64::total_cmp);
    exec_ms.sort_by(f64::total_cmp);
    println!(
        "containers: {n} (sequential, `sleep 1000` in one pod; each stopped with timeout 0 and removed before the next)"
    );
    println!(
        "CreateContainer+StartContainer ms: p50 {:.2}  p95 {:.2}  max {:.2}",
        percentile(&start_ms, 0.5),
        percentile(&start_ms, 0.95),
        start_ms[start_ms.len() - 1]
    );
    println!(
        "ExecSync [true] ms: p50 {:.2}  p95 {:.2}  ({n} runs, {exec_failures} non-zero exits)",
        percentile(&exec_ms, 0.5),
        percentile(&exec_ms, 0.95)
    );
    for (transport, ms) in &stream_ms {
        println!(
            "Exec [true] round trip over {transport:?} ms: p50 {:.2}  p95 {:.2}  ({n} runs)",
            percentile(ms, 0.5),
            percentile(ms, 0.95)
        );
    }
    println!(
        "monitor (pid {monitor}) memory KiB with 1 running container (after the execs): RSS {}  PSS {}",
        one.0, one.1
    );
    println!(
        "monitor (pid {monitor}) memory KiB with 5 running containers: RSS {}  PSS {}",
        five.0, five.1
    );
    for (kind, rss, pss) in breakdown {
        println!("  {kind}: RSS {rss}  PSS {pss}");
    }
    Ok(())
}
