//! Smoke run of the CRI benchmark (`bench-cri`) against crust only: 3 latency rounds and
//! 5 density pods. Checks the shape of the report, not the numbers' size; containerd is
//! not needed.

use crust_e2e::{
    Sandbox, SpawnOptions,
    cni::TestNetwork,
    cri_bench::{self, Options, Target},
    registry::Registry,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_cri_smoke_against_crust() {
    let registry = Registry::start().await.unwrap();
    let images = cri_bench::push_test_images(&registry).await.unwrap();
    let sb = Sandbox::new().unwrap();
    let net = TestNetwork::install(&sb, &[]);
    let logs = tempfile::tempdir_in("/var/tmp").unwrap();
    // The step timings `bench-cri --breakdown` reads.
    let timings = logs.path().join("span-timings.tsv");
    let mut d = sb
        .start_with(&SpawnOptions {
            env: vec![("CRUST_SPAN_TIMINGS".into(), timings.display().to_string())],
            ..Default::default()
        })
        .unwrap();
    d.wait_ready().await.unwrap();
    let target = Target {
        name: "crust".into(),
        endpoint: sb.endpoint(),
        daemon_pid: None, // found from the socket
    };
    let opts = Options {
        iterations: 3,
        pods: 5,
        concurrency: 2,
        image: images.busybox,
        pre_pull: vec![],
        log_dir: logs.path().to_path_buf(),
        fresh_connections: false,
    };
    let report = cri_bench::run(&target, &opts)
        .await
        .unwrap_or_else(|e| panic!("bench failed: {e:#}\ncrustd log:\n{}", d.logs()));
    report.print_table();

    assert_eq!(report.rows.len(), 6);
    for row in &report.rows {
        assert_eq!(row.samples.len(), 3, "{}", row.name);
        assert!(row.samples.iter().all(|&s| s > 0.0), "{row:?}");
    }
    let density = report.density.as_ref().expect("density ran");
    assert_eq!(density.pods, 5);
    assert_eq!(
        density.helpers.processes, 5,
        "one monitor per pod: {density:?}"
    );
    assert_eq!(
        density.infra.processes, 5,
        "one pod init per pod: {density:?}"
    );
    for (name, value, _) in density.metrics() {
        if name != "bytes per pod (PSS)" {
            assert!(value > 0.0, "{name}: {value}");
        }
    }
    assert_eq!(report.leftover_pods, 0);
    assert_eq!(report.leftover_containers, 0);
    // Warm-up plus 3 rounds: the rounds' RunPodSandbox, Stop and Remove, each with its
    // steps, the CNI plugins by name among them.
    let steps = cri_bench::breakdown::read(&timings, 1, 3).unwrap();
    for (rpc, step) in [
        ("RunPodSandbox", "(whole RPC, server side)"),
        ("RunPodSandbox", "pod.monitor_spawn"),
        ("RunPodSandbox", "cni.plugin:bridge ADD"),
        ("RunPodSandbox", "pod.record"),
        ("StopPodSandbox", "cni.plugin:bridge DEL"),
        ("StopPodSandbox", "pod.monitor_stop"),
        ("RemovePodSandbox", "pod.forget"),
    ] {
        let found = steps.iter().find(|s| s.rpc == rpc && s.step == step);
        assert_eq!(
            found.map(|s| s.samples.len()),
            Some(3),
            "{rpc} {step} in {steps:?}"
        );
    }
    let json = report.to_json();
    assert_eq!(json["latency"][0]["samples"], 3);

    // Teardown left nothing behind on the host either.
    assert_no_monitor_veth_or_ip_left(&sb, &net);
    d.terminate().await.unwrap();
}

/// `bench-cri --churn` for a moment, 2 workers: every pod it made is gone afterwards,
/// and so is everything of them on the host. Correctness only; the numbers are not
/// looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_smoke_leaves_nothing_behind() {
    let registry = Registry::start().await.unwrap();
    let images = cri_bench::push_test_images(&registry).await.unwrap();
    let sb = Sandbox::new().unwrap();
    let net = TestNetwork::install(&sb, &[]);
    let logs = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    let target = Target {
        name: "crust".into(),
        endpoint: sb.endpoint(),
        daemon_pid: None,
    };
    let opts = Options {
        iterations: 0,
        pods: 0,
        concurrency: 2,
        image: images.busybox,
        pre_pull: vec![],
        log_dir: logs.path().to_path_buf(),
        fresh_connections: false,
    };
    // Workers start a new cycle until the time is up, so each finishes at least one.
    let churn = cri_bench::churn(&target, &opts, 1.0)
        .await
        .unwrap_or_else(|e| panic!("churn failed: {e:#}\ncrustd log:\n{}", d.logs()));
    churn.print();
    assert!(churn.cycles >= 2, "each worker runs a cycle: {churn:?}");
    assert_eq!(churn.start_ms.len(), churn.cycles);
    assert_eq!(churn.teardown_ms.len(), churn.cycles);
    assert_eq!(churn.leftover_pods, 0, "{churn:?}");
    assert!(
        churn.rss_start_kib > 0 && churn.rss_end_kib > 0,
        "{churn:?}"
    );

    // Nothing of any pod is left: not in crustd, not on the host.
    let mut rt = d.runtime().await.unwrap();
    let pods = rt
        .list_pod_sandbox(crust_proto::runtime::v1::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
    let containers = rt
        .list_containers(crust_proto::runtime::v1::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(containers.is_empty(), "{containers:?}");
    for dir in ["pods", "ns"] {
        let left: Vec<_> = std::fs::read_dir(sb.state().join(dir))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{dir}/ still holds {left:?}");
    }
    assert_no_monitor_veth_or_ip_left(&sb, &net);
    d.terminate().await.unwrap();
}

/// No monitor, veth or IP lease of the test's is left on the host.
fn assert_no_monitor_veth_or_ip_left(sb: &Sandbox, net: &TestNetwork) {
    assert!(
        sb.live_monitor_pids().is_empty(),
        "{:?}",
        sb.live_monitor_pids()
    );
    assert!(
        net.attached_veths().is_empty(),
        "{:?}",
        net.attached_veths()
    );
    assert!(net.allocated_ips().is_empty(), "{:?}", net.allocated_ips());
}
