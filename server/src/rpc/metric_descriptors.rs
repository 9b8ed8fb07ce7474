//! ListMetricDescriptors: the metrics ListPodSandboxMetrics sends, named, described and
//! labelled as cAdvisor's (what kubelet serves on `/metrics/cadvisor`), so dashboards
//! keep working when kubelet takes them from the runtime (`PodAndContainerStatsFromCRI`).
//!
//! Every metric carries cAdvisor's six labels for a pod's containers (`id`: the
//! cgroup, `name`: the runtime's id, `image`, `container`, `pod`, `namespace`; kubelet
//! passes runtime labels through as they are, and CRI-O sends the same set) and
//! some add their own (`interface`, `failure_type`/`scope`, `device`, `cpu`). The set
//! is fixed for crustd's life, as the CRI asks: a metric a host cannot give (PSI on
//! cgroup v1, CFS figures without the cpu controller) is simply not sent.
//!
//! The CRI carries values as integers: `*_seconds*` values are whole seconds, rounded
//! down, as containerd and CRI-O send them.

use crust_proto::runtime::v1 as cri;

/// The labels every metric starts with, in this order.
pub const BASE_LABELS: [&str; 6] = ["id", "name", "image", "container", "pod", "namespace"];

/// One metric ListPodSandboxMetrics may send.
#[derive(Debug)]
pub struct MetricDef {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: cri::MetricType,
    /// Labels after [`BASE_LABELS`].
    pub extra_labels: &'static [&'static str],
}

const fn counter(name: &'static str, help: &'static str) -> MetricDef {
    MetricDef {
        name,
        help,
        kind: cri::MetricType::Counter,
        extra_labels: &[],
    }
}

const fn gauge(name: &'static str, help: &'static str) -> MetricDef {
    MetricDef {
        name,
        help,
        kind: cri::MetricType::Gauge,
        extra_labels: &[],
    }
}

const fn with(mut def: MetricDef, extra_labels: &'static [&'static str]) -> MetricDef {
    def.extra_labels = extra_labels;
    def
}

/// Every metric, help texts as cAdvisor has them.
pub const METRICS: &[MetricDef] = &[
    // Pod level: the network namespace is the pod's (label `interface`).
    with(
        counter(
            "container_network_receive_bytes_total",
            "Cumulative count of bytes received",
        ),
        &["interface"],
    ),
    with(
        counter(
            "container_network_receive_packets_total",
            "Cumulative count of packets received",
        ),
        &["interface"],
    ),
    with(
        counter(
            "container_network_receive_packets_dropped_total",
            "Cumulative count of packets dropped while receiving",
        ),
        &["interface"],
    ),
    with(
        counter(
            "container_network_receive_errors_total",
            "Cumulative count of errors encountered while receiving",
        ),
        &["interface"],
    ),
    with(
        counter(
            "container_network_transmit_bytes_total",
            "Cumulative count of bytes transmitted",
        ),
        &["interface"],
    ),
    with(
        counter(
            "container_network_transmit_packets_total",
            "Cumulative count of packets transmitted",
        ),
        &["interface"],
    ),
    with(
        counter(
            "container_network_transmit_packets_dropped_total",
            "Cumulative count of packets dropped while transmitting",
        ),
        &["interface"],
    ),
    with(
        counter(
            "container_network_transmit_errors_total",
            "Cumulative count of errors encountered while transmitting",
        ),
        &["interface"],
    ),
    // CPU.
    with(
        counter(
            "container_cpu_usage_seconds_total",
            "Cumulative cpu time consumed in seconds.",
        ),
        &["cpu"],
    ),
    counter(
        "container_cpu_user_seconds_total",
        "Cumulative user cpu time consumed in seconds.",
    ),
    counter(
        "container_cpu_system_seconds_total",
        "Cumulative system cpu time consumed in seconds.",
    ),
    counter(
        "container_cpu_cfs_periods_total",
        "Number of elapsed enforcement period intervals.",
    ),
    counter(
        "container_cpu_cfs_throttled_periods_total",
        "Number of throttled period intervals.",
    ),
    counter(
        "container_cpu_cfs_throttled_seconds_total",
        "Total time duration the container has been throttled.",
    ),
    // Memory.
    gauge(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
    ),
    gauge(
        "container_memory_max_usage_bytes",
        "Maximum memory usage recorded in bytes",
    ),
    gauge(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
    ),
    gauge("container_memory_rss", "Size of RSS in bytes."),
    gauge(
        "container_memory_cache",
        "Number of bytes of page cache memory.",
    ),
    gauge("container_memory_swap", "Container swap usage in bytes."),
    gauge(
        "container_memory_mapped_file",
        "Size of memory mapped files in bytes.",
    ),
    counter(
        "container_memory_failcnt",
        "Number of memory usage hits limits",
    ),
    with(
        counter(
            "container_memory_failures_total",
            "Cumulative count of memory allocation failures.",
        ),
        &["failure_type", "scope"],
    ),
    counter(
        "container_oom_events_total",
        "Count of out of memory events observed for the container",
    ),
    // Limits in force (read from the cgroup, so they follow UpdateContainerResources).
    gauge(
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
    ),
    gauge("container_spec_cpu_quota", "CPU quota of the container."),
    gauge("container_spec_cpu_period", "CPU period of the container."),
    gauge("container_spec_cpu_shares", "CPU share of the container."),
    // Processes.
    gauge(
        "container_processes",
        "Number of processes running inside the container.",
    ),
    gauge(
        "container_threads",
        "Number of threads running inside the container",
    ),
    gauge(
        "container_threads_max",
        "Maximum number of threads allowed inside the container, infinity if value is zero",
    ),
    gauge(
        "container_file_descriptors",
        "Number of open file descriptors for the container.",
    ),
    gauge(
        "container_sockets",
        "Number of open sockets for the container.",
    ),
    // The writable layer (`device`: its directory) and the filesystem under it.
    with(
        gauge(
            "container_fs_usage_bytes",
            "Number of bytes that are consumed by the container on this filesystem.",
        ),
        &["device"],
    ),
    with(
        gauge(
            "container_fs_limit_bytes",
            "Number of bytes that can be consumed by the container on this filesystem.",
        ),
        &["device"],
    ),
    with(
        gauge("container_fs_inodes_total", "Number of Inodes"),
        &["device"],
    ),
    with(
        gauge("container_fs_inodes_free", "Number of available Inodes"),
        &["device"],
    ),
    // Pressure stall information (cgroup v2).
    counter(
        "container_pressure_cpu_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to CPU congestion.",
    ),
    counter(
        "container_pressure_cpu_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to CPU congestion.",
    ),
    counter(
        "container_pressure_memory_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to memory congestion.",
    ),
    counter(
        "container_pressure_memory_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to memory congestion.",
    ),
    counter(
        "container_pressure_io_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to IO congestion.",
    ),
    counter(
        "container_pressure_io_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to IO congestion.",
    ),
    // Bookkeeping.
    gauge(
        "container_last_seen",
        "Last time a container was seen by the exporter",
    ),
    gauge(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
    ),
];

