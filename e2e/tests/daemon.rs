//! crustd as a process: serving, readiness, shutdown, restart, exclusivity, recovery.

use std::{fs, os::unix::fs::PermissionsExt, time::Duration};

use crust_e2e::{Crustd, Sandbox, crustctl};
use crust_proto::runtime::v1::{
    AttachRequest, CgroupDriver, CheckpointContainerRequest, NetworkConfig, RuntimeConfig,
    RuntimeConfigRequest, StatusRequest, UpdateRuntimeConfigRequest, VersionRequest,
};
use nix::sys::signal::Signal;
use serde_json::Value;
use tonic::Code;

async fn verbose_info(d: &Crustd) -> serde_json::Map<String, Value> {
    let status = d
        .runtime()
        .await
        .unwrap()
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    status
        .info
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::from_str(v).expect("info values are JSON"),
            )
        })
        .collect()
}

async fn set_pod_cidr(d: &Crustd, cidr: &str) -> Result<(), tonic::Status> {
    let req = UpdateRuntimeConfigRequest {
        runtime_config: Some(RuntimeConfig {
            network_config: Some(NetworkConfig {
                pod_cidr: cidr.into(),
            }),
        }),
    };
    d.runtime()
        .await
        .unwrap()
        .update_runtime_config(req)
        .await
        .map(|_| ())
}

#[tokio::test]
async fn version_over_grpc_and_crustctl() {
    let sb = Sandbox::new().unwrap();
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();

    let v = d
        .runtime()
        .await
        .unwrap()
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "crust");
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));

    let out = crustctl(&sb.endpoint(), &["version"]).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "crustctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("RuntimeName:  crust"), "{stdout}");
    assert!(stdout.contains("RuntimeApiVersion:  v1"), "{stdout}");

    let out = crustctl(&sb.endpoint(), &["version", "-o", "json"]).unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["runtimeName"], "crust");
}

#[tokio::test]
async fn socket_is_0660() {
    let sb = Sandbox::new().unwrap();
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    let mode = fs::metadata(sb.socket()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "socket mode {mode:o}");
}

#[tokio::test]
async fn status_reports_network_readiness_from_cni_config() {
    let sb = Sandbox::new().unwrap();
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();

    let condition = |status: &crust_proto::runtime::v1::StatusResponse, kind: &str| {
        status
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .find(|c| c.r#type == kind)
            .cloned()
            .unwrap()
    };
    let mut client = d.runtime().await.unwrap();
    let status = client
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(condition(&status, "RuntimeReady").status);
    let net = condition(&status, "NetworkReady");
    assert!(!net.status, "no CNI config yet: {net:?}");
    assert_eq!(net.reason, "NetworkPluginNotReady");
    assert!(
        net.message
            .contains(&sb.cni_conf_dir().display().to_string()),
        "{}",
        net.message
    );
    assert!(status.info.is_empty(), "info only when verbose");
    let features = status.features.expect("Status.features");
    assert!(
        features.supplemental_groups_policy && !features.user_namespaces_host_network,
        "{features:?}"
    );
    let handlers: Vec<_> = status
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(
        handlers,
        vec!["", "crust"],
        "default handler plus the configured one"
    );

    // Dropping a config in makes the network ready without a restart. The plugins are
    // Debian's real CNI binaries (containernetworking-plugins).
    assert!(
        std::path::Path::new("/usr/lib/cni/bridge").exists(),
        "containernetworking-plugins is required (installed by .ci/run)"
    );
    fs::write(
        sb.cni_conf_dir().join("10-test.conflist"),
        r#"{"cniVersion":"1.0.0","name":"e2e","plugins":[{"type":"bridge","bridge":"crust-e2e0"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
    )
    .unwrap();
    let status = client
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let net = condition(&status, "NetworkReady");
    assert!(net.status, "{net:?}");
    let cni: Value = serde_json::from_str(&status.info["cni"]).unwrap();
    assert_eq!(cni["network"]["name"], "e2e");
    assert_eq!(cni["network"]["plugin_paths"][0], "/usr/lib/cni/bridge");

    let out = crustctl(&sb.endpoint(), &["info"]).unwrap();
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["status"]["conditions"][1]["type"], "NetworkReady");
    assert_eq!(info["status"]["conditions"][1]["status"], true);
    assert_eq!(info["config"]["root"], sb.root().display().to_string());
}

