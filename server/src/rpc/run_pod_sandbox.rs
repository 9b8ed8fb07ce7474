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
    if spec.userns.is_some() && !daemon.handler_has_userns(&spec.runtime_handler) {
        // The kernel lacks user namespaces or mount_setattr (the image layers are
        // idmapped); Status says `user_namespaces: false`, so kubelet does not send
        // this.
        return Err(ApiError::FailedPrecondition {
            kind: "runtime handler",
            id: spec.runtime_handler.clone(),
            state: "without user namespace support".into(),
            reason: "config.linux.security_context.namespace_options.userns_options: this kernel lacks user namespaces or idmapped mounts (mount_setattr, Linux 5.12)".into(),
        });
    }
    let id = daemon.sandboxes.run(spec).await?;
    tracing::Span::current().record("pod_id", id.as_str());
    Ok(RunPodSandboxResponse { pod_sandbox_id: id })
}
