//! `StartContainer`.

use crust_proto::runtime::v1::{StartContainerRequest, StartContainerResponse};

use crate::{daemon::Daemon, error::ApiError};

pub async fn start_container(
    daemon: &Daemon,
    req: StartContainerRequest,
) -> Result<StartContainerResponse, ApiError> {
    tracing::Span::current().record("container_id", req.container_id.as_str());
    daemon.sandboxes.start_container(&req.container_id).await?;
    Ok(StartContainerResponse {})
}
