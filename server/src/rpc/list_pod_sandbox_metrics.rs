//! ListPodSandboxMetrics and StreamPodSandboxMetrics: for every ready pod, its network
//! counters (pod level) and, for each running container, the cAdvisor-style metrics
//! of [`super::metric_descriptors`], gathered when asked (nothing is cached between
//! calls). Containers that are not running are left out: their cgroups are empty.
//!
//! StreamPodSandboxMetrics sends the same snapshot in batches of [`STREAM_BATCH`]
//! pods, then ends (CRI list streaming: each item once, then EOF); it does not keep
//! sending snapshots.

use std::sync::Arc;

use crust_network::{InterfaceCounters, interface_counters};
use crust_proto::runtime::v1 as cri;
use crust_runtime::{
    cgroup::CgroupDetail,
    container::{ContainerMetricsView, FsCapacity, PodMetricsView, ProcessCounts},
    sandbox::SandboxFilter,
};

use super::metric_descriptors::{BASE_LABELS, def};
use crate::{daemon::Daemon, error::ApiError};

/// Pods per StreamPodSandboxMetrics message.
pub const STREAM_BATCH: usize = 64;

/// Where procfs is mounted, for reading a pod's network counters from inside it.
pub const PROC_ROOT: &str = "/proc";

const NS_PER_S: u64 = 1_000_000_000;

/// Collects metrics for one object: its base label values, the time, and the metrics
/// so far. Every metric goes through [`Out::put`], which checks it against its
/// descriptor.
struct Out<'a> {
    base: &'a [String; BASE_LABELS.len()],
    timestamp: i64,
    metrics: Vec<cri::Metric>,
}

impl Out<'_> {
    /// Adds `name` with `value` (skipped when there is none) and the extra label
    /// values the descriptor asks for, in its order.
    fn put(&mut self, name: &'static str, value: Option<u64>, extra: &[&str]) {
        let d = def(name);
        debug_assert_eq!(d.extra_labels.len(), extra.len(), "{name}: label values");
        let Some(value) = value else {
            return;
        };
        self.metrics.push(cri::Metric {
            name: name.into(),
            timestamp: self.timestamp,
            metric_type: d.kind.into(),
            label_values: self
                .base
                .iter()
                .cloned()
                .chain(extra.iter().map(|v| v.to_string()))
                .collect(),
            value: Some(cri::UInt64Value { value }),
        });
    }
}

fn seconds(ns: Option<u64>) -> Option<u64> {
    ns.map(|ns| ns / NS_PER_S)
}

/// The pod's network metrics: one series per interface but `lo` (cAdvisor leaves
/// loopback out too).
fn network_metrics(
    base: &[String; BASE_LABELS.len()],
    timestamp: i64,
    ifs: &[InterfaceCounters],
) -> Vec<cri::Metric> {
    let mut out = Out {
        base,
        timestamp,
        metrics: Vec::new(),
    };
    for i in ifs.iter().filter(|i| i.name != "lo") {
        let l = [i.name.as_str()];
        out.put(
            "container_network_receive_bytes_total",
            Some(i.rx_bytes),
            &l,
        );
        out.put(
            "container_network_receive_packets_total",
            Some(i.rx_packets),
            &l,
        );
        out.put(
            "container_network_receive_packets_dropped_total",
            Some(i.rx_dropped),
            &l,
        );
        out.put(
            "container_network_receive_errors_total",
            Some(i.rx_errors),
            &l,
        );
        out.put(
            "container_network_transmit_bytes_total",
            Some(i.tx_bytes),
            &l,
        );
        out.put(
            "container_network_transmit_packets_total",
            Some(i.tx_packets),
            &l,
        );
        out.put(
            "container_network_transmit_packets_dropped_total",
            Some(i.tx_dropped),
            &l,
        );
        out.put(
            "container_network_transmit_errors_total",
            Some(i.tx_errors),
            &l,
        );
    }
    out.metrics
}

