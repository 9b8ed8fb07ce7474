//! Running the daemon: socket, services, recovery, graceful shutdown.

use std::{fs, future::Future, os::unix::fs::PermissionsExt, path::PathBuf, sync::Arc};

use anyhow::Context;
use crust_proto::{
    MAX_MESSAGE_SIZE,
    crust::v1::images_server::ImagesServer,
    runtime::v1::{
        image_service_server::ImageServiceServer, runtime_service_server::RuntimeServiceServer,
    },
};
use tokio::{net::TcpListener, sync::oneshot};
use tokio_stream::{StreamExt, wrappers::UnixListenerStream};
use tonic::transport::Server;

use crate::{
    config::Config,
    daemon::Daemon,
    listener, metrics, recovery,
    services::{CrustImagesApi, ImageApi, RuntimeApi},
};

/// Runs crustd until `shutdown` resolves, then stops accepting, lets in-flight RPCs
/// finish for at most `config.shutdown_timeout`, removes the socket and returns.
///
/// The socket is bound before state is loaded, so clients that connect early get
/// UNAVAILABLE ("starting") rather than "connection refused".
pub async fn serve(
    config: Config,
    config_files: Vec<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // The socket lock comes first: a daemon refused because another one serves must
    // not touch that daemon's directories.
    let (cri_listener, socket) =
        listener::bind(&config.socket_path(), config.socket_gid).context("open CRI socket")?;
    for dir in [&config.root, &config.state] {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        // Records and layers are root's; others may traverse to their own sockets later.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o711))
            .with_context(|| format!("set mode of {}", dir.display()))?;
    }
    // Only root may enter these, also when an older crustd left them open:
    // containers' writable layers (setuid binaries and device nodes they made,
    // CVE-2021-41091; the image store does the same for `<root>/image` when it opens),
    // the pod and container records and the pods' runtime files (their configs carry
    // labels, annotations, env and mounts, which are for the kubelet's eyes).
    for dir in [
        config.root.join("containers"),
        config.root.join("records"),
        config.root.join("quarantine"),
        config.state.join("pods"),
    ] {
        crust_runtime::ensure_private_dir(&dir)
            .with_context(|| format!("make {} private", dir.display()))?;
    }
    let daemon = Arc::new(Daemon::new(config.clone(), config_files).context("open record store")?);
    // Lifecycle events (GetContainerEvents) and exits as the monitors record them,
    // both running before recovery: exits it learns become STOPPED events, held for
    // the first subscriber.
    if let Some(events) = daemon.sandboxes.lifecycle_events() {
        tokio::spawn(crate::events::forward(daemon.clone(), events));
    }
    let exits = daemon.clone();
    tokio::spawn(async move { exits.sandboxes.watch_exits().await });
    tracing::info!(socket = %socket.path.display(), root = %config.root.display(), state = %config.state.display(), "listening");

    let metrics_task = match config.metrics.address {
        Some(address) => {
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("bind metrics address {address}"))?;
            let bound = listener.local_addr().context("metrics listener address")?;
            let _ = daemon.metrics_address.set(bound);
            tracing::info!(address = %bound, "serving metrics at /metrics");
            Some(tokio::spawn(metrics::serve(
                listener,
                daemon.metrics.clone(),
            )))
        }
        None => None,
    };

    let streaming_listener = TcpListener::bind(config.streaming.address)
        .await
        .with_context(|| format!("bind streaming address {}", config.streaming.address))?;
    let bound = streaming_listener
        .local_addr()
        .context("streaming listener address")?;
    let _ = daemon
        .streaming
        .set(Arc::new(crate::streaming::Streaming::new(
            bound,
            config.streaming.token_timeout,
            config.streaming.idle_timeout,
        )));
    tracing::info!(address = %bound, "serving exec, attach and port-forward");
    let streaming_task = tokio::spawn(crate::streaming::serve(streaming_listener, daemon.clone()));

    let runtime = RuntimeServiceServer::new(RuntimeApi {
        daemon: daemon.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_SIZE)
    .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let image = ImageServiceServer::new(ImageApi {
        daemon: daemon.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_SIZE)
    .max_encoding_message_size(MAX_MESSAGE_SIZE);
    // Not CRI: crust's own services (pull progress), on the same socket.
    let crust_images = ImagesServer::new(CrustImagesApi {
        daemon: daemon.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_SIZE)
    .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    // Clients that send the socket path as :authority (gRPC C-core) are served too.
    let incoming = UnixListenerStream::new(cri_listener)
        .map(|conn| conn.map(crate::authority::AuthorityFix::new));
    let mut server = tokio::spawn(
        Server::builder()
            .layer(crate::deadline::DeadlineLayer)
            .add_service(runtime)
            .add_service(image)
            .add_service(crust_images)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            }),
    );

    recovery::recover(&daemon).await.context("load state")?;
    crate::sd_notify::notify("READY=1");

    tokio::pin!(shutdown);
    let early_exit = tokio::select! {
        () = &mut shutdown => None,
        result = &mut server => Some(result),
    };
    let result = match early_exit {
        Some(result) => result
            .context("server task panicked")?
            .context("gRPC server failed"),
        None => {
            tracing::info!(timeout = ?config.shutdown_timeout, "shutting down: no new connections, waiting for in-flight RPCs");
            crate::sd_notify::notify("STOPPING=1");
            let _ = stop_tx.send(());
            // Event streams never end on their own; in-flight RPCs are waited for.
            daemon.events.close();
            match tokio::time::timeout(config.shutdown_timeout, &mut server).await {
                Ok(joined) => joined
                    .context("server task panicked")?
                    .context("gRPC server failed"),
                Err(_) => {
                    tracing::warn!(
                        "in-flight RPCs did not finish within shutdown_timeout; exiting anyway"
                    );
                    server.abort();
                    Ok(())
                }
            }
        }
    };
    if let Some(task) = metrics_task {
        task.abort();
    }
    streaming_task.abort();
    socket.remove();
    tracing::info!("stopped");
    result
}
