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
    pub node: Arc<Mutex<NodeConfig>>,
    /// Records set aside at the last start because they could not be read.
    pub quarantined: Mutex<Vec<Quarantined>>,
    /// Pod sandboxes.
    pub sandboxes: crust_runtime::sandbox::SandboxManager,
    /// The image store, opened during recovery; `Err` says why it could not be (the
    /// image RPCs then answer UNAVAILABLE with that reason).
    pub images: OnceLock<Result<Arc<crust_image::ImageStore>, String>>,
    /// The exec/attach/port-forward server, once its listener is bound.
    pub streaming: OnceLock<crate::streaming::StreamingHandle>,
    /// Handler name -> whether it supports recursive read-only mounts; probed once at
    /// start (an `oci` handler's binary is asked then, not on every `Status`).
    pub handler_rro: std::collections::BTreeMap<String, bool>,
    /// Whether pods may have user namespaces (KEP-127): the kernel has user
    /// namespaces and `mount_setattr` for the idmapped image layers. Probed once.
    pub userns_supported: bool,
    /// Subscribers of GetContainerEvents and the events held for the next one.
    pub events: crate::events::EventHub,
}

/// The sandbox manager's settings, from the daemon config.
fn sandbox_config(
    config: &Config,
    oci_idmap: std::collections::BTreeSet<String>,
) -> crust_runtime::sandbox::SandboxConfig {
    crust_runtime::sandbox::SandboxConfig {
        state_dir: config.state.clone(),
        monitor_bin: config
            .runtime
            .monitor_path
            .clone()
            .unwrap_or_else(default_monitor_path),
        cgroup_driver: config.cgroup.driver,
        cgroup_root: config.cgroup.root.clone(),
        monitor_cgroup: config.cgroup.monitor_cgroup.clone(),
        pod_cgroup_parent: config.cgroup.pod_parent.clone(),
        shm_size: config.runtime.shm_size,
        containers_dir: config.root.join("containers"),
        min_oom_score_adj: min_oom_score_adj(),
        host_resolv_conf: "/etc/resolv.conf".into(),
        host_hosts: "/etc/hosts".into(),
        oci_runtimes: config
            .runtime
            .handlers
            .iter()
            .filter(|(_, h)| h.kind == crate::config::HandlerKind::Oci)
            .filter_map(|(name, h)| Some((name.clone(), h.path.clone()?)))
            .collect(),
        oci_idmap,
        max_log_line: config.runtime.max_log_line_size,
        exec_output_limit: config.runtime.exec_sync_output_limit,
    }
}

impl Daemon {
    /// Whether pods of `handler` may have a user namespace: any configured handler
    /// on a kernel with what it needs. The built-in launcher and an `oci` handler
    /// both join the pod's pinned namespace by path (runc 1.1 does; its rootfs is
    /// made reachable for the mapped root, see the runtime's `userns_rootfs`).
    pub fn handler_has_userns(&self, handler: &str) -> bool {
        self.userns_supported && self.config.runtime.handlers.contains_key(handler)
    }
}

/// Which handlers support recursive read-only mounts and idmapped mounts: the
/// built-in launcher where the kernel has `mount_setattr`; an `oci` handler when its
/// runtime's `features` says so (asked once here, before crustd serves, with a bound
/// on the answer).
fn handler_mount_features(
    config: &Config,
) -> std::collections::BTreeMap<String, crust_runtime::features::OciFeatures> {
    use crate::config::HandlerKind;
    use crust_runtime::features::OciFeatures;
    let kernel = crust_runtime::features::kernel_has_mount_setattr();
    config
        .runtime
        .handlers
        .iter()
        .map(|(name, h)| {
            let features = match (kernel, h.kind, &h.path) {
                (false, _, _) => OciFeatures::default(),
                (true, HandlerKind::Builtin, _) => OciFeatures {
                    rro: true,
                    idmap: true,
                },
                (true, HandlerKind::Oci, Some(path)) => {
                    crust_runtime::features::oci_runtime_features(
                        path,
                        std::time::Duration::from_secs(2),
                    )
                }
                (true, HandlerKind::Oci, None) => OciFeatures::default(),
            };
            (name.clone(), features)
        })
        .collect()
}

