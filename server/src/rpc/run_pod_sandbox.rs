//! `RunPodSandbox`: create a pod (monitor, namespaces, files, cgroup) and return its id
//! once it is ready.

use crust_proto::runtime::v1::{RunPodSandboxRequest, RunPodSandboxResponse};

use crate::{convert_sandbox, daemon::Daemon, error::ApiError};

pub async fn run_pod_sandbox(
    daemon: &Daemon,
    req: RunPodSandboxRequest,
) -> Result<RunPodSandboxResponse, ApiError> {
    let handler = daemon.resolve_handler(&req.runtime_handler)?;
    let spec = convert_sandbox::sandbox_spec(req.config, handler)?;
    let id = daemon.sandboxes.run(spec).await?;
    tracing::Span::current().record("pod_id", id.as_str());
    Ok(RunPodSandboxResponse { pod_sandbox_id: id })
}
