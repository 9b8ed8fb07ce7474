//! `PodSandboxStatus`: one pod, by id or unique id prefix; `verbose` adds JSON info.

use std::collections::HashMap;

use crust_proto::runtime::v1::{PodSandboxStatusRequest, PodSandboxStatusResponse};

use crate::{convert_sandbox, daemon::Daemon, error::ApiError};

pub async fn pod_sandbox_status(
    daemon: &Daemon,
    req: PodSandboxStatusRequest,
) -> Result<PodSandboxStatusResponse, ApiError> {
    tracing::Span::current().record(
        "pod_id",
        crust_runtime::excerpt(&req.pod_sandbox_id).as_ref(),
    );
    let view = daemon.sandboxes.status(&req.pod_sandbox_id)?;
    let mut info = HashMap::new();
    if req.verbose {
        let mut details = daemon.sandboxes.verbose_info(&view);
        details["network"] = serde_json::json!(view.sandbox.network);
        // CNI CHECK, only while the pod runs (its namespace must exist to be checked).
        if view.ready
            && let Some(check) = daemon.sandboxes.check_network(&view.sandbox.id).await
        {
            details["networkCheck"] = match check {
                Ok(()) => serde_json::json!("ok"),
                Err(e) => serde_json::json!(e),
            };
        }
        info.insert("info".to_string(), details.to_string());
    }
    Ok(PodSandboxStatusResponse {
        status: Some(convert_sandbox::pod_sandbox_status(&view)),
        info,
        // kubelet's evented PLEG reads the pod's containers from here (not through
        // ContainerStatus each) whenever `timestamp` is set.
        containers_statuses: crate::events::pod_containers(daemon, &view.sandbox.id),
        timestamp: now_nanos(),
    })
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}