/// The lowest `oom_score_adj` crustd can give a container: any with CAP_SYS_RESOURCE
/// (proc(5): lowering below the writer's own needs it), else crustd's own.
fn min_oom_score_adj() -> i32 {
    const CAP_SYS_RESOURCE: u32 = 24;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    if effective & (1 << CAP_SYS_RESOURCE) != 0 {
        return -1000;
    }
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `crust-monitor` next to the running executable (installed side by side, or
/// `target/<profile>/` in a build tree; test binaries live one level down in `deps/`).
fn default_monitor_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    let beside = dir.join("crust-monitor");
    match dir.parent() {
        Some(up) if !beside.exists() && up.join("crust-monitor").exists() => {
            up.join("crust-monitor")
        }
        _ => beside,
    }
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
    pub fn new(config: Config, config_files: Vec<PathBuf>) -> Result<Daemon, ApiError> {
        let store = Store::open(config.root.join("records"), config.root.join("quarantine"))?;
        let node = Arc::new(Mutex::new(NodeConfig::default()));
        let network: Arc<dyn crust_runtime::sandbox::PodNetwork> = Arc::new(
            crate::pod_network::CniPodNetwork::new(&config, node.clone()),
        );
        let features = handler_mount_features(&config);
        let oci_idmap = features
            .iter()
            .filter(|(_, f)| f.idmap)
            .map(|(k, _)| k.clone())
            .collect();
        let sandboxes = crust_runtime::sandbox::SandboxManager::new(
            sandbox_config(&config, oci_idmap),
            store.clone(),
            Some(network),
        )?
        .with_container_pids_limit(Some(config.runtime.pids_limit));
        let handler_rro = features.iter().map(|(k, f)| (k.clone(), f.rro)).collect();
        let userns_supported = crust_runtime::features::kernel_has_mount_setattr()
            && std::path::Path::new("/proc/self/ns/user").exists();
        Ok(Daemon {
            handler_rro,
            userns_supported,
            config,
            config_files,
            store,
            metrics: Arc::new(Metrics::new()),
            metrics_address: OnceLock::new(),
            ready: AtomicBool::new(false),
            node,
            quarantined: Mutex::new(Vec::new()),
            sandboxes,
            images: OnceLock::new(),
            streaming: OnceLock::new(),
            events: Default::default(),
        })
    }

    /// The image store, or UNAVAILABLE when it could not be opened.
    pub fn images(&self) -> Result<&Arc<crust_image::ImageStore>, ApiError> {
        match self.images.get() {
            Some(Ok(store)) => Ok(store),
            Some(Err(reason)) => Err(ApiError::ImageStoreUnavailable {
                reason: reason.clone(),
            }),
            None => Err(ApiError::Starting {
                phase: "opening the image store",
            }),
        }
    }

    /// The configured handler a CRI `runtime_handler` names; empty means the default.
    pub fn resolve_handler(&self, name: &str) -> Result<String, ApiError> {
        let runtime = &self.config.runtime;
        let name = if name.is_empty() {
            runtime.default_handler.as_str()
        } else {
            name
        };
        if runtime.handlers.contains_key(name) {
            Ok(name.to_string())
        } else {
            Err(ApiError::NotFound {
                kind: "runtime handler",
                id: name.to_string(),
            })
        }
    }

    /// An image RPC's `ImageSpec.runtime_handler` must name a configured handler
    /// (empty: the default). All handlers share one image store, so a known one
    /// changes nothing; an unknown one is NOT_FOUND rather than silently ignored.
    pub fn check_image_handler(
        &self,
        spec: Option<&crust_proto::runtime::v1::ImageSpec>,
    ) -> Result<(), ApiError> {
        match spec {
            Some(s) if !s.runtime_handler.is_empty() => {
                self.resolve_handler(&s.runtime_handler).map(drop)
            }
            _ => Ok(()),
        }
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
                return Err(ApiError::Starting {
                    phase: "loading and reconciling state",
                });
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
                    Code::Internal | Code::Unknown | Code::DataLoss => {
                        tracing::error!(code = ?code, %error, "failed")
                    }
                    Code::Unimplemented | Code::Unavailable => {
                        tracing::debug!(code = ?code, %error, "refused")
                    }
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
        let config = Config {
            root: dir.path().to_path_buf(),
            ..Config::default()
        };
        let daemon = Daemon::new(config, vec![]).unwrap();
        let status = daemon
            .handle("Version", rpc_span!("Version"), async { Ok(()) })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("starting"),
            "{}",
            status.message()
        );

        daemon.set_ready();
        daemon
            .handle("Version", rpc_span!("Version"), async { Ok(()) })
            .await
            .expect("ready daemon serves");
        let rendered = daemon.metrics.render();
        assert!(
            rendered.contains(r#"crust_rpc_errors_total{rpc="Version",code="UNAVAILABLE"} 1"#),
            "{rendered}"
        );
        assert!(
            rendered.contains(r#"crust_rpc_requests_total{rpc="Version"} 2"#),
            "{rendered}"
        );
    }
}
