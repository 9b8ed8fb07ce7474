//! ListMetricDescriptors, ListPodSandboxMetrics, StreamPodSandboxMetrics and the
//! network and process parts of PodSandboxStats through the real crustd: a pod whose
//! container burns CPU, fills 40 MiB of /dev/shm and pings the test bridge's
//! gateway, a host-network pod, and a stopped pod.
//!
//! The pod's eth0 counters are checked against the pod's own `/proc/net/dev` read
//! (by ExecSync) just before and just after the RPC, so a crustd reading the wrong
//! namespace (the host has interfaces too) fails.
//!
//! `cargo test -p crust-e2e --test pod_metrics -- --ignored --nocapture` runs the
//! benchmark: ListPodSandboxMetrics latency with 1, 5 and 10 pods.

use std::{collections::BTreeMap, path::Path, time::Duration};

use crust_e2e::{
    bench::percentile,
    world::{PodOptions, World, busybox_image},
};
use crust_proto::runtime::v1::{
    ContainerMetrics, LinuxContainerConfig, LinuxContainerResources, ListMetricDescriptorsRequest,
    ListPodSandboxMetricsRequest, Metric, MetricType, PodSandboxMetrics, PodSandboxStatsRequest,
    StopPodSandboxRequest, StreamPodSandboxMetricsRequest,
};

const MIB: u64 = 1 << 20;
const PING_BYTES: u64 = 1000;
const PINGS: u64 = 5;

async fn metrics(w: &World) -> Vec<PodSandboxMetrics> {
    w.d.runtime()
        .await
        .expect("connect")
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .expect("ListPodSandboxMetrics")
        .into_inner()
        .pod_metrics
}

fn pod_of<'a>(all: &'a [PodSandboxMetrics], id: &str) -> &'a PodSandboxMetrics {
    all.iter()
        .find(|p| p.pod_sandbox_id == id)
        .unwrap_or_else(|| panic!("pod {id} missing from {:?}", ids(all)))
}

fn ids(all: &[PodSandboxMetrics]) -> Vec<&str> {
    all.iter().map(|p| p.pod_sandbox_id.as_str()).collect()
}

fn container_of<'a>(p: &'a PodSandboxMetrics, id: &str) -> &'a ContainerMetrics {
    p.container_metrics
        .iter()
        .find(|c| c.container_id == id)
        .unwrap_or_else(|| panic!("container {id} missing from pod {}", p.pod_sandbox_id))
}

/// The metric `name` whose label values end with `extra` (after the six base ones).
fn find<'a>(ms: &'a [Metric], name: &str, extra: &[&str]) -> Option<&'a Metric> {
    ms.iter()
        .find(|m| m.name == name && m.label_values.get(6..).is_some_and(|l| l == extra))
}

fn value(ms: &[Metric], name: &str, extra: &[&str]) -> u64 {
    find(ms, name, extra)
        .unwrap_or_else(|| panic!("no {name} {extra:?} in {:?}", names(ms)))
        .value
        .as_ref()
        .expect("a value")
        .value
}

fn names(ms: &[Metric]) -> Vec<&str> {
    ms.iter().map(|m| m.name.as_str()).collect()
}

/// (rx_bytes, tx_bytes) of eth0 in `/proc/net/dev` text.
fn eth0(net_dev: &str) -> (u64, u64) {
    let line = net_dev
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("eth0:"))
        .unwrap_or_else(|| panic!("no eth0 in {net_dev}"));
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    (f[0], f[8])
}

