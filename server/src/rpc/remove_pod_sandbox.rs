//! `RemovePodSandbox`: force-stop and delete the pod. Idempotent; removing a pod that
//! does not exist succeeds (CRI contract).

use crust_proto::runtime::v1::{RemovePodSandboxRequest, RemovePodSandboxResponse};

use tracing::Instrument;

use crate::{daemon::Daemon, error::ApiError};

pub async fn remove_pod_sandbox(
    daemon: &Daemon,
    req: RemovePodSandboxRequest,
) -> Result<RemovePodSandboxResponse, ApiError> {
    tracing::Span::current().record(
        "pod_id",
        crust_runtime::excerpt(&req.pod_sandbox_id).as_ref(),
    );
    daemon.sandboxes.remove(&req.pod_sandbox_id).await?;
    // Its containers' images may have been removed while they ran.
    crate::image_store::prune_unused(daemon)
        .instrument(crust_runtime::step_span!("image.prune_unused"))
        .await;
    Ok(RemovePodSandboxResponse {})
}
