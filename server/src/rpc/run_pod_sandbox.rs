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
        // runc bind-mounts the rootfs from inside the pod's user namespace, whose root
        // (an unprivileged host uid) cannot reach crust's private (0700) container
        // directories; those stay private because `upper` holds the container's
        // setuid binaries. Status says `user_namespaces: false` for such handlers, so
        // kubelet does not send this.
        return Err(ApiError::FailedPrecondition {
            kind: "runtime handler",
            id: spec.runtime_handler.clone(),
            state: "an oci handler".into(),
            reason: "config.linux.security_context.namespace_options.userns_options: pod user namespaces are supported by the built-in launcher only".into(),
        });
    }
    let id = daemon.sandboxes.run(spec).await?;
    tracing::Span::current().record("pod_id", id.as_str());
    Ok(RunPodSandboxResponse { pod_sandbox_id: id })
}
