//! `ExecSync` and `ReopenContainerLog`.

use std::time::Duration;

use crust_proto::runtime::v1::{
    ExecSyncRequest, ExecSyncResponse, ReopenContainerLogRequest, ReopenContainerLogResponse,
};

use crate::{daemon::Daemon, error::ApiError};

/// Runs a command in a container; `timeout` seconds (0 = none) bound it, after which
/// its whole process tree is killed and the call answers DEADLINE_EXCEEDED.
pub async fn exec_sync(
    daemon: &Daemon,
    req: ExecSyncRequest,
) -> Result<ExecSyncResponse, ApiError> {
    tracing::Span::current().record(
        "container_id",
        crust_runtime::excerpt(&req.container_id).as_ref(),
    );
    crate::convert_limits::exec_cmd(&req.cmd)?;
    // CRI: "Timeout in seconds to stop the command. Default: 0 (run forever)."
    if req.timeout < 0 {
        return Err(ApiError::InvalidArgument {
            field: "timeout",
            reason: format!("{} is negative", req.timeout),
        });
    }
    let timeout = Duration::from_secs(req.timeout as u64);
    let result = daemon
        .sandboxes
        .exec_sync(&req.container_id, &req.cmd, timeout)
        .await?;
    Ok(ExecSyncResponse {
        stdout: result.stdout,
        stderr: result.stderr,
        exit_code: result.exit_code,
    })
}

/// `UpdateContainerResources`: new cgroup limits, live.
pub async fn update_container_resources(
    daemon: &Daemon,
    req: crust_proto::runtime::v1::UpdateContainerResourcesRequest,
) -> Result<crust_proto::runtime::v1::UpdateContainerResourcesResponse, ApiError> {
    tracing::Span::current().record(
        "container_id",
        crust_runtime::excerpt(&req.container_id).as_ref(),
    );
    let linux = req.linux.ok_or(ApiError::InvalidArgument {
        field: "linux",
        reason: "is required".into(),
    })?;
    crate::convert_limits::resources("linux", &linux)?;
    daemon
        .sandboxes
        .update_container_resources(
            &req.container_id,
            crate::convert_container::resources(linux),
        )
        .await?;
    Ok(crust_proto::runtime::v1::UpdateContainerResourcesResponse {})
}

pub async fn reopen_container_log(
    daemon: &Daemon,
    req: ReopenContainerLogRequest,
) -> Result<ReopenContainerLogResponse, ApiError> {
    tracing::Span::current().record(
        "container_id",
        crust_runtime::excerpt(&req.container_id).as_ref(),
    );
    daemon
        .sandboxes
        .reopen_container_log(&req.container_id)
        .await?;
    Ok(ReopenContainerLogResponse {})
}

/// `UpdatePodSandboxResources`: recorded, and applied to pod cgroups crust owns.
pub async fn update_pod_sandbox_resources(
    daemon: &Daemon,
    req: crust_proto::runtime::v1::UpdatePodSandboxResourcesRequest,
) -> Result<crust_proto::runtime::v1::UpdatePodSandboxResourcesResponse, ApiError> {
    tracing::Span::current().record(
        "pod_id",
        crust_runtime::excerpt(&req.pod_sandbox_id).as_ref(),
    );
    let (overhead, resources) = (
        req.overhead.unwrap_or_default(),
        req.resources.unwrap_or_default(),
    );
    crate::convert_limits::resources("overhead", &overhead)?;
    crate::convert_limits::resources("resources", &resources)?;
    let update = crust_runtime::sandbox::PodResources {
        overhead: crate::convert_container::resources(overhead),
        resources: crate::convert_container::resources(resources),
    };
    daemon
        .sandboxes
        .update_pod_resources(&req.pod_sandbox_id, update)
        .await?;
    Ok(crust_proto::runtime::v1::UpdatePodSandboxResourcesResponse {})
}