#[tokio::test]
async fn runtime_config_reports_the_configured_cgroup_driver() {
    for (driver, want) in [
        ("cgroupfs", CgroupDriver::Cgroupfs),
        ("systemd", CgroupDriver::Systemd),
    ] {
        let sb = Sandbox::new().unwrap();
        sb.write_config(&format!("[cgroup]\ndriver = \"{driver}\"\n"))
            .unwrap();
        let mut d = sb.start().unwrap();
        d.wait_ready().await.unwrap();
        let resp = d
            .runtime()
            .await
            .unwrap()
            .runtime_config(RuntimeConfigRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.linux.unwrap().cgroup_driver(), want, "driver {driver}");
    }
}

/// Every CRI RPC is served now (CheckpointContainer was the last): an empty
/// CheckpointContainer is the caller's mistake, named by field, not UNIMPLEMENTED.
#[tokio::test]
async fn checkpoint_container_is_served() {
    let sb = Sandbox::new().unwrap();
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    let mut rt = d.runtime().await.unwrap();
    let status = rt
        .checkpoint_container(CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("location"), "{status:?}");
}

#[tokio::test]
async fn update_runtime_config_validates_and_persists_across_restart_and_crash() {
    let sb = Sandbox::new().unwrap();
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();

    let err = set_pod_cidr(&d, "10.88.0.0/99").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("runtime_config.network_config.pod_cidr"),
        "{}",
        err.message()
    );
    set_pod_cidr(&d, "")
        .await
        .expect("empty CIDR is a no-op, as kubelet sends before it knows one");
    set_pod_cidr(&d, "10.88.0.0/16,fd00:88::/64").await.unwrap();

    // Clean restart.
    assert!(d.terminate().await.unwrap().success(), "{}", d.logs());
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    assert_eq!(
        verbose_info(&d).await["runtimeConfig"]["pod_cidrs"],
        serde_json::json!(["10.88.0.0/16", "fd00:88::/64"])
    );

    // Crash (SIGKILL): the stale socket is replaced and the acknowledged update survives.
    set_pod_cidr(&d, "10.99.0.0/16").await.unwrap();
    d.crash().await.unwrap();
    assert!(
        sb.socket().exists(),
        "a crash leaves the socket file behind"
    );
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    let info = verbose_info(&d).await;
    assert_eq!(
        info["runtimeConfig"]["pod_cidrs"],
        serde_json::json!(["10.99.0.0/16"])
    );
    assert_eq!(info["recovery"]["quarantined"], serde_json::json!([]));
}

#[tokio::test]
async fn sigterm_and_sigint_shut_down_cleanly() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let sb = Sandbox::new().unwrap();
        let mut d = sb.start().unwrap();
        d.wait_ready().await.unwrap();
        d.signal(signal).unwrap();
        let status = d.wait_exit(Duration::from_secs(20)).await.unwrap();
        assert_eq!(status.code(), Some(0), "{signal}: {}", d.logs());
        assert!(
            !sb.socket().exists(),
            "{signal}: socket must be removed on clean shutdown"
        );
        // The lock is released: a new daemon can take over at once.
        let mut again = sb.start().unwrap();
        again.wait_ready().await.unwrap();
    }
}

#[tokio::test]
async fn a_second_crustd_on_the_same_socket_is_refused() {
    let sb = Sandbox::new().unwrap();
    let mut first = sb.start().unwrap();
    first.wait_ready().await.unwrap();

    let mut second = sb.start().unwrap();
    let status = second.wait_exit(Duration::from_secs(20)).await.unwrap();
    assert!(!status.success(), "second crustd must fail");
    let logs = second.logs();
    assert!(logs.contains("another crustd is serving"), "{logs}");
    assert!(logs.contains(&sb.socket().display().to_string()), "{logs}");

    // The first one is unharmed.
    first
        .runtime()
        .await
        .unwrap()
        .version(VersionRequest::default())
        .await
        .expect("first crustd still serves");
}

