//! Container and pod stats: ContainerStats, ListContainerStats, PodSandboxStats,
//! ListPodSandboxStats and their Stream* twins. Pod stats carry the pod's network
//! counters (read inside its network namespace) and its process count.

use std::{path::Path, sync::Arc};

use crust_network::{InterfaceCounters, POD_IFNAME, interface_counters};
use crust_proto::runtime::v1 as cri;
use crust_runtime::{
    container::{ContainerFilter, ContainerState, ContainerStatsView, UsageSample},
    sandbox::Sandbox,
};

use crate::{
    daemon::Daemon,
    error::ApiError,
    rpc::{list_pod_sandbox_metrics::PROC_ROOT, off_runtime},
};

/// Stats per Stream* message.
pub const STREAM_BATCH: usize = 128;

fn value(v: Option<u64>) -> Option<cri::UInt64Value> {
    v.map(|value| cri::UInt64Value { value })
}

/// CRI's PsiData: `Total` in nanoseconds (the kernel writes microseconds).
fn psi(p: Option<crust_runtime::cgroup::Psi>) -> Option<cri::PsiStats> {
    let data = |l: crust_runtime::cgroup::PsiLine| cri::PsiData {
        total: l.total_us.saturating_mul(1000),
        avg10: l.avg10,
        avg60: l.avg60,
        avg300: l.avg300,
    };
    p.map(|p| cri::PsiStats {
        full: p.full.map(data),
        some: Some(data(p.some)),
    })
}

fn cpu(s: &UsageSample) -> cri::CpuUsage {
    cri::CpuUsage {
        timestamp: s.timestamp,
        usage_core_nano_seconds: value(s.usage.cpu_ns),
        usage_nano_cores: value(s.nano_cores),
        psi: psi(s.usage.cpu_psi),
    }
}

fn io(s: &UsageSample) -> Option<cri::IoUsage> {
    s.usage.io_psi.map(|p| cri::IoUsage {
        timestamp: s.timestamp,
        psi: psi(Some(p)),
    })
}

fn swap(s: &UsageSample) -> Option<cri::SwapUsage> {
    s.usage.swap_usage.map(|used| cri::SwapUsage {
        timestamp: s.timestamp,
        swap_available_bytes: value(s.usage.swap_available),
        swap_usage_bytes: value(Some(used)),
    })
}

fn memory(s: &UsageSample) -> cri::MemoryUsage {
    let u = &s.usage;
    cri::MemoryUsage {
        timestamp: s.timestamp,
        working_set_bytes: value(u.working_set),
        available_bytes: value(u.available),
        usage_bytes: value(u.memory_usage),
        rss_bytes: value(u.rss),
        page_faults: value(u.page_faults),
        major_page_faults: value(u.major_page_faults),
        psi: psi(u.memory_psi),
    }
}

fn container_stats(v: &ContainerStatsView) -> cri::ContainerStats {
    let c = &v.container;
    cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: c.id.clone(),
            metadata: Some(cri::ContainerMetadata {
                name: c.spec.metadata.name.clone(),
                attempt: c.spec.metadata.attempt,
            }),
            labels: c.spec.labels.clone().into_iter().collect(),
            annotations: c.spec.annotations.clone().into_iter().collect(),
        }),
        cpu: Some(cpu(&v.sample)),
        memory: Some(memory(&v.sample)),
        writable_layer: Some(cri::FilesystemUsage {
            timestamp: v.sample.timestamp,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: v.writable_dir.display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value {
                value: v.writable_bytes,
            }),
            inodes_used: Some(cri::UInt64Value {
                value: v.writable_inodes,
            }),
        }),
        swap: swap(&v.sample),
        io: io(&v.sample),
    }
}

