//! Pod sandboxes through the real crustd and crust-monitor: lifecycle, namespaces seen
//! from outside (nsfs inodes), pod files, cgroups, errors, restarts and crashes.

use std::{
    collections::HashMap, fs, os::unix::fs::MetadataExt, path::Path, process::Command,
    time::Duration,
};

use crust_e2e::{Crustd, Sandbox, cni::TestNetwork};
use crust_proto::runtime::v1::{
    DnsConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListPodSandboxRequest,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxFilter, PodSandboxMetadata,
    PodSandboxState, PodSandboxStateValue, PodSandboxStatusRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StopPodSandboxRequest, StreamPodSandboxesRequest,
};
use serde_json::Value;
use tonic::Code;

fn pod(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "e2e".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        dns_config: Some(DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["e2e.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        labels: HashMap::from([("app".into(), name.into()), ("suite".into(), "pods".into())]),
        annotations: HashMap::from([("note".into(), "e2e".into())]),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod.into(),
                    pid: NamespaceMode::Container.into(),
                    ipc: NamespaceMode::Pod.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn with_ns(
    mut config: PodSandboxConfig,
    network: NamespaceMode,
    pid: NamespaceMode,
    ipc: NamespaceMode,
) -> PodSandboxConfig {
    let ns = config
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap();
    ns.network = network.into();
    ns.pid = pid.into();
    ns.ipc = ipc.into();
    config
}

async fn run(d: &Crustd, config: PodSandboxConfig) -> Result<String, tonic::Status> {
    let req = RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    };
    Ok(d.runtime()
        .await
        .unwrap()
        .run_pod_sandbox(req)
        .await?
        .into_inner()
        .pod_sandbox_id)
}

async fn status(
    d: &Crustd,
    id: &str,
) -> Result<(crust_proto::runtime::v1::PodSandboxStatus, Value), tonic::Status> {
    let req = PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose: true,
    };
    let resp = d
        .runtime()
        .await
        .unwrap()
        .pod_sandbox_status(req)
        .await?
        .into_inner();
    let info: Value = serde_json::from_str(&resp.info["info"]).unwrap();
    Ok((resp.status.unwrap(), info))
}

async fn stop(d: &Crustd, id: &str) {
    d.runtime()
        .await
        .unwrap()
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap();
}

async fn remove(d: &Crustd, id: &str) {
    d.runtime()
        .await
        .unwrap()
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap();
}

async fn list(d: &Crustd, filter: Option<PodSandboxFilter>) -> Vec<String> {
    let resp = d
        .runtime()
        .await
        .unwrap()
        .list_pod_sandbox(ListPodSandboxRequest { filter })
        .await
        .unwrap()
        .into_inner();
    resp.items.into_iter().map(|p| p.id).collect()
}

fn inode(path: impl AsRef<Path>) -> u64 {
    fs::metadata(path.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
        .ino()
}

fn nsenter(args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .args(args)
        .output()
        .expect("nsenter (util-linux)");
    assert!(
        out.status.success(),
        "nsenter {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn ready() -> i32 {
    PodSandboxState::SandboxReady.into()
}

fn not_ready() -> i32 {
    PodSandboxState::SandboxNotready.into()
}

/// Nothing the pods made is left: no monitors, mounts or pod cgroups.
fn assert_no_leaks(sb: &Sandbox) {
    assert_eq!(
        sb.live_monitor_pids(),
        Vec::<i32>::new(),
        "monitors left running"
    );
    assert_eq!(
        sb.mounts(),
        Vec::<std::path::PathBuf>::new(),
        "mounts left behind"
    );
    let pods_cgroups: Vec<_> = sb
        .cgroups()
        .into_iter()
        .filter(|c| c.to_string_lossy().contains("/pods/"))
        .collect();
    assert_eq!(
        pods_cgroups,
        Vec::<std::path::PathBuf>::new(),
        "pod cgroups left behind"
    );
    let pods_dir = sb.state().join("pods");
    let left: Vec<_> = fs::read_dir(&pods_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(
        left,
        Vec::<std::path::PathBuf>::new(),
        "pod dirs left behind"
    );
}

#[tokio::test]
async fn lifecycle_namespaces_files_and_cleanup() {
    let sb = Sandbox::new().unwrap();
    let _net = TestNetwork::install(&sb, &[]);
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();

    let id = run(&d, pod("web")).await.unwrap();
    assert_eq!(id.len(), 64, "{id}");
    let (st, info) = status(&d, &id).await.unwrap();
    assert_eq!(st.state, ready(), "{info}");
    assert_eq!(st.metadata.as_ref().unwrap().name, "web");
    assert_eq!(st.labels["app"], "web");
    assert_eq!(st.annotations["note"], "e2e");
    assert_eq!(st.runtime_handler, "crust");
    assert!(st.created_at > 0);
    let ns = st.linux.unwrap().namespaces.unwrap().options.unwrap();
    assert_eq!(
        (ns.network, ns.pid, ns.ipc),
        (
            NamespaceMode::Pod.into(),
            NamespaceMode::Container.into(),
            NamespaceMode::Pod.into()
        )
    );

    // Namespaces, seen from outside: new net/ipc/uts pinned, host PID namespace.
    let monitor_pid = info["monitor"]["pid"].as_i64().unwrap();
    for nsname in ["net", "ipc", "uts"] {
        let pin = info["pins"][nsname]
            .as_str()
            .unwrap_or_else(|| panic!("no {nsname} pin: {info}"));
        assert_eq!(
            inode(pin),
            inode(format!("/proc/{monitor_pid}/ns/{nsname}")),
            "{nsname}"
        );
        assert_ne!(
            inode(pin),
            inode(format!("/proc/self/ns/{nsname}")),
            "{nsname} must be the pod's own"
        );
    }
    assert!(
        info["pins"].get("pid").is_none(),
        "pid: CONTAINER has no pod PID namespace"
    );
    let uts = format!("--uts={}", info["pins"]["uts"].as_str().unwrap());
    assert_eq!(nsenter(&[&uts, "hostname"]), "web");

    // Pod files.
    let pod_dir = Path::new(info["podDir"].as_str().unwrap());
    assert_eq!(
        fs::read_to_string(pod_dir.join("resolv.conf")).unwrap(),
        "nameserver 10.96.0.10\nsearch e2e.svc.cluster.local\noptions ndots:5\n"
    );
    assert_eq!(
        fs::read_to_string(pod_dir.join("hostname")).unwrap(),
        "web\n"
    );
    assert!(
        fs::read_to_string(pod_dir.join("hosts"))
            .unwrap()
            .contains("127.0.1.1\tweb")
    );
    assert!(
        sb.mounts().contains(&pod_dir.join("shm")),
        "pod /dev/shm is a tmpfs mount"
    );

    // The pod cgroup (crust picked it: no cgroup_parent given) exists.
    let cgroup = info["cgroup"]["pod"].as_str().unwrap().to_string();
    assert!(cgroup.starts_with(&sb.cgroup_prefix()), "{cgroup}");
    assert!(
        Path::new("/sys/fs/cgroup/memory")
            .join(&cgroup[1..])
            .is_dir()
    );

    // The monitor is small.
    let rss = fs::read_to_string(format!("/proc/{monitor_pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .map(|v| v.trim().trim_end_matches(" kB").parse::<u64>().unwrap())
        })
        .unwrap();
    println!("monitor RSS: {rss} KiB");

    // Unique prefixes work; unknown ids are NOT_FOUND.
    assert_eq!(status(&d, &id[..12]).await.unwrap().0.id, id);
    let missing = status(
        &d,
        "0000000000000000000000000000000000000000000000000000000000000000",
    )
    .await
    .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    stop(&d, &id).await;
    let (st, info) = status(&d, &id).await.unwrap();
    assert_eq!(st.state, not_ready(), "{info}");
    assert_eq!(info["monitor"]["alive"], false);
    assert_eq!(
        info["pins"],
        serde_json::json!({}),
        "stop releases the namespaces"
    );
    stop(&d, &id).await; // idempotent

    remove(&d, &id).await;
    assert_eq!(status(&d, &id).await.unwrap_err().code(), Code::NotFound);
    remove(&d, &id).await; // idempotent
    stop(&d, &id).await; // a missing pod is fine
    assert!(
        !Path::new("/sys/fs/cgroup/memory")
            .join(&cgroup[1..])
            .exists(),
        "pod cgroup removed"
    );
    assert_no_leaks(&sb);
}

#[tokio::test]
async fn namespace_modes() {
    let sb = Sandbox::new().unwrap();
    let _net = TestNetwork::install(&sb, &[]);
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();

    // pid: POD gets a pod init as PID 1 of a new PID namespace.
    let id = run(
        &d,
        with_ns(
            pod("shared-pid"),
            NamespaceMode::Pod,
            NamespaceMode::Pod,
            NamespaceMode::Pod,
        ),
    )
    .await
    .unwrap();
    let (st, info) = status(&d, &id).await.unwrap();
    assert_eq!(st.state, ready());
    let init = info["init"]["pid"].as_i64().unwrap();
    let pid_pin = info["pins"]["pid"].as_str().unwrap();
    assert_eq!(inode(pid_pin), inode(format!("/proc/{init}/ns/pid")));
    assert_ne!(inode(pid_pin), inode("/proc/self/ns/pid"));
    let nspid = fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    assert!(
        nspid
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1")),
        "init is PID 1 inside: {nspid}"
    );
    let init_cgroup = info["cgroup"]["init"].as_str().unwrap();
    assert!(
        fs::read_to_string(format!("/proc/{init}/cgroup"))
            .unwrap()
            .contains(init_cgroup)
    );

    // Killing the init (the PID namespace) makes the pod NOTREADY.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for _ in 0..200 {
        if status(&d, &id).await.unwrap().0.state == not_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status(&d, &id).await.unwrap().0.state, not_ready());
    remove(&d, &id).await;

    // network: NODE and ipc: NODE share the host's namespaces and pin nothing.
    let id = run(
        &d,
        with_ns(
            pod("hostnet"),
            NamespaceMode::Node,
            NamespaceMode::Container,
            NamespaceMode::Node,
        ),
    )
    .await
    .unwrap();
    let (st, info) = status(&d, &id).await.unwrap();
    assert_eq!(st.state, ready());
    let monitor_pid = info["monitor"]["pid"].as_i64().unwrap();
    for nsname in ["net", "ipc", "uts"] {
        assert_eq!(
            inode(format!("/proc/{monitor_pid}/ns/{nsname}")),
            inode(format!("/proc/self/ns/{nsname}")),
            "{nsname}"
        );
    }
    assert_eq!(info["pins"], serde_json::json!({}));
    let pod_dir = Path::new(info["podDir"].as_str().unwrap());
    assert_eq!(
        fs::read(pod_dir.join("hosts")).unwrap(),
        fs::read("/etc/hosts").unwrap(),
        "host network pods see the host's hosts"
    );
    remove(&d, &id).await;
    assert_no_leaks(&sb);
}

#[tokio::test]
async fn sysctls_apply_inside_the_pod() {
    let sb = Sandbox::new().unwrap();
    let _net = TestNetwork::install(&sb, &[]);
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    let mut config = pod("tuned");
    config.linux.as_mut().unwrap().sysctls = HashMap::from([
        ("net.ipv4.ip_forward".into(), "1".into()),
        ("kernel.shm_rmid_forced".into(), "1".into()),
    ]);
    let host_forward = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let id = run(&d, config).await.unwrap();
    let (_, info) = status(&d, &id).await.unwrap();
    let net = format!("--net={}", info["pins"]["net"].as_str().unwrap());
    let ipc = format!("--ipc={}", info["pins"]["ipc"].as_str().unwrap());
    assert_eq!(
        nsenter(&[&net, "cat", "/proc/sys/net/ipv4/ip_forward"]),
        "1"
    );
    assert_eq!(
        nsenter(&[&ipc, "cat", "/proc/sys/kernel/shm_rmid_forced"]),
        "1"
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forward,
        "host untouched"
    );
    remove(&d, &id).await;
    assert_no_leaks(&sb);
}

#[tokio::test]
async fn errors_name_what_is_wrong_and_roll_back() {
    let sb = Sandbox::new().unwrap();
    let _net = TestNetwork::install(&sb, &[]);
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();

    let id = run(&d, pod("dup")).await.unwrap();
    let err = run(&d, pod("dup")).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains(&id), "{}", err.message());

    let mut bad_sysctl = pod("bad-sysctl");
    bad_sysctl.linux.as_mut().unwrap().sysctls =
        HashMap::from([("kernel.pid_max".into(), "100".into())]);
    let mut unknown_sysctl = pod("unknown-sysctl");
    unknown_sysctl.linux.as_mut().unwrap().sysctls =
        HashMap::from([("net.no.such.key".into(), "1".into())]);
    let mut bad_cgroup = pod("bad-cgroup");
    bad_cgroup.linux.as_mut().unwrap().cgroup_parent = "/../escape".into();
    let mut no_meta = pod("no-meta");
    no_meta.metadata = None;
    let mut hostnet_sysctl = with_ns(
        pod("hostnet-sysctl"),
        NamespaceMode::Node,
        NamespaceMode::Container,
        NamespaceMode::Pod,
    );
    hostnet_sysctl.linux.as_mut().unwrap().sysctls =
        HashMap::from([("net.ipv4.ip_forward".into(), "1".into())]);
    let cases = [
        (bad_sysctl, Code::InvalidArgument, "kernel.pid_max"),
        (bad_cgroup, Code::InvalidArgument, "cgroup_parent"),
        (no_meta, Code::InvalidArgument, "config.metadata"),
        (hostnet_sysctl, Code::InvalidArgument, "net.ipv4.ip_forward"),
        // Namespaced but unknown to the kernel: refused before the monitor would
        // fail writing it (issue 13: it came back INTERNAL).
        (unknown_sysctl, Code::InvalidArgument, "net.no.such.key"),
    ];
    for (config, code, text) in cases {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let err = run(&d, config).await.unwrap_err();
        assert_eq!(err.code(), code, "{name}: {err:?}");
        assert!(
            err.message().contains(text),
            "{name}: {:?} should mention {text}",
            err.message()
        );
    }
    let req = RunPodSandboxRequest {
        config: Some(pod("handler")),
        runtime_handler: "kata".into(),
    };
    let err = d
        .runtime()
        .await
        .unwrap()
        .run_pod_sandbox(req)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("kata"), "{}", err.message());

    // Only the good pod exists; the failed ones left nothing.
    assert_eq!(list(&d, None).await, vec![id.clone()]);
    remove(&d, &id).await;
    assert_no_leaks(&sb);
    // After removal the name is free again.
    let again = run(&d, pod("dup")).await.unwrap();
    remove(&d, &again).await;
}

#[tokio::test]
async fn list_filters_and_stream() {
    let sb = Sandbox::new().unwrap();
    let _net = TestNetwork::install(&sb, &[]);
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    let a = run(&d, pod("a")).await.unwrap();
    let b = run(&d, pod("b")).await.unwrap();
    let c = run(&d, pod("c")).await.unwrap();
    stop(&d, &c).await;

    let mut all = list(&d, None).await;
    all.sort();
    let mut want = vec![a.clone(), b.clone(), c.clone()];
    want.sort();
    assert_eq!(all, want);
    let f = |id: &str, state: Option<i32>, labels: &[(&str, &str)]| {
        Some(PodSandboxFilter {
            id: id.into(),
            state: state.map(|state| PodSandboxStateValue { state }),
            label_selector: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    };
    assert_eq!(list(&d, f(&b[..10], None, &[])).await, vec![b.clone()]);
    assert_eq!(
        list(&d, f("", Some(not_ready()), &[])).await,
        vec![c.clone()]
    );
    let mut ready_ids = list(&d, f("", Some(ready()), &[])).await;
    ready_ids.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(ready_ids, want);
    assert_eq!(
        list(&d, f("", None, &[("app", "a")])).await,
        vec![a.clone()]
    );
    assert_eq!(
        list(&d, f("", None, &[("app", "a"), ("suite", "other")])).await,
        Vec::<String>::new()
    );

    let mut stream = d
        .runtime()
        .await
        .unwrap()
        .stream_pod_sandboxes(StreamPodSandboxesRequest {
            filter: f("", None, &[("suite", "pods")]),
        })
        .await
        .unwrap()
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(msg) = stream.message().await.unwrap() {
        streamed.extend(msg.pod_sandboxes.into_iter().map(|p| p.id));
    }
    streamed.sort();
    let mut want = vec![a.clone(), b.clone(), c.clone()];
    want.sort();
    assert_eq!(streamed, want);
    for id in [a, b, c] {
        remove(&d, &id).await;
    }
    assert_no_leaks(&sb);
}

#[tokio::test]
async fn pods_survive_crustd_restarts_and_crashes() {
    let sb = Sandbox::new().unwrap();
    let _net = TestNetwork::install(&sb, &[]);
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    let id = run(
        &d,
        with_ns(
            pod("durable"),
            NamespaceMode::Pod,
            NamespaceMode::Pod,
            NamespaceMode::Pod,
        ),
    )
    .await
    .unwrap();
    let (before, info) = status(&d, &id).await.unwrap();
    let net_inode = inode(info["pins"]["net"].as_str().unwrap());

    assert!(d.terminate().await.unwrap().success());
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    let (after, info) = status(&d, &id).await.unwrap();
    assert_eq!(
        after.state,
        ready(),
        "pod still ready after a clean restart: {info}"
    );
    assert_eq!(after.created_at, before.created_at);
    assert_eq!(
        inode(info["pins"]["net"].as_str().unwrap()),
        net_inode,
        "same network namespace"
    );

    d.crash().await.unwrap();
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    let (after, _) = status(&d, &id).await.unwrap();
    assert_eq!(
        after.state,
        ready(),
        "pod still ready after crustd was killed"
    );
    assert_eq!(list(&d, None).await, vec![id.clone()], "not duplicated");
    assert_eq!(
        run(&d, pod("durable")).await.unwrap_err().code(),
        Code::AlreadyExists,
        "name still reserved"
    );

    remove(&d, &id).await;
    assert_no_leaks(&sb);
}

#[tokio::test]
async fn a_killed_monitor_makes_the_pod_not_ready_and_cleanup_still_works() {
    let sb = Sandbox::new().unwrap();
    let _net = TestNetwork::install(&sb, &[]);
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    let id = run(&d, pod("fragile")).await.unwrap();
    let (_, info) = status(&d, &id).await.unwrap();
    let monitor = info["monitor"]["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for _ in 0..200 {
        if status(&d, &id).await.unwrap().0.state == not_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        status(&d, &id).await.unwrap().0.state,
        not_ready(),
        "never silently lost, never falsely ready"
    );
    stop(&d, &id).await;
    remove(&d, &id).await;
    assert_no_leaks(&sb);
}

#[tokio::test]
async fn after_a_reboot_pods_are_not_ready_and_can_be_removed() {
    let sb = Sandbox::new().unwrap();
    let _net = TestNetwork::install(&sb, &[]);
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    let id = run(
        &d,
        with_ns(
            pod("rebooted"),
            NamespaceMode::Pod,
            NamespaceMode::Pod,
            NamespaceMode::Pod,
        ),
    )
    .await
    .unwrap();
    assert!(d.terminate().await.unwrap().success());
    // "Reboot": every process and mount of the pod goes, and volatile state is wiped.
    for pid in sb.live_monitor_pids() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let mut mounts = sb.mounts();
    mounts.reverse();
    for m in mounts {
        nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH).unwrap();
    }
    fs::remove_dir_all(sb.state()).unwrap();

    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    let (st, _) = status(&d, &id).await.unwrap();
    assert_eq!(st.state, not_ready());
    stop(&d, &id).await;
    remove(&d, &id).await;
    assert_eq!(list(&d, None).await, Vec::<String>::new());
    assert_no_leaks(&sb);
}

#[tokio::test]
async fn a_crustd_crash_mid_run_leaves_a_whole_pod_or_nothing() {
    let sb = Sandbox::new().unwrap();
    let _net = TestNetwork::install(&sb, &[]);
    // A monitor that takes 2 s to start, so crustd can be killed while it waits.
    let wrapper = sb.path().join("slow-monitor.sh");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nsleep 2\nexec {} \"$@\"\n",
            crust_e2e::binary("crust-monitor").display()
        ),
    )
    .unwrap();
    fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    sb.write_config(&format!(
        "[runtime]\nmonitor_path = \"{}\"\n",
        wrapper.display()
    ))
    .unwrap();
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();

    let mut client = d.runtime().await.unwrap();
    let pending = tokio::spawn(async move {
        client
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod("interrupted")),
                runtime_handler: String::new(),
            })
            .await
    });
    // Wait until the pod is half made: its record says "creating" and its shm is mounted.
    let records = sb.root().join("records/sandbox");
    for _ in 0..500 {
        let creating = fs::read_dir(&records)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                fs::read_to_string(e.path())
                    .unwrap_or_default()
                    .contains("\"creating\"")
            });
        if creating && !sb.mounts().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!sb.mounts().is_empty(), "pod creation should be under way");
    d.crash().await.unwrap();
    assert!(
        pending.await.unwrap().is_err(),
        "the interrupted call cannot have succeeded"
    );

    sb.write_config("").unwrap();
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    assert_eq!(
        list(&d, None).await,
        Vec::<String>::new(),
        "no half-made pod is listed"
    );
    // The slow monitor wakes up after crustd died: it must give up, not build a pod.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_no_leaks(&sb);
    assert_eq!(
        fs::read_dir(&records).unwrap().count(),
        0,
        "the record is rolled back too"
    );
    // And the name is free.
    let id = run(&d, pod("interrupted")).await.unwrap();
    remove(&d, &id).await;
}

