//! `Exec`, `Attach` and `PortForward`: validate, park the request under a single-use
//! token and answer the streaming server's URL (the session itself runs there).

use crust_proto::runtime::v1::{
    AttachRequest, AttachResponse, ExecRequest, ExecResponse, PortForwardRequest,
    PortForwardResponse,
};
use crust_runtime::container::{ContainerState, StdioRequest};

use crate::{daemon::Daemon, error::ApiError, streaming::Pending};

fn streaming(daemon: &Daemon) -> Result<&crate::streaming::StreamingHandle, ApiError> {
    daemon.streaming.get().ok_or(ApiError::Starting {
        phase: "starting the streaming server",
    })
}

/// kubelet's rules for the requested streams (`validateExecRequest`).
fn check_streams(streams: &StdioRequest) -> Result<(), ApiError> {
    if streams.tty && streams.stderr {
        return Err(ApiError::InvalidArgument {
            field: "stderr",
            reason: "tty and stderr cannot both be true".into(),
        });
    }
    if !(streams.stdin || streams.stdout || streams.stderr) {
        return Err(ApiError::InvalidArgument {
            field: "stdin",
            reason: "one of stdin, stdout, or stderr must be set".into(),
        });
    }
    Ok(())
}

/// The full id of `id`, which must name a running container.
fn running(daemon: &Daemon, id: &str) -> Result<crust_runtime::container::Container, ApiError> {
    if id.is_empty() {
        return Err(ApiError::InvalidArgument {
            field: "container_id",
            reason: "is required".into(),
        });
    }
    let c = daemon.sandboxes.container_status(id)?;
    if c.state != ContainerState::Running {
        return Err(ApiError::FailedPrecondition {
            kind: "container",
            id: c.id,
            state: format!("{:?}", c.state).to_lowercase(),
            reason: "streams need a running container".into(),
        });
    }
    Ok(c)
}

pub async fn exec(daemon: &Daemon, req: ExecRequest) -> Result<ExecResponse, ApiError> {
    tracing::Span::current().record(
        "container_id",
        crust_runtime::excerpt(&req.container_id).as_ref(),
    );
    let streams = StdioRequest {
        stdin: req.stdin,
        stdout: req.stdout,
        stderr: req.stderr,
        tty: req.tty,
    };
    crate::convert_limits::exec_cmd(&req.cmd)?;
    check_streams(&streams)?;
    let c = running(daemon, &req.container_id)?;
    let url = streaming(daemon)?.url_for(Pending::Exec {
        container_id: c.id,
        cmd: req.cmd,
        streams,
    });
    Ok(ExecResponse { url })
}

pub async fn attach(daemon: &Daemon, req: AttachRequest) -> Result<AttachResponse, ApiError> {
    tracing::Span::current().record(
        "container_id",
        crust_runtime::excerpt(&req.container_id).as_ref(),
    );
    let streams = StdioRequest {
        stdin: req.stdin,
        stdout: req.stdout,
        stderr: req.stderr,
        tty: req.tty,
    };
    check_streams(&streams)?;
    let c = running(daemon, &req.container_id)?;
    if streams.stdin && !c.spec.stdin {
        return Err(ApiError::InvalidArgument {
            field: "stdin",
            reason: format!("container {} was created without stdin", c.id),
        });
    }
    let url = streaming(daemon)?.url_for(Pending::Attach {
        container_id: c.id,
        streams,
    });
    Ok(AttachResponse { url })
}

pub async fn port_forward(
    daemon: &Daemon,
    req: PortForwardRequest,
) -> Result<PortForwardResponse, ApiError> {
    tracing::Span::current().record(
        "pod_id",
        crust_runtime::excerpt(&req.pod_sandbox_id).as_ref(),
    );
    if req.pod_sandbox_id.is_empty() {
        return Err(ApiError::InvalidArgument {
            field: "pod_sandbox_id",
            reason: "is required".into(),
        });
    }
    let ports = req
        .port
        .iter()
        .map(|&p| {
            u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or(ApiError::InvalidArgument {
                    field: "port",
                    reason: format!("{p} is not a port (1-65535)"),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let view = daemon.sandboxes.status(&req.pod_sandbox_id)?;
    if !view.ready {
        return Err(ApiError::FailedPrecondition {
            kind: "pod sandbox",
            id: view.sandbox.id,
            state: "not ready".into(),
            reason: "port forwarding needs a ready pod".into(),
        });
    }
    let url = streaming(daemon)?.url_for(Pending::PortForward {
        pod_id: view.sandbox.id,
        ports,
    });
    Ok(PortForwardResponse { url })
}