pub async fn container_stats_one(
    daemon: Arc<Daemon>,
    req: cri::ContainerStatsRequest,
) -> Result<cri::ContainerStatsResponse, ApiError> {
    tracing::Span::current().record(
        "container_id",
        crust_runtime::excerpt(&req.container_id).as_ref(),
    );
    let view = off_runtime(daemon, "ContainerStats", move |d| {
        d.sandboxes.container_stats(&req.container_id)
    })
    .await??;
    Ok(cri::ContainerStatsResponse {
        stats: Some(container_stats(&view)),
    })
}

fn list(daemon: &Daemon, filter: Option<cri::ContainerStatsFilter>) -> Vec<cri::ContainerStats> {
    let f = filter.unwrap_or_default();
    let filter = ContainerFilter {
        id: f.id,
        pod_id: f.pod_sandbox_id,
        labels: f.label_selector.into_iter().collect(),
        // kubelet wants stats of running containers (as containerd lists them).
        state: Some(ContainerState::Running),
    };
    daemon
        .sandboxes
        .list_containers(&filter)
        .into_iter()
        .map(|c| container_stats(&daemon.sandboxes.stats_of(c)))
        .collect()
}

pub async fn list_container_stats(
    daemon: Arc<Daemon>,
    req: cri::ListContainerStatsRequest,
) -> Result<cri::ListContainerStatsResponse, ApiError> {
    Ok(cri::ListContainerStatsResponse {
        stats: off_runtime(daemon, "ListContainerStats", move |d| list(d, req.filter)).await?,
    })
}

pub async fn stream_container_stats(
    daemon: Arc<Daemon>,
    req: cri::StreamContainerStatsRequest,
) -> Result<Vec<Vec<cri::ContainerStats>>, ApiError> {
    Ok(
        off_runtime(daemon, "StreamContainerStats", move |d| list(d, req.filter))
            .await?
            .chunks(STREAM_BATCH)
            .map(<[cri::ContainerStats]>::to_vec)
            .collect(),
    )
}

fn interface(i: &InterfaceCounters) -> cri::NetworkInterfaceUsage {
    cri::NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: value(Some(i.rx_bytes)),
        rx_errors: value(Some(i.rx_errors)),
        tx_bytes: value(Some(i.tx_bytes)),
        tx_errors: value(Some(i.tx_errors)),
    }
}

/// CRI's NetworkUsage: `eth0` (the interface CNI sets up) as the default, every other
/// interface but `lo` in `interfaces` (the CRI field excludes the default; cAdvisor
/// leaves loopback out).
fn network(timestamp: i64, ifs: &[InterfaceCounters]) -> cri::NetworkUsage {
    cri::NetworkUsage {
        timestamp,
        default_interface: ifs.iter().find(|i| i.name == POD_IFNAME).map(interface),
        interfaces: ifs
            .iter()
            .filter(|i| i.name != POD_IFNAME && i.name != "lo")
            .map(interface)
            .collect(),
    }
}

/// The pod's network counters, read inside its namespace; none for host-network pods
/// (theirs would be the node's) or when the namespace cannot be read (a pod being
/// torn down).
fn pod_network(s: &Sandbox, timestamp: i64) -> Option<cri::NetworkUsage> {
    let netns = s.netns()?;
    match interface_counters(&netns, Path::new(PROC_ROOT)) {
        Ok(ifs) => Some(network(timestamp, &ifs)),
        Err(error) => {
            tracing::debug!(pod_id = %s.id, %error, "no network stats");
            None
        }
    }
}