#[tokio::test]
async fn fifty_pods_concurrently_leave_nothing_behind() {
    let sb = Sandbox::new().unwrap();
    let _net = TestNetwork::install(&sb, &[]);
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    let client = d.runtime().await.unwrap();
    let runs: Vec<_> = (0..50)
        .map(|i| {
            let mut c = client.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let id = c
                    .run_pod_sandbox(RunPodSandboxRequest {
                        config: Some(pod(&format!("many-{i}"))),
                        runtime_handler: String::new(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .pod_sandbox_id;
                (id, started.elapsed())
            })
        })
        .collect();
    let mut ids = Vec::new();
    let mut latencies = Vec::new();
    for r in runs {
        let (id, took) = r.await.unwrap();
        ids.push(id);
        latencies.push(took);
    }
    latencies.sort();
    println!(
        "50 concurrent RunPodSandbox: p50 {:?}, p95 {:?}",
        latencies[24], latencies[47]
    );
    let ready_filter = Some(PodSandboxFilter {
        state: Some(PodSandboxStateValue { state: ready() }),
        ..Default::default()
    });
    assert_eq!(list(&d, ready_filter).await.len(), 50);
    assert_eq!(sb.live_monitor_pids().len(), 50, "one monitor per pod");

    let removals: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let mut c = client.clone();
            tokio::spawn(async move {
                c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                    .await
                    .unwrap()
            })
        })
        .collect();
    for r in removals {
        r.await.unwrap();
    }
    assert_eq!(list(&d, None).await, Vec::<String>::new());
    assert_no_leaks(&sb);
    let pins: Vec<_> = fs::read_dir(sb.state().join("ns"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(
        pins,
        Vec::<std::path::PathBuf>::new(),
        "pin directories removed"
    );
}

#[tokio::test]
async fn crustctl_pod_verbs() {
    let sb = Sandbox::new().unwrap();
    let _net = TestNetwork::install(&sb, &[]);
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    let ep = sb.endpoint();
    let ctl = |args: &[&str]| {
        let out = crust_e2e::crustctl(&ep, args).unwrap();
        assert!(
            out.status.success(),
            "crustctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // crictl's own example format: snake_case keys, as Go's JSON decoder reads them.
    let json = sb.path().join("pod.json");
    fs::write(
        &json,
        r#"{"metadata":{"name":"ctl-json","namespace":"default","uid":"u1","attempt":1},"log_directory":"/tmp","hostname":"ctl-json","labels":{"tier":"front"},"linux":{}}"#,
    )
    .unwrap();
    let yaml = sb.path().join("pod.yaml");
    fs::write(&yaml, "metadata:\n  name: ctl-yaml\n  namespace: default\n  uid: u2\nlinux:\n  security_context:\n    namespace_options:\n      pid: POD\n").unwrap();

    let a = ctl(&["runp", json.to_str().unwrap()]).trim().to_string();
    let b = ctl(&["runp", yaml.to_str().unwrap()]).trim().to_string();
    assert_eq!((a.len(), b.len()), (64, 64));

    let quiet = ctl(&["pods", "-q"]);
    assert_eq!(quiet.lines().count(), 2, "{quiet}");
    assert_eq!(ctl(&["pods", "-q", "--label", "tier=front"]).trim(), a);
    assert_eq!(ctl(&["pods", "-q", "--name", "yaml"]).trim(), b);
    let table = ctl(&["pods"]);
    assert!(table.starts_with("POD ID"), "{table}");
    assert!(
        table.contains("ctl-json") && table.contains("Ready"),
        "{table}"
    );

    let inspect: Value = serde_json::from_str(&ctl(&["inspectp", &a[..8]])).unwrap();
    assert_eq!(inspect["status"]["metadata"]["name"], "ctl-json");
    assert_eq!(inspect["status"]["state"], "SANDBOX_READY");
    assert_eq!(inspect["info"]["ready"], true);
    let inspect_b: Value = serde_json::from_str(&ctl(&["inspectp", &b])).unwrap();
    assert_eq!(
        inspect_b["status"]["linux"]["namespaces"]["options"]["pid"],
        "POD"
    );

    assert!(ctl(&["stopp", &a]).contains("Stopped sandbox"));
    assert_eq!(ctl(&["pods", "-q", "--state", "notready"]).trim(), a);
    let refused = crust_e2e::crustctl(&ep, &["rmp", &b]).unwrap();
    assert!(!refused.status.success(), "a ready pod needs --force");
    assert!(ctl(&["rmp", "--all", "--force"]).lines().count() == 2);
    assert_eq!(ctl(&["pods", "-q"]), "");
    assert_no_leaks(&sb);
}

#[tokio::test]
async fn update_pod_sandbox_resources_sets_limits_on_crusts_own_pod_cgroup() {
    use crust_proto::runtime::v1::{LinuxContainerResources, UpdatePodSandboxResourcesRequest};
    let sb = Sandbox::new().unwrap();
    let _net = TestNetwork::install(&sb, &[]);
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    let id = run(&d, pod("resized")).await.unwrap();
    let (_, info) = status(&d, &id).await.unwrap();
    let cgroup = info["cgroup"]["pod"].as_str().unwrap().to_string();
    let req = UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: id.clone(),
        overhead: Some(LinuxContainerResources {
            memory_limit_in_bytes: 16 << 20,
            ..Default::default()
        }),
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 256 << 20,
            ..Default::default()
        }),
    };
    d.runtime()
        .await
        .unwrap()
        .update_pod_sandbox_resources(req.clone())
        .await
        .unwrap();
    let limit = fs::read_to_string(format!(
        "/sys/fs/cgroup/memory{cgroup}/memory.limit_in_bytes"
    ))
    .unwrap();
    assert_eq!(
        limit.trim(),
        (272u64 << 20).to_string(),
        "containers plus overhead"
    );
    let missing = UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: "f".repeat(64),
        ..req
    };
    let err = d
        .runtime()
        .await
        .unwrap()
        .update_pod_sandbox_resources(missing)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    remove(&d, &id).await;
}