/// What a container's metrics are made of, as plain data (so the mapping is tested
/// without a running container).
struct ContainerInputs<'a> {
    detail: &'a CgroupDetail,
    processes: ProcessCounts,
    writable_dir: String,
    writable_bytes: u64,
    writable_fs: Option<FsCapacity>,
    /// Unix nanoseconds.
    started_at: i64,
}

fn container_metrics(
    base: &[String; BASE_LABELS.len()],
    timestamp: i64,
    c: &ContainerInputs,
) -> Vec<cri::Metric> {
    let d = c.detail;
    let mut out = Out {
        base,
        timestamp,
        metrics: Vec::new(),
    };
    // kubelet turns per-CPU figures off; cAdvisor then labels the sum `total`.
    out.put(
        "container_cpu_usage_seconds_total",
        seconds(d.cpu_usage_ns),
        &["total"],
    );
    out.put(
        "container_cpu_user_seconds_total",
        seconds(d.cpu_user_ns),
        &[],
    );
    out.put(
        "container_cpu_system_seconds_total",
        seconds(d.cpu_system_ns),
        &[],
    );
    out.put("container_cpu_cfs_periods_total", d.cfs_periods, &[]);
    out.put(
        "container_cpu_cfs_throttled_periods_total",
        d.cfs_throttled_periods,
        &[],
    );
    out.put(
        "container_cpu_cfs_throttled_seconds_total",
        seconds(d.cfs_throttled_ns),
        &[],
    );

    out.put("container_memory_usage_bytes", d.memory_usage, &[]);
    out.put("container_memory_max_usage_bytes", d.memory_max_usage, &[]);
    out.put("container_memory_working_set_bytes", d.working_set, &[]);
    out.put("container_memory_rss", d.rss, &[]);
    out.put("container_memory_cache", d.cache, &[]);
    out.put("container_memory_swap", d.swap, &[]);
    out.put("container_memory_mapped_file", d.mapped_file, &[]);
    out.put("container_memory_failcnt", d.memory_failcnt, &[]);
    for (value, kind, scope) in [
        (d.pgfault, "pgfault", "container"),
        (d.pgmajfault, "pgmajfault", "container"),
        (d.hierarchy_pgfault, "pgfault", "hierarchy"),
        (d.hierarchy_pgmajfault, "pgmajfault", "hierarchy"),
    ] {
        out.put("container_memory_failures_total", value, &[kind, scope]);
    }
    out.put("container_oom_events_total", d.oom_kills, &[]);

    out.put("container_spec_memory_limit_bytes", d.memory_limit, &[]);
    // As cAdvisor: quota and period only when a quota is set.
    if d.cpu_quota_us.is_some() {
        out.put("container_spec_cpu_quota", d.cpu_quota_us, &[]);
        out.put("container_spec_cpu_period", d.cpu_period_us, &[]);
    }
    out.put("container_spec_cpu_shares", d.cpu_shares, &[]);

    let p = c.processes;
    out.put("container_processes", Some(p.processes), &[]);
    out.put("container_threads", Some(p.threads), &[]);
    out.put("container_threads_max", d.pids_max, &[]);
    out.put("container_file_descriptors", Some(p.fds), &[]);
    out.put("container_sockets", Some(p.sockets), &[]);

    let dev = [c.writable_dir.as_str()];
    out.put("container_fs_usage_bytes", Some(c.writable_bytes), &dev);
    if let Some(fs) = c.writable_fs {
        out.put("container_fs_limit_bytes", Some(fs.bytes_total), &dev);
        out.put("container_fs_inodes_total", Some(fs.inodes_total), &dev);
        out.put("container_fs_inodes_free", Some(fs.inodes_free), &dev);
    }

    let us_to_s = |us: u64| us / 1_000_000;
    for (psi, waiting, stalled) in [
        (
            d.cpu_psi,
            "container_pressure_cpu_waiting_seconds_total",
            "container_pressure_cpu_stalled_seconds_total",
        ),
        (
            d.memory_psi,
            "container_pressure_memory_waiting_seconds_total",
            "container_pressure_memory_stalled_seconds_total",
        ),
        (
            d.io_psi,
            "container_pressure_io_waiting_seconds_total",
            "container_pressure_io_stalled_seconds_total",
        ),
    ] {
        out.put(waiting, psi.map(|p| us_to_s(p.some.total_us)), &[]);
        out.put(
            stalled,
            psi.and_then(|p| p.full).map(|f| us_to_s(f.total_us)),
            &[],
        );
    }

    out.put(
        "container_last_seen",
        Some(timestamp.max(0) as u64 / NS_PER_S),
        &[],
    );
    out.put(
        "container_start_time_seconds",
        (c.started_at > 0).then_some(c.started_at as u64 / NS_PER_S),
        &[],
    );
    out.metrics
}

