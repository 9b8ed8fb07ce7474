//! The daemon's shared state and the wrapper every RPC goes through.

use std::{
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use crust_state::{Quarantined, Store};
use tonic::{Code, Response, Status};
use tracing::{Instrument, Span};

use crate::{config::Config, error::ApiError, metrics::Metrics, node_config::NodeConfig};

/// Everything the RPC handlers share.
pub struct Daemon {
    pub config: Config,
    /// Config files applied, in order (for `Status` verbose output).
    pub config_files: Vec<PathBuf>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Where `/metrics` is actually served, once bound.
    pub metrics_address: OnceLock<SocketAddr>,
    ready: AtomicBool,
    /// Node-wide settings kubelet pushes with `UpdateRuntimeConfig`. The mutex also
    /// serializes updates so the record on disk and in memory never disagree.
    pub node: Mutex<NodeConfig>,
    /// Records set aside at the last start because they could not be read.
    pub quarantined: Mutex<Vec<Quarantined>>,
}

/// Creates the span of one RPC. Id fields start empty and are recorded by the handler
/// once known (`span.record("pod_id", id)`), so ids are fields, never message text.
#[macro_export]
macro_rules! rpc_span {
    ($rpc:expr) => {
        tracing::info_span!(
            "rpc",
            rpc = $rpc,
            pod_id = tracing::field::Empty,
            container_id = tracing::field::Empty,
            image = tracing::field::Empty,
        )
    };
}

impl Daemon {
    /// Opens the record store under `config.root`. Does not load records: that is
    /// [`crate::recovery::recover`]'s job, after which the daemon is marked ready.
    pub fn new(config: Config, config_files: Vec<PathBuf>) -> Result<Daemon, crust_state::StateError> {
        let store = Store::open(config.root.join("records"), config.root.join("quarantine"))?;
        Ok(Daemon {
            config,
            config_files,
            store,
            metrics: Arc::new(Metrics::new()),
            metrics_address: OnceLock::new(),
            ready: AtomicBool::new(false),
            node: Mutex::new(NodeConfig::default()),
            quarantined: Mutex::new(Vec::new()),
        })
    }

    /// True once state has been loaded and reconciled.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Runs one RPC: refuses with UNAVAILABLE until state is loaded, runs `work` inside
    /// `span`, counts and times it, logs a failure once, and maps the error to a status.
    pub async fn handle<T>(
        &self,
        rpc: &'static str,
        span: Span,
        work: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<Response<T>, Status> {
        let start = Instant::now();
        let result = async {
            if !self.is_ready() {
                return Err(ApiError::Starting { phase: "loading and reconciling state" });
            }
            work.await
        }
        .instrument(span.clone())
        .await;
        let code = result.as_ref().map_or_else(ApiError::code, |_| Code::Ok);
        self.metrics.observe_rpc(rpc, code, start.elapsed());
        let _entered = span.enter();
        match result {
            Ok(value) => {
                tracing::debug!(elapsed_us = start.elapsed().as_micros() as u64, "ok");
                Ok(Response::new(value))
            }
            Err(error) => {
                match code {
                    Code::Internal | Code::Unknown | Code::DataLoss => tracing::error!(code = ?code, %error, "failed"),
                    Code::Unimplemented | Code::Unavailable => tracing::debug!(code = ?code, %error, "refused"),
                    _ => tracing::info!(code = ?code, %error, "failed"),
                }
                Err(error.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_with_unavailable_until_ready() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { root: dir.path().to_path_buf(), ..Config::default() };
        let daemon = Daemon::new(config, vec![]).unwrap();
        let status = daemon.handle("Version", rpc_span!("Version"), async { Ok(()) }).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("starting"), "{}", status.message());

        daemon.set_ready();
        daemon.handle("Version", rpc_span!("Version"), async { Ok(()) }).await.expect("ready daemon serves");
        let rendered = daemon.metrics.render();
        assert!(rendered.contains(r#"crust_rpc_errors_total{rpc="Version",code="UNAVAILABLE"} 1"#), "{rendered}");
        assert!(rendered.contains(r#"crust_rpc_requests_total{rpc="Version"} 2"#), "{rendered}");
    }
}
