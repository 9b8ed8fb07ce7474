//! `StopContainer`: stop signal, `timeout` seconds, then SIGKILL. Idempotent.

use std::time::Duration;

use crust_proto::runtime::v1::{StopContainerRequest, StopContainerResponse};

use crate::{daemon::Daemon, error::ApiError};

pub async fn stop_container(
    daemon: &Daemon,
    req: StopContainerRequest,
) -> Result<StopContainerResponse, ApiError> {
    tracing::Span::current().record(
        "container_id",
        crust_runtime::excerpt(&req.container_id).as_ref(),
    );
    let timeout = Duration::from_secs(req.timeout.max(0) as u64);
    daemon
        .sandboxes
        .stop_container(&req.container_id, timeout)
        .await?;
    Ok(StopContainerResponse {})
}
