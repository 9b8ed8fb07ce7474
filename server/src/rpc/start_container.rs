//! `StartContainer`.

use crust_proto::runtime::v1::{StartContainerRequest, StartContainerResponse};

use crate::{daemon::Daemon, error::ApiError};

pub async fn start_container(
    daemon: &Daemon,
    req: StartContainerRequest,
) -> Result<StartContainerResponse, ApiError> {
    tracing::Span::current().record(
        "container_id",
        crust_runtime::excerpt(&req.container_id).as_ref(),
    );
    daemon.sandboxes.start_container(&req.container_id).await?;
    Ok(StartContainerResponse {})
}