async fn pod_eth0(w: &World, container: &str) -> (u64, u64) {
    let (code, out, err) = w.exec(container, &["cat", "/proc/net/dev"]).await;
    assert_eq!(code, 0, "{err}");
    eth0(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_metrics_and_stats_follow_a_busy_pod() {
    let image = busybox_image(&["sh", "sleep", "dd", "ping", "cat", "touch"], |_| {});
    let w = World::start(&image, "test/busybox", "").await;
    let mut rt = w.d.runtime().await.unwrap();

    // Descriptors first: what is served, with its labels.
    let descriptors = rt
        .list_metric_descriptors(ListMetricDescriptorsRequest {})
        .await
        .expect("ListMetricDescriptors")
        .into_inner()
        .descriptors;
    let keys: BTreeMap<&str, Vec<&str>> = descriptors
        .iter()
        .map(|d| {
            (
                d.name.as_str(),
                d.label_keys.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(keys.len(), descriptors.len(), "names are unique");
    let base = ["id", "name", "image", "container", "pod", "namespace"];
    for (name, extra) in [
        ("container_cpu_usage_seconds_total", &["cpu"][..]),
        ("container_cpu_user_seconds_total", &[]),
        ("container_cpu_system_seconds_total", &[]),
        ("container_cpu_cfs_periods_total", &[]),
        ("container_cpu_cfs_throttled_periods_total", &[]),
        ("container_cpu_cfs_throttled_seconds_total", &[]),
        ("container_memory_usage_bytes", &[]),
        ("container_memory_working_set_bytes", &[]),
        ("container_memory_rss", &[]),
        ("container_memory_cache", &[]),
        ("container_memory_swap", &[]),
        ("container_memory_mapped_file", &[]),
        ("container_memory_failcnt", &[]),
        (
            "container_memory_failures_total",
            &["failure_type", "scope"],
        ),
        ("container_oom_events_total", &[]),
        ("container_spec_memory_limit_bytes", &[]),
        ("container_spec_cpu_quota", &[]),
        ("container_spec_cpu_period", &[]),
        ("container_spec_cpu_shares", &[]),
        ("container_processes", &[]),
        ("container_threads", &[]),
        ("container_threads_max", &[]),
        ("container_sockets", &[]),
        ("container_file_descriptors", &[]),
        ("container_network_receive_bytes_total", &["interface"]),
        ("container_network_receive_packets_total", &["interface"]),
        ("container_network_receive_errors_total", &["interface"]),
        (
            "container_network_receive_packets_dropped_total",
            &["interface"],
        ),
        ("container_network_transmit_bytes_total", &["interface"]),
        ("container_network_transmit_packets_total", &["interface"]),
        ("container_network_transmit_errors_total", &["interface"]),
        (
            "container_network_transmit_packets_dropped_total",
            &["interface"],
        ),
        ("container_fs_usage_bytes", &["device"]),
        ("container_last_seen", &[]),
        ("container_start_time_seconds", &[]),
        ("container_pressure_cpu_waiting_seconds_total", &[]),
        ("container_pressure_memory_stalled_seconds_total", &[]),
        ("container_pressure_io_waiting_seconds_total", &[]),
    ] {
        let want: Vec<&str> = base.iter().chain(extra).copied().collect();
        assert_eq!(keys.get(name), Some(&want), "{name}");
    }

    // The busy pod: CPU in a loop, 40 MiB in /dev/shm (charged to the container's
    // memory cgroup), limits to read back.
    let pod = w
        .run_pod(&PodOptions::named("busy").namespace("metrics-ns"))
        .await;
    let mut config = w.config(
        "burner",
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/dev/shm/fill bs=1M count=40 && touch /tmp/filled; \
             (while :; do :; done) & sleep 100000",
        ],
    );
    config.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 150_000,
            cpu_shares: 512,
            memory_limit_in_bytes: (256 * MIB) as i64,
            ..Default::default()
        }),
        ..Default::default()
    });
    let burner = w.run(&pod, config).await;
    let cgroup = w.verbose_info(&burner).await["cgroup"]
        .as_str()
        .expect("verbose info names the cgroup")
        .to_string();

    // A host-network pod (no network series of its own) and a stopped pod (not
    // listed at all).
    let host = w
        .run_pod(&PodOptions::named("hostnet").host_network())
        .await;
    w.run(&host, w.config("idle", &["sleep", "100000"])).await;
    let stopped = w.run_pod(&PodOptions::named("stopped")).await;
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: stopped.clone(),
    })
    .await
    .expect("StopPodSandbox");

    // Until the container has burnt a whole second of CPU (values are whole seconds)
    // and filled /dev/shm. The bound only guards against a hang.
    let mut ready = false;
    for _ in 0..240 {
        let all = metrics(&w).await;
        let c = container_of(pod_of(&all, &pod), &burner);
        let cpu = find(&c.metrics, "container_cpu_usage_seconds_total", &["total"]);
        let filled = w.exec(&burner, &["cat", "/tmp/filled"]).await.0 == 0;
        if filled && cpu.is_some_and(|m| m.value.as_ref().unwrap().value >= 1) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        ready,
        "the container never reached 1 s of CPU with /dev/shm filled"
    );

    // Traffic on eth0: pings of 1000 bytes to the bridge's gateway (the test's own
    // bridge), between two reads of the pod's counters.
    let before = pod_eth0(&w, &burner).await;
    let (code, out, err) = w
        .exec(
            &burner,
            &[
                "ping",
                "-c",
                &PINGS.to_string(),
                "-i",
                "0.2",
                "-s",
                &PING_BYTES.to_string(),
                "-W",
                "5",
                &w.net.gateway,
            ],
        )
        .await;
    assert_eq!(code, 0, "ping the gateway: {out}{err}");
    let all = metrics(&w).await;
    let stats = rt
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .expect("stats");
    let after = pod_eth0(&w, &burner).await;

    let listed = ids(&all);
    assert!(listed.contains(&host.as_str()), "{listed:?}");
    assert!(
        !listed.contains(&stopped.as_str()),
        "a stopped pod is not listed: {listed:?}"
    );

    // Every metric is described and carries one value per label key.
    for p in &all {
        for m in p
            .metrics
            .iter()
            .chain(p.container_metrics.iter().flat_map(|c| &c.metrics))
        {
            let k = keys
                .get(m.name.as_str())
                .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
            assert_eq!(m.label_values.len(), k.len(), "{}: {m:?}", m.name);
            assert!(m.timestamp > 0, "{}", m.name);
        }
    }

    // Pod level: eth0 counters, read in the pod's namespace.
    let busy = pod_of(&all, &pod);
    let rx = value(
        &busy.metrics,
        "container_network_receive_bytes_total",
        &["eth0"],
    );
    let tx = value(
        &busy.metrics,
        "container_network_transmit_bytes_total",
        &["eth0"],
    );
    assert!(
        before.1 + PINGS * PING_BYTES <= tx && tx <= after.1,
        "tx {tx}: pod's own counter {} before the pings, {} after",
        before.1,
        after.1
    );
    assert!(
        before.0 + PINGS * PING_BYTES <= rx && rx <= after.0,
        "rx {rx}: pod's own counter {} before, {} after (echo replies)",
        before.0,
        after.0
    );
    assert!(
        value(
            &busy.metrics,
            "container_network_transmit_packets_total",
            &["eth0"]
        ) >= PINGS
    );
    assert!(
        find(
            &busy.metrics,
            "container_network_receive_bytes_total",
            &["lo"]
        )
        .is_none(),
        "loopback is left out"
    );
    let m = find(
        &busy.metrics,
        "container_network_receive_bytes_total",
        &["eth0"],
    )
    .unwrap();
    assert_eq!(
        m.label_values[1..6],
        [pod.as_str(), "", "POD", "busy", "metrics-ns"],
        "pod-level labels"
    );
    assert_eq!(m.metric_type, MetricType::Counter as i32);
    assert!(
        pod_of(&all, &host).metrics.is_empty(),
        "a host-network pod has no network series of its own"
    );

    // Container level.
    let c = &container_of(busy, &burner).metrics;
    let usage = find(c, "container_memory_usage_bytes", &[]).expect("memory usage");
    assert_eq!(
        usage.label_values,
        [
            cgroup.as_str(),
            burner.as_str(),
            w.image.as_str(),
            "burner",
            "busy",
            "metrics-ns"
        ],
        "labels: cgroup, id, image, container, pod, namespace"
    );
    assert_eq!(usage.metric_type, MetricType::Gauge as i32);
    assert!(
        usage.value.as_ref().unwrap().value >= 40 * MIB,
        "usage {:?} with 40 MiB in /dev/shm",
        usage.value
    );
    assert!(value(c, "container_memory_working_set_bytes", &[]) >= 40 * MIB);
    assert!(value(c, "container_cpu_usage_seconds_total", &["total"]) >= 1);
    assert!(
        value(c, "container_cpu_user_seconds_total", &[])
            + value(c, "container_cpu_system_seconds_total", &[])
            <= value(c, "container_cpu_usage_seconds_total", &["total"]) + 1,
        "user + system within rounding of the total"
    );
    assert!(
        value(c, "container_cpu_cfs_periods_total", &[]) > 0,
        "a quota is set, so CFS periods elapse"
    );
    assert_eq!(
        value(c, "container_spec_memory_limit_bytes", &[]),
        256 * MIB
    );
    assert_eq!(value(c, "container_spec_cpu_quota", &[]), 150_000);
    assert_eq!(value(c, "container_spec_cpu_period", &[]), 100_000);
    // Pure v2 reads cpu.weight back, which loses a little.
    let shares = value(c, "container_spec_cpu_shares", &[]);
    assert!((505..=512).contains(&shares), "shares {shares}");
    let processes = value(c, "container_processes", &[]);
    assert!(processes >= 2, "sh and the loop's subshell: {processes}");
    assert!(value(c, "container_threads", &[]) >= processes);
    assert!(value(c, "container_file_descriptors", &[]) >= processes);
    // The writable layer holds /tmp/filled (and /tmp): some blocks.
    let fs = c
        .iter()
        .find(|m| m.name == "container_fs_usage_bytes")
        .expect("writable layer usage");
    assert!(
        fs.label_values[6].contains(&burner) && fs.label_values[6].ends_with("/upper"),
        "device: the writable layer {:?}",
        fs.label_values[6]
    );
    assert!(fs.value.as_ref().unwrap().value > 0);
    let start = value(c, "container_start_time_seconds", &[]);
    let seen = value(c, "container_last_seen", &[]);
    assert!(start > 1_600_000_000 && start <= seen, "{start} {seen}");
    // PSI where the container's cgroup v2 directory has the files (detected here).
    let psi_file = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(|root| Path::new(root).join(&cgroup[1..]).join("cpu.pressure"))
        .find(|p| p.exists());
    assert_eq!(
        find(c, "container_pressure_cpu_waiting_seconds_total", &[]).is_some(),
        psi_file.is_some(),
        "PSI metrics iff the cgroup has {psi_file:?}"
    );
    let host_c = &pod_of(&all, &host).container_metrics;
    assert_eq!(host_c.len(), 1, "the host-network pod's container");
    assert_eq!(
        find(&host_c[0].metrics, "container_memory_usage_bytes", &[])
            .unwrap()
            .label_values[3..],
        ["idle", "hostnet", "e2e"]
    );

    // PodSandboxStats: network with eth0 (same window as above) and process stats.
    let linux = stats.linux.expect("linux stats");
    let net = linux.network.expect("network stats");
    let eth = net
        .default_interface
        .expect("eth0 as the default interface");
    assert_eq!(eth.name, "eth0");
    let stats_tx = eth.tx_bytes.unwrap().value;
    assert!(
        before.1 + PINGS * PING_BYTES <= stats_tx && stats_tx <= after.1,
        "stats tx {stats_tx}, pod's counter {before:?} .. {after:?}"
    );
    assert!(eth.rx_bytes.unwrap().value >= before.0 + PINGS * PING_BYTES);
    assert!(
        net.interfaces
            .iter()
            .all(|i| i.name != "eth0" && i.name != "lo"),
        "{:?}",
        net.interfaces
    );
    assert!(net.timestamp > 0);
    let count = linux
        .process
        .expect("process stats")
        .process_count
        .unwrap()
        .value;
    assert!(
        count >= processes,
        "the pod ({count}) holds the container's {processes} processes"
    );
    let host_stats = rt
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: host.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap()
        .linux
        .unwrap();
    assert!(
        host_stats.network.is_none(),
        "host network: the node's, not the pod's"
    );
    assert!(host_stats.process.unwrap().process_count.unwrap().value >= 1);

    // The stream: the same pods, each once, then the end.
    let mut stream = rt
        .stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest {})
        .await
        .expect("StreamPodSandboxMetrics")
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(batch) = tokio::time::timeout(Duration::from_secs(60), stream.message())
        .await
        .expect("the stream ends")
        .expect("stream ok")
    {
        assert!(!batch.pod_sandbox_metrics.is_empty(), "no empty batches");
        streamed.extend(batch.pod_sandbox_metrics);
    }
    let mut a = ids(&streamed);
    let mut b = ids(&all);
    a.sort();
    b.sort();
    assert_eq!(a, b, "streamed and listed pods");
    assert!(
        !container_of(pod_of(&streamed, &pod), &burner)
            .metrics
            .is_empty()
    );
}

/// ListPodSandboxMetrics latency (p50 of 30 calls) with 1, 5 and 10 pods of one
/// `sleep` container each. Prints numbers; asserts only that the pods are listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_list_pod_sandbox_metrics() {
    let image = busybox_image(&["sh", "sleep"], |_| {});
    let w = World::start(&image, "test/busybox", "").await;
    let mut rt = w.d.runtime().await.unwrap();
    let mut pods = 0;
    for target in [1, 5, 10] {
        while pods < target {
            let pod = w
                .run_pod(&PodOptions::named(&format!("bench-{pods}")))
                .await;
            w.run(&pod, w.config("sleep", &["sleep", "100000"])).await;
            pods += 1;
        }
        let mut samples = Vec::new();
        for _ in 0..30 {
            let t = std::time::Instant::now();
            let got = rt
                .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
                .await
                .unwrap()
                .into_inner()
                .pod_metrics;
            samples.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(got.len(), target);
        }
        samples.sort_by(f64::total_cmp);
        println!(
            "ListPodSandboxMetrics, {target:>2} pods: p50 {:.2} ms, p90 {:.2} ms",
            percentile(&samples, 0.5),
            percentile(&samples, 0.9)
        );
    }
}