/// The PodSandboxMetrics of one pod; `ifs` are its network counters, if read.
fn pod_sandbox_metrics(
    view: &PodMetricsView,
    ifs: Option<&[InterfaceCounters]>,
) -> cri::PodSandboxMetrics {
    let s = &view.sandbox;
    let (pod, namespace) = (&s.spec.metadata.name, &s.spec.metadata.namespace);
    // Pod-level series look like cAdvisor's for the pod's infrastructure container.
    let pod_base = [
        s.cgroup.clone(),
        s.id.clone(),
        String::new(),
        "POD".to_string(),
        pod.clone(),
        namespace.clone(),
    ];
    cri::PodSandboxMetrics {
        pod_sandbox_id: s.id.clone(),
        metrics: ifs
            .map(|ifs| network_metrics(&pod_base, view.timestamp, ifs))
            .unwrap_or_default(),
        container_metrics: view
            .containers
            .iter()
            .map(|c: &ContainerMetricsView| {
                let base = [
                    c.container.cgroup.clone(),
                    c.container.id.clone(),
                    c.container.image.reference.clone(),
                    c.container.spec.metadata.name.clone(),
                    pod.clone(),
                    namespace.clone(),
                ];
                let inputs = ContainerInputs {
                    detail: &c.detail,
                    processes: c.processes,
                    writable_dir: c.writable_dir.display().to_string(),
                    writable_bytes: c.writable_bytes,
                    writable_fs: c.writable_fs,
                    started_at: c.container.started_at,
                };
                cri::ContainerMetrics {
                    container_id: c.container.id.clone(),
                    metrics: container_metrics(&base, view.timestamp, &inputs),
                }
            })
            .collect(),
    }
}

/// Every ready pod's metrics. Blocking (cgroup and /proc files, a thread per pod
/// to read its network namespace, writable layers walked): run off the async workers.
/// A pod that goes away meanwhile is left out; one whose network counters cannot
/// be read is sent without them.
fn snapshot(daemon: &Daemon) -> Vec<cri::PodSandboxMetrics> {
    let ready = SandboxFilter {
        ready: Some(true),
        ..Default::default()
    };
    daemon
        .sandboxes
        .list(&ready)
        .iter()
        .filter_map(|v| match daemon.sandboxes.pod_metrics(&v.sandbox.id) {
            Ok(m) => Some(m),
            Err(error) => {
                tracing::debug!(pod_id = %v.sandbox.id, %error, "pod left out of the metrics");
                None
            }
        })
        .map(|view| {
            let ifs = view.netns.as_ref().and_then(|netns| {
                interface_counters(netns, std::path::Path::new(PROC_ROOT))
                    .inspect_err(|error| {
                        tracing::debug!(pod_id = %view.sandbox.id, %error, "no network metrics")
                    })
                    .ok()
            });
            pod_sandbox_metrics(&view, ifs.as_deref())
        })
        .collect()
}

async fn snapshot_off_runtime(
    daemon: Arc<Daemon>,
    rpc: &'static str,
) -> Result<Vec<cri::PodSandboxMetrics>, ApiError> {
    super::off_runtime(daemon, rpc, snapshot).await
}

