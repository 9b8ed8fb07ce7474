//! `RemoveContainer`: kill it if it still runs, then delete it. Idempotent.

use crust_proto::runtime::v1::{RemoveContainerRequest, RemoveContainerResponse};

use crate::{daemon::Daemon, error::ApiError};

pub async fn remove_container(
    daemon: &Daemon,
    req: RemoveContainerRequest,
) -> Result<RemoveContainerResponse, ApiError> {
    tracing::Span::current().record(
        "container_id",
        crust_runtime::excerpt(&req.container_id).as_ref(),
    );
    daemon.sandboxes.remove_container(&req.container_id).await?;
    // Its image may have been removed while it ran: free the layers now.
    crate::image_store::prune_unused(daemon).await;
    Ok(RemoveContainerResponse {})
}
