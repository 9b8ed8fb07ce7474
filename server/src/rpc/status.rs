//! `Status`: runtime and network readiness, handlers, and (verbose) debug info.

use std::collections::HashMap;

use crust_proto::runtime::v1::{
    RuntimeCondition, RuntimeFeatures, RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus,
    StatusRequest, StatusResponse,
};
use serde_json::json;

use crate::{daemon::Daemon, error::ApiError};

/// Condition types kubelet requires (`RuntimeReady`, `NetworkReady`).
pub const RUNTIME_READY: &str = "RuntimeReady";
pub const NETWORK_READY: &str = "NetworkReady";
/// Reason kubelet and users know from containerd for a missing CNI config.
pub const NETWORK_NOT_READY_REASON: &str = "NetworkPluginNotReady";

/// Answers `Status`. Runtime readiness is true once state is loaded (before that,
/// [`Daemon::handle`] refuses with UNAVAILABLE). Network readiness reflects the CNI
/// configuration on disk right now, so dropping a config in makes the node Ready
/// without a restart. `verbose` adds JSON debug info, as crictl `info` shows.
pub async fn status(daemon: &Daemon, req: StatusRequest) -> Result<StatusResponse, ApiError> {
    let net = &daemon.config.network;
    let network = crust_network::default_network(&net.cni_conf_dir, &net.cni_bin_dirs);
    let network_condition = match &network {
        Ok(_) => condition(NETWORK_READY, true, "", ""),
        Err(e) => condition(
            NETWORK_READY,
            false,
            NETWORK_NOT_READY_REASON,
            &format!("Network plugin returns error: {e}"),
        ),
    };
    let conditions = vec![condition(RUNTIME_READY, true, "", ""), network_condition];

    let mut info = HashMap::new();
    if req.verbose {
        let to_json = |v: serde_json::Value| v.to_string();
        info.insert("config".into(), to_json(json!(daemon.config)));
        info.insert("configFiles".into(), to_json(json!(daemon.config_files)));
        info.insert(
            "cni".into(),
            to_json(match &network {
                Ok(n) => json!({"network": n}),
                Err(e) => json!({"error": e.to_string()}),
            }),
        );
        let node = daemon
            .node
            .lock()
            .expect("node config lock poisoned")
            .clone();
        info.insert("runtimeConfig".into(), to_json(json!(node)));
        let quarantined = daemon
            .quarantined
            .lock()
            .expect("quarantine list lock poisoned")
            .clone();
        info.insert(
            "recovery".into(),
            to_json(json!({ "quarantined": quarantined })),
        );
        let cgroup = crust_runtime::cgroup::detect_mode(&daemon.config.cgroup.root);
        info.insert(
            "cgroup".into(),
            to_json(match cgroup {
                Ok(mode) => json!({"driver": daemon.config.cgroup.driver, "mode": mode}),
                Err(e) => json!({"driver": daemon.config.cgroup.driver, "error": e.to_string()}),
            }),
        );
        info.insert(
            "metrics".into(),
            to_json(json!({ "address": daemon.metrics_address.get() })),
        );
        info.insert(
            "streaming".into(),
            to_json(json!({ "url": daemon.streaming.get().map(|s| s.base_url()) })),
        );
        info.insert(
            "version".into(),
            to_json(json!({ "crust": env!("CARGO_PKG_VERSION") })),
        );
    }

    Ok(StatusResponse {
        status: Some(RuntimeStatus { conditions }),
        info,
        runtime_handlers: runtime_handlers(daemon),
        // Both launchers apply supplemental_groups_policy (Strict drops the image's
        // /etc/group) and ContainerStatus reports the identity used; no user
        // namespaces yet.
        features: Some(RuntimeFeatures {
            supplemental_groups_policy: true,
            user_namespaces_host_network: false,
        }),
    })
}

/// Every configured handler, plus the default one under the empty name as kubelet
/// expects. Recursive read-only mounts: the built-in launcher has them where the
/// kernel has `mount_setattr`; an `oci` handler where its runtime lists `rro` in its
/// features (runc 1.2+). No handler has user namespaces yet.
fn runtime_handlers(daemon: &Daemon) -> Vec<RuntimeHandler> {
    let rro = &daemon.handler_rro;
    let default = &daemon.config.runtime.default_handler;
    std::iter::once((String::new(), default.clone()))
        .chain(
            daemon
                .config
                .runtime
                .handlers
                .keys()
                .map(|n| (n.clone(), n.clone())),
        )
        .map(|(name, handler)| RuntimeHandler {
            name,
            features: Some(RuntimeHandlerFeatures {
                recursive_read_only_mounts: rro.get(&handler).copied().unwrap_or(false),
                // Both launchers, where the kernel has user namespaces and
                // mount_setattr (Linux 5.12) for the idmapped image layers.
                user_namespaces: daemon.handler_has_userns(&handler),
            }),
        })
        .collect()
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> RuntimeCondition {
    RuntimeCondition {
        r#type: kind.into(),
        status,
        reason: reason.into(),
        message: message.into(),
    }
}