pub async fn list_pod_sandbox_metrics(
    daemon: Arc<Daemon>,
    _req: cri::ListPodSandboxMetricsRequest,
) -> Result<cri::ListPodSandboxMetricsResponse, ApiError> {
    Ok(cri::ListPodSandboxMetricsResponse {
        pod_metrics: snapshot_off_runtime(daemon, "ListPodSandboxMetrics").await?,
    })
}

pub async fn stream_pod_sandbox_metrics(
    daemon: Arc<Daemon>,
    _req: cri::StreamPodSandboxMetricsRequest,
) -> Result<Vec<Vec<cri::PodSandboxMetrics>>, ApiError> {
    Ok(snapshot_off_runtime(daemon, "StreamPodSandboxMetrics")
        .await?
        .chunks(STREAM_BATCH)
        .map(<[cri::PodSandboxMetrics]>::to_vec)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::metric_descriptors::descriptors;
    use crust_runtime::cgroup::{Psi, PsiLine};

    fn base() -> [String; 6] {
        ["/pods/p/c", "cid", "reg/busybox:v1", "web", "pod-a", "ns-a"].map(String::from)
    }

    fn full_detail() -> CgroupDetail {
        let psi = Some(Psi {
            some: PsiLine {
                total_us: 3_500_000,
                ..Default::default()
            },
            full: Some(PsiLine {
                total_us: 1_200_000,
                ..Default::default()
            }),
        });
        CgroupDetail {
            cpu_usage_ns: Some(2_999_999_999),
            cpu_user_ns: Some(2_000_000_000),
            cpu_system_ns: Some(999_999_999),
            cfs_periods: Some(10),
            cfs_throttled_periods: Some(3),
            cfs_throttled_ns: Some(4_000_000_000),
            memory_usage: Some(64 << 20),
            memory_max_usage: Some(70 << 20),
            working_set: Some(60 << 20),
            rss: Some(40 << 20),
            cache: Some(20 << 20),
            mapped_file: Some(4096),
            swap: Some(0),
            memory_failcnt: Some(1),
            pgfault: Some(100),
            pgmajfault: Some(2),
            hierarchy_pgfault: Some(150),
            hierarchy_pgmajfault: Some(3),
            oom_kills: Some(0),
            memory_limit: Some(128 << 20),
            cpu_quota_us: Some(50_000),
            cpu_period_us: Some(100_000),
            cpu_shares: Some(512),
            pids_current: Some(5),
            pids_max: Some(0),
            cpu_psi: psi,
            memory_psi: psi,
            io_psi: psi,
        }
    }

    fn inputs(detail: &CgroupDetail) -> ContainerInputs<'_> {
        ContainerInputs {
            detail,
            processes: ProcessCounts {
                processes: 2,
                threads: 3,
                fds: 9,
                sockets: 1,
            },
            writable_dir: "/var/lib/crust/containers/cid/upper".into(),
            writable_bytes: 8192,
            writable_fs: Some(FsCapacity {
                bytes_total: 1 << 30,
                inodes_total: 1000,
                inodes_free: 900,
            }),
            started_at: 1_700_000_000_123_456_789,
        }
    }

    fn value(ms: &[cri::Metric], name: &str, extra: &[&str]) -> Option<u64> {
        ms.iter()
            .find(|m| m.name == name && m.label_values[6..] == *extra)
            .map(|m| m.value.as_ref().unwrap().value)
    }

    /// Every metric sent is described, with as many label values as keys, and the
    /// counter/gauge type of its descriptor; with every figure known, every container
    /// descriptor is sent.
    #[test]
    fn every_metric_matches_its_descriptor() {
        let detail = full_detail();
        let ms = container_metrics(&base(), 5_000_000_000, &inputs(&detail));
        let ifs = [InterfaceCounters {
            name: "eth0".into(),
            ..Default::default()
        }];
        let net = network_metrics(&base(), 5, &ifs);
        let descs = descriptors();
        for m in ms.iter().chain(&net) {
            let d = descs
                .iter()
                .find(|d| d.name == m.name)
                .unwrap_or_else(|| panic!("{} not described", m.name));
            assert_eq!(m.label_values.len(), d.label_keys.len(), "{}", m.name);
            assert_eq!(m.metric_type, def(&m.name).kind as i32, "{}", m.name);
            assert_eq!(m.label_values[..6], base(), "{}", m.name);
        }
        for d in &descs {
            assert!(
                ms.iter().chain(&net).any(|m| m.name == d.name),
                "{} never sent",
                d.name
            );
        }
    }

    #[test]
    fn values_and_units() {
        let detail = full_detail();
        let ms = container_metrics(&base(), 5_000_000_000, &inputs(&detail));
        let cases: &[(&str, &[&str], u64)] = &[
            ("container_cpu_usage_seconds_total", &["total"], 2),
            ("container_cpu_user_seconds_total", &[], 2),
            ("container_cpu_system_seconds_total", &[], 0),
            ("container_cpu_cfs_throttled_seconds_total", &[], 4),
            ("container_memory_usage_bytes", &[], 64 << 20),
            ("container_memory_working_set_bytes", &[], 60 << 20),
            (
                "container_memory_failures_total",
                &["pgfault", "container"],
                100,
            ),
            (
                "container_memory_failures_total",
                &["pgmajfault", "hierarchy"],
                3,
            ),
            ("container_spec_cpu_quota", &[], 50_000),
            ("container_threads_max", &[], 0),
            ("container_processes", &[], 2),
            ("container_sockets", &[], 1),
            (
                "container_fs_inodes_free",
                &["/var/lib/crust/containers/cid/upper"],
                900,
            ),
            ("container_pressure_io_waiting_seconds_total", &[], 3),
            ("container_pressure_io_stalled_seconds_total", &[], 1),
            ("container_last_seen", &[], 5),
            ("container_start_time_seconds", &[], 1_700_000_000),
        ];
        for (name, extra, want) in cases {
            assert_eq!(value(&ms, name, extra), Some(*want), "{name} {extra:?}");
        }
        assert!(ms.iter().all(|m| m.timestamp == 5_000_000_000));
    }

    /// What the host cannot tell is not sent (v1: no PSI; no quota: no quota or
    /// period), rather than sent as 0.
    #[test]
    fn unknown_figures_are_left_out() {
        let detail = CgroupDetail {
            cpu_quota_us: None,
            cpu_psi: None,
            memory_psi: None,
            io_psi: None,
            ..full_detail()
        };
        let ms = container_metrics(&base(), 1, &inputs(&detail));
        for name in [
            "container_spec_cpu_quota",
            "container_spec_cpu_period",
            "container_pressure_cpu_waiting_seconds_total",
            "container_pressure_memory_stalled_seconds_total",
        ] {
            assert!(ms.iter().all(|m| m.name != name), "{name} sent");
        }
        assert_eq!(
            value(&ms, "container_spec_cpu_shares", &[]),
            Some(512),
            "the rest still is"
        );
    }

    #[test]
    fn network_series_per_interface_without_lo() {
        let ifs = [
            InterfaceCounters {
                name: "lo".into(),
                rx_bytes: 1,
                ..Default::default()
            },
            InterfaceCounters {
                name: "eth0".into(),
                rx_bytes: 100,
                tx_bytes: 200,
                rx_errors: 1,
                tx_dropped: 2,
                ..Default::default()
            },
            InterfaceCounters {
                name: "net1".into(),
                rx_bytes: 7,
                ..Default::default()
            },
        ];
        let ms = network_metrics(&base(), 1, &ifs);
        assert_eq!(ms.len(), 16, "8 metrics for eth0 and net1");
        assert!(ms.iter().all(|m| m.label_values[6] != "lo"));
        for (name, iface, want) in [
            ("container_network_receive_bytes_total", "eth0", 100),
            ("container_network_transmit_bytes_total", "eth0", 200),
            ("container_network_receive_errors_total", "eth0", 1),
            (
                "container_network_transmit_packets_dropped_total",
                "eth0",
                2,
            ),
            ("container_network_receive_bytes_total", "net1", 7),
        ] {
            assert_eq!(value(&ms, name, &[iface]), Some(want), "{name} {iface}");
        }
    }
}
