//! The real crustd server, in-process on a temp socket, driven by the generated client.

use std::{collections::HashMap, time::Duration};

use crust_proto::runtime::v1::{
    PodSandboxConfig, RunPodSandboxRequest, StatusRequest, VersionRequest,
    runtime_service_client::RuntimeServiceClient,
};
use crust_server::config::Config;
use tokio::sync::oneshot;
use tonic::Code;

struct Server {
    _dir: tempfile::TempDir,
    endpoint: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::Builder::new()
            .prefix("crust-it-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let mut config = Config {
            root: dir.path().join("root"),
            state: dir.path().join("state"),
            ..Config::default()
        };
        config.network.cni_conf_dir = dir.path().join("net.d");
        let endpoint = format!("unix://{}", config.socket_path().display());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(crust_server::serve::serve(config, vec![], async {
            let _ = stopped.await;
        }));
        let server = Server {
            _dir: dir,
            endpoint,
            stop: Some(stop),
            task,
        };
        for _ in 0..500 {
            if let Ok(mut c) = server.client().await
                && c.version(VersionRequest::default()).await.is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("in-process server did not become ready");
    }

    async fn client(&self) -> anyhow::Result<RuntimeServiceClient<tonic::transport::Channel>> {
        Ok(crust_ctl::runtime_client(
            crust_ctl::connect(&self.endpoint, Duration::from_secs(30)).await?,
        ))
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

fn sandbox_with_annotation(bytes: usize) -> RunPodSandboxRequest {
    RunPodSandboxRequest {
        config: Some(PodSandboxConfig {
            annotations: HashMap::from([("big".to_string(), "x".repeat(bytes))]),
            ..Default::default()
        }),
        runtime_handler: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_messages_up_to_16_mib_like_kubelet() {
    let server = Server::start().await;
    // 15 MiB: past gRPC's 4 MiB default, within kubelet's 16 MiB. The request is
    // decoded and reaches the handler, which rejects it for its missing metadata.
    let status = server
        .client()
        .await
        .unwrap()
        .run_pod_sandbox(sandbox_with_annotation(15 << 20))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("config.metadata"), "{status:?}");

    // 17 MiB from a client with no limit of its own: the server refuses to decode it.
    let unlimited = server
        .client()
        .await
        .unwrap()
        .max_encoding_message_size(usize::MAX);
    let status = unlimited
        .clone()
        .run_pod_sandbox(sandbox_with_annotation(17 << 20))
        .await
        .unwrap_err();
    // tonic reports OUT_OF_RANGE where grpc-go says RESOURCE_EXHAUSTED; either way the
    // message carries the limit.
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert!(
        status.message().contains(&(16 << 20).to_string()),
        "{status:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_all_succeed_and_shutdown_returns() {
    let server = Server::start().await;
    let client = server.client().await.unwrap();
    let calls = (0..64).map(|i| {
        let mut c = client.clone();
        tokio::spawn(async move {
            c.status(StatusRequest {
                verbose: i % 2 == 0,
            })
            .await
            .map(|r| r.into_inner())
        })
    });
    for call in calls {
        let status = call.await.unwrap().unwrap();
        assert_eq!(status.status.unwrap().conditions.len(), 2);
    }
    drop(client);
    server.stop().await;
}
