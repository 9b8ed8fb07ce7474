//! One file per implemented RPC. Each takes the daemon and the request and returns the
//! response or an [`crate::error::ApiError`]; spans, metrics and status mapping are
//! done once, in [`crate::daemon::Daemon::handle`].

pub mod checkpoint_container;
pub mod container_status;
pub mod create_container;
pub mod create_container_restore;
pub mod exec_sync;
pub mod get_container_events;
pub mod image_fs_info;
pub mod image_status;
pub mod list_images;
pub mod list_pod_sandbox;
pub mod list_pod_sandbox_metrics;
pub mod metric_descriptors;
pub mod pod_sandbox_status;
pub mod pull_image;
pub mod pull_image_progress;
pub mod remove_container;
pub mod remove_image;
pub mod remove_pod_sandbox;
pub mod run_pod_sandbox;
pub mod runtime_config;
pub mod start_container;
pub mod stats;
pub mod status;
pub mod stop_container;
pub mod stop_pod_sandbox;
pub mod stream_images;
pub mod streaming;
pub mod update_runtime_config;
pub mod version;

/// Runs `work` on tokio's blocking pool, inside the RPC's span. Stats and metrics read
/// cgroup files, walk writable layers and enter network namespaces: seconds of blocking
/// I/O with many pods, which must not stall the async workers serving other RPCs.
pub(crate) async fn off_runtime<T: Send + 'static>(
    daemon: std::sync::Arc<crate::daemon::Daemon>,
    rpc: &'static str,
    work: impl FnOnce(&crate::daemon::Daemon) -> T + Send + 'static,
) -> Result<T, crate::error::ApiError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        work(&daemon)
    })
    .await
    .map_err(|_| crate::error::ApiError::TaskFailed { rpc })
}
