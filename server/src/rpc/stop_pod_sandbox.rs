//! `StopPodSandbox`: stop the pod's processes and release its namespaces. Idempotent;
//! stopping a pod that does not exist succeeds (CRI contract).

use crust_proto::runtime::v1::{StopPodSandboxRequest, StopPodSandboxResponse};

use crate::{daemon::Daemon, error::ApiError};

pub async fn stop_pod_sandbox(
    daemon: &Daemon,
    req: StopPodSandboxRequest,
) -> Result<StopPodSandboxResponse, ApiError> {
    tracing::Span::current().record(
        "pod_id",
        crust_runtime::excerpt(&req.pod_sandbox_id).as_ref(),
    );
    daemon.sandboxes.stop(&req.pod_sandbox_id).await?;
    Ok(StopPodSandboxResponse {})
}
