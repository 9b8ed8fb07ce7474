//! Pod start benchmark: starts crustd on a temp root, runs N pods one after another,
//! and prints RunPodSandbox latency (p50/p95/max), StopPodSandbox+RemovePodSandbox
//! latency and the monitors' memory. Prints numbers; never passes or fails on them.
//!
//! `cargo build --release --bins && ./target/release/bench-pods [N]` (as root).

use crust_e2e::bench::{percentile, proc_kib};
use std::{fs, time::Instant};

use crust_e2e::{Sandbox, cni::TestNetwork};
use crust_proto::runtime::v1::{
    LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest,
    RunPodSandboxRequest, StopPodSandboxRequest,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(50);
    let sb = Sandbox::new()?;
    // A bridge + host-local + portmap network of its own, as a node would have.
    let _net = TestNetwork::install(&sb, &[]);
    let mut d = sb.start()?;
    d.wait_ready().await?;
    let mut client = d.runtime().await?;

    let mut run_ms = Vec::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: format!("bench-{i}"),
                uid: format!("uid-{i}"),
                namespace: "bench".into(),
                attempt: 0,
            }),
            hostname: format!("bench-{i}"),
            linux: Some(LinuxPodSandboxConfig::default()),
            ..Default::default()
        };
        let start = Instant::now();
        let id = client
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        run_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        ids.push(id);
    }
    // Monitors only (not the pod inits), from each pod's monitor.json.
    let monitors: Vec<i32> = fs::read_dir(sb.state().join("pods"))?
        .flatten()
        .filter_map(|e| fs::read(e.path().join("monitor.json")).ok())
        .filter_map(|b| serde_json::from_slice::<crust_runtime::monitor::MonitorPids>(&b).ok())
        .map(|p| p.monitor.pid)
        .collect();
    let rss: Vec<u64> = monitors.iter().map(|&p| proc_kib(p, "VmRSS:")).collect();
    let pss: Vec<u64> = monitors.iter().map(|&p| proc_kib(p, "Pss:")).collect();
    let crustd_rss = proc_kib(d.pid().as_raw(), "VmRSS:");

    let mut teardown_ms = Vec::new();
    for id in ids {
        let start = Instant::now();
        client
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
        client
            .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await?;
        teardown_ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    run_ms.sort_by(f64::total_cmp);
    teardown_ms.sort_by(f64::total_cmp);
    println!(
        "pods: {n} (sequential; network, ipc and pid all POD, so each has a pod init; CNI bridge + host-local + portmap)"
    );
    println!(
        "RunPodSandbox ms: p50 {:.2}  p95 {:.2}  max {:.2}",
        percentile(&run_ms, 0.5),
        percentile(&run_ms, 0.95),
        run_ms[run_ms.len() - 1]
    );
    println!(
        "Stop+RemovePodSandbox ms: p50 {:.2}  p95 {:.2}",
        percentile(&teardown_ms, 0.5),
        percentile(&teardown_ms, 0.95)
    );
    let avg = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    println!(
        "monitor memory KiB: RSS avg {:.0} max {}  PSS avg {:.0}  ({} monitors)",
        avg(&rss),
        rss.iter().max().copied().unwrap_or(0),
        avg(&pss),
        monitors.len()
    );
    println!("crustd RSS with {n} pods: {crustd_rss} KiB");
    Ok(())
}