/// The definition of `name`. Metrics are only ever built through this, so one that is
/// not described cannot be sent.
pub fn def(name: &str) -> &'static MetricDef {
    METRICS
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("metric {name} has no descriptor"))
}

pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    METRICS
        .iter()
        .map(|d| cri::MetricDescriptor {
            name: d.name.into(),
            help: d.help.into(),
            label_keys: BASE_LABELS
                .iter()
                .chain(d.extra_labels)
                .map(|l| l.to_string())
                .collect(),
        })
        .collect()
}

pub async fn list_metric_descriptors(
    _req: cri::ListMetricDescriptorsRequest,
) -> Result<cri::ListMetricDescriptorsResponse, crate::error::ApiError> {
    Ok(cri::ListMetricDescriptorsResponse {
        descriptors: descriptors(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_typed_by_suffix() {
        let mut names: Vec<_> = METRICS.iter().map(|d| d.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), METRICS.len(), "duplicate names");
        for d in METRICS {
            // Prometheus naming: counters end in _total. cAdvisor's exceptions: failcnt
            // (a counter) predates it, fs_inodes_total is a gauge (the filesystem's size).
            let counter = (d.name.ends_with("_total") && d.name != "container_fs_inodes_total")
                || d.name == "container_memory_failcnt";
            assert_eq!(
                d.kind == cri::MetricType::Counter,
                counter,
                "{}: type {:?}",
                d.name,
                d.kind
            );
        }
    }

    #[test]
    fn descriptors_carry_base_then_extra_labels() {
        let all = descriptors();
        let cpu = all
            .iter()
            .find(|d| d.name == "container_cpu_usage_seconds_total")
            .unwrap();
        assert_eq!(
            cpu.label_keys,
            [
                "id",
                "name",
                "image",
                "container",
                "pod",
                "namespace",
                "cpu"
            ]
        );
        let failures = all
            .iter()
            .find(|d| d.name == "container_memory_failures_total")
            .unwrap();
        assert_eq!(&failures.label_keys[6..], ["failure_type", "scope"]);
        assert!(all.iter().all(|d| !d.help.is_empty()));
    }
}