fn pod_stats(daemon: &Daemon, id: &str) -> Result<cri::PodSandboxStats, ApiError> {
    let (view, sample, containers) = daemon.sandboxes.pod_stats(id)?;
    let s = &view.sandbox;
    let process = daemon
        .sandboxes
        .pod_process_count(s)
        .map(|count| cri::ProcessUsage {
            timestamp: sample.timestamp,
            process_count: value(Some(count)),
        });
    Ok(cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: s.id.clone(),
            metadata: Some(cri::PodSandboxMetadata {
                name: s.spec.metadata.name.clone(),
                uid: s.spec.metadata.uid.clone(),
                namespace: s.spec.metadata.namespace.clone(),
                attempt: s.spec.metadata.attempt,
            }),
            labels: s.spec.labels.clone().into_iter().collect(),
            annotations: s.spec.annotations.clone().into_iter().collect(),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: Some(cpu(&sample)),
            memory: Some(memory(&sample)),
            network: pod_network(s, sample.timestamp),
            process,
            containers: containers.iter().map(container_stats).collect(),
            io: io(&sample),
        }),
        windows: None,
    })
}

pub async fn pod_sandbox_stats(
    daemon: Arc<Daemon>,
    req: cri::PodSandboxStatsRequest,
) -> Result<cri::PodSandboxStatsResponse, ApiError> {
    tracing::Span::current().record(
        "pod_id",
        crust_runtime::excerpt(&req.pod_sandbox_id).as_ref(),
    );
    let stats = off_runtime(daemon, "PodSandboxStats", move |d| {
        pod_stats(d, &req.pod_sandbox_id)
    })
    .await??;
    Ok(cri::PodSandboxStatsResponse { stats: Some(stats) })
}

fn list_pods(
    daemon: &Daemon,
    filter: Option<cri::PodSandboxStatsFilter>,
) -> Vec<cri::PodSandboxStats> {
    let f = filter.unwrap_or_default();
    let filter = crust_runtime::sandbox::SandboxFilter {
        id: f.id,
        ready: Some(true),
        labels: f.label_selector.into_iter().collect(),
    };
    daemon
        .sandboxes
        .list(&filter)
        .iter()
        .filter_map(|v| pod_stats(daemon, &v.sandbox.id).ok())
        .collect()
}

pub async fn list_pod_sandbox_stats(
    daemon: Arc<Daemon>,
    req: cri::ListPodSandboxStatsRequest,
) -> Result<cri::ListPodSandboxStatsResponse, ApiError> {
    Ok(cri::ListPodSandboxStatsResponse {
        stats: off_runtime(daemon, "ListPodSandboxStats", move |d| {
            list_pods(d, req.filter)
        })
        .await?,
    })
}

pub async fn stream_pod_sandbox_stats(
    daemon: Arc<Daemon>,
    req: cri::StreamPodSandboxStatsRequest,
) -> Result<Vec<Vec<cri::PodSandboxStats>>, ApiError> {
    Ok(off_runtime(daemon, "StreamPodSandboxStats", move |d| {
        list_pods(d, req.filter)
    })
    .await?
    .chunks(STREAM_BATCH)
    .map(<[cri::PodSandboxStats]>::to_vec)
    .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(name: &str, rx_bytes: u64) -> InterfaceCounters {
        InterfaceCounters {
            name: name.into(),
            rx_bytes,
            tx_bytes: rx_bytes * 2,
            rx_errors: 1,
            tx_errors: 2,
            ..Default::default()
        }
    }

    #[test]
    fn eth0_is_the_default_interface_and_lo_is_left_out() {
        let n = network(
            7,
            &[
                counters("lo", 1),
                counters("eth0", 10),
                counters("net1", 20),
            ],
        );
        assert_eq!(n.timestamp, 7);
        let eth0 = n.default_interface.expect("eth0");
        assert_eq!(
            (eth0.name.as_str(), eth0.rx_bytes.unwrap().value),
            ("eth0", 10)
        );
        assert_eq!(eth0.tx_bytes.unwrap().value, 20);
        assert_eq!(eth0.tx_errors.unwrap().value, 2);
        let others: Vec<_> = n.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(others, ["net1"], "neither the default nor lo");

        let n = network(7, &[counters("lo", 1), counters("net1", 20)]);
        assert!(n.default_interface.is_none(), "no eth0, no default");
        assert_eq!(n.interfaces.len(), 1);
    }
}
