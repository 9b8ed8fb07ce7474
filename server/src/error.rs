//! The one place where crust errors become gRPC statuses.

use crust_state::StateError;
use tonic::{Code, Status};

/// An RPC failure. Each variant carries what the client needs to know (the field, the
/// object id); the gRPC code is chosen only in [`ApiError::code`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{rpc} is not implemented by crust yet")]
    Unimplemented { rpc: &'static str },

    #[error("crustd is starting: {phase}")]
    Starting { phase: &'static str },

    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },

    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },

    #[error("{kind} {id:?} already exists")]
    AlreadyExists { kind: &'static str, id: String },

    #[error("{kind} {id:?} is {state}: {reason}")]
    FailedPrecondition { kind: &'static str, id: String, state: String, reason: String },

    #[error("persist state: {0}")]
    State(#[from] StateError),
}

impl ApiError {
    /// The gRPC code for this error. Kinds are kept: a missing object is NOT_FOUND all
    /// the way to the client, because kubelet branches on it.
    pub fn code(&self) -> Code {
        match self {
            ApiError::Unimplemented { .. } => Code::Unimplemented,
            ApiError::Starting { .. } => Code::Unavailable,
            ApiError::InvalidArgument { .. } => Code::InvalidArgument,
            ApiError::NotFound { .. } => Code::NotFound,
            ApiError::AlreadyExists { .. } => Code::AlreadyExists,
            ApiError::FailedPrecondition { .. } => Code::FailedPrecondition,
            ApiError::State(StateError::InvalidId { .. }) => Code::InvalidArgument,
            ApiError::State(_) => Code::Internal,
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let cases = [
            (ApiError::Unimplemented { rpc: "RunPodSandbox" }, Code::Unimplemented, "RunPodSandbox"),
            (ApiError::Starting { phase: "loading state" }, Code::Unavailable, "loading state"),
            (
                ApiError::InvalidArgument { field: "runtime_config.network_config.pod_cidr", reason: "bad".into() },
                Code::InvalidArgument,
                "runtime_config.network_config.pod_cidr",
            ),
            (ApiError::NotFound { kind: "pod sandbox", id: "abc".into() }, Code::NotFound, "\"abc\""),
            (ApiError::AlreadyExists { kind: "container", id: "c1".into() }, Code::AlreadyExists, "c1"),
            (
                ApiError::FailedPrecondition {
                    kind: "container",
                    id: "c1".into(),
                    state: "running".into(),
                    reason: "stop it first".into(),
                },
                Code::FailedPrecondition,
                "running",
            ),
            (
                ApiError::State(StateError::InvalidId { kind: "thing", id: "../x".into(), reason: "bad" }),
                Code::InvalidArgument,
                "../x",
            ),
        ];
        for (err, code, text) in cases {
            let status = Status::from(err);
            assert_eq!(status.code(), code, "{status:?}");
            assert!(status.message().contains(text), "{:?} should contain {text:?}", status.message());
        }
    }
}