#[tokio::test]
async fn a_corrupt_record_is_quarantined_and_the_daemon_serves() {
    let sb = Sandbox::new().unwrap();
    let dir = sb.root().join("records/node-config");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("node.json"),
        br#"{"kind":"node-config","version":1,"id":"node","record":{"pod_ci"#,
    )
    .unwrap();

    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    let info = verbose_info(&d).await;
    let quarantined = info["recovery"]["quarantined"].as_array().unwrap();
    assert_eq!(quarantined.len(), 1, "{info:?}");
    assert!(
        quarantined[0]["reason"]
            .as_str()
            .unwrap()
            .contains("invalid JSON"),
        "{quarantined:?}"
    );
    let moved = quarantined[0]["moved_to"].as_str().unwrap();
    assert!(
        moved.starts_with(
            &sb.root()
                .join("quarantine/node-config")
                .display()
                .to_string()
        ),
        "{moved}"
    );
    assert!(
        fs::read(moved).unwrap().starts_with(b"{\"kind\""),
        "quarantined bytes are kept as they were"
    );
    assert!(!dir.join("node.json").exists());
    assert!(
        d.logs().contains("quarantined"),
        "the operator is told: {}",
        d.logs()
    );

    // The daemon works normally, including writing the record anew.
    set_pod_cidr(&d, "10.1.0.0/16").await.unwrap();
    assert!(dir.join("node.json").exists());
}

#[tokio::test]
async fn bad_config_is_refused_naming_the_key_and_file() {
    let sb = Sandbox::new().unwrap();
    sb.write_config("[cgroup]\ndriver = \"cgroupfs2\"\n")
        .unwrap();
    let mut d = sb.start().unwrap();
    let status = d.wait_exit(Duration::from_secs(20)).await.unwrap();
    assert_eq!(status.code(), Some(2), "{}", d.logs());
    let logs = d.logs();
    assert!(
        logs.contains("cgroup.driver") && logs.contains("crust.toml"),
        "{logs}"
    );

    // `crustd config check` says the same without starting anything.
    let out = std::process::Command::new(crust_e2e::binary("crustd"))
        .args(["config", "check"])
        .arg(sb.config_file())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cgroup.driver"));
}

#[tokio::test]
async fn metrics_count_rpcs_and_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sb = Sandbox::new().unwrap();
    sb.write_config("[metrics]\naddress = \"127.0.0.1:0\"\n")
        .unwrap();
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    let mut rt = d.runtime().await.unwrap();
    rt.version(VersionRequest::default()).await.unwrap();
    let _ = rt
        .checkpoint_container(CheckpointContainerRequest::default())
        .await;
    let address = verbose_info(&d).await["metrics"]["address"]
        .as_str()
        .unwrap()
        .to_string();

    let mut conn = tokio::net::TcpStream::connect(&address).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains(r#"crust_rpc_requests_total{rpc="Version"}"#),
        "{body}"
    );
    assert!(
        body.contains(
            r#"crust_rpc_errors_total{rpc="CheckpointContainer",code="INVALID_ARGUMENT"} 1"#
        ),
        "{body}"
    );
    assert!(
        body.contains(r#"crust_rpc_duration_seconds_bucket{le="#),
        "{body}"
    );
}

#[tokio::test]
async fn json_logs_carry_the_rpc_span() {
    let sb = Sandbox::new().unwrap();
    sb.write_config("log_format = \"json\"\n").unwrap();
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    let _ = d
        .runtime()
        .await
        .unwrap()
        .attach(AttachRequest::default())
        .await;
    let logs = d.logs();
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["span"]["rpc"] == "Attach")
        .unwrap_or_else(|| panic!("no JSON log line in the Attach span:\n{logs}"));
    assert_eq!(line["span"]["name"], "rpc");
}

#[tokio::test]
async fn shutdown_is_bounded_when_a_client_does_not_go_away() {
    use std::io::Write;
    let sb = Sandbox::new().unwrap();
    sb.write_config("shutdown_timeout = \"1s\"\n").unwrap();
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    // An HTTP/2 client that opens a connection and then never reads or answers: the
    // server's graceful GOAWAY/PING handshake cannot complete.
    let mut stuck = std::os::unix::net::UnixStream::connect(sb.socket()).unwrap();
    stuck
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    d.signal(Signal::SIGTERM).unwrap();
    let status = d.wait_exit(Duration::from_secs(20)).await.unwrap();
    assert_eq!(status.code(), Some(0), "{}", d.logs());
    assert!(
        d.logs().contains("did not finish within shutdown_timeout"),
        "{}",
        d.logs()
    );
    drop(stuck);
}
