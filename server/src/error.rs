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
    FailedPrecondition {
        kind: &'static str,
        id: String,
        state: String,
        reason: String,
    },

    #[error("persist state: {0}")]
    State(#[from] StateError),

    #[error("{what} is not supported yet: {reason}")]
    Unsupported { what: &'static str, reason: String },

    #[error("{rpc} failed internally (its task panicked)")]
    TaskFailed { rpc: &'static str },

    #[error(transparent)]
    Runtime(#[from] crust_runtime::RuntimeError),

    #[error(transparent)]
    Image(#[from] crust_image::ImageError),

    #[error("image store unavailable: {reason}")]
    ImageStoreUnavailable { reason: String },

    #[error(transparent)]
    Cdi(#[from] crust_runtime::container::CdiError),

    /// A GetContainerEvents subscriber read too slowly and was dropped.
    #[error(
        "container events: this subscriber fell {missed} events behind (the buffer holds {buffer}) \
         and was dropped; list containers and subscribe again"
    )]
    EventsLagged { missed: u64, buffer: usize },

    #[error("crustd is shutting down")]
    ShuttingDown,
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
            ApiError::Unsupported { .. } => Code::Unimplemented,
            ApiError::TaskFailed { .. } => Code::Internal,
            ApiError::Runtime(e) => runtime_code(e),
            ApiError::Image(e) => image_code(e),
            ApiError::ImageStoreUnavailable { .. } => Code::Unavailable,
            ApiError::Cdi(e) => cdi_code(e),

            // "Retry at a higher level": relist, then subscribe again.
            ApiError::EventsLagged { .. } => Code::Aborted,
            ApiError::ShuttingDown => Code::Unavailable,
        }
    }
}

/// CDI: a malformed name is the caller's; a device no spec defines is NOT_FOUND (the
/// DRA driver has not written its spec yet, kubelet retries); a broken or conflicting
/// spec is the node's to fix; edits crust cannot apply are UNIMPLEMENTED.
fn cdi_code(e: &crust_runtime::container::CdiError) -> Code {
    use crust_runtime::container::CdiError as E;
    match e {
        E::BadName { .. } => Code::InvalidArgument,
        E::Unresolved { .. } => Code::NotFound,
        E::BadSpec { .. } | E::Conflict { .. } => Code::FailedPrecondition,
        E::Unsupported { .. } => Code::Unimplemented,
    }
}

/// Image errors keep their meaning for kubelet: it retries UNAVAILABLE and
/// DEADLINE_EXCEEDED with back-off, and shows the rest as ErrImagePull reasons.
fn image_code(e: &crust_image::ImageError) -> Code {
    use crust_image::ImageError as E;
    match e {
        E::InvalidReference(_) | E::InvalidAuth { .. } => Code::InvalidArgument,
        E::NotFound { .. } | E::NoMatchingPlatform { .. } => Code::NotFound,
        E::Unauthenticated { .. } => Code::Unauthenticated,
        E::PermissionDenied { .. } => Code::PermissionDenied,
        E::Unavailable { .. } => Code::Unavailable,
        E::ProgressTimeout { .. } => Code::DeadlineExceeded,
        E::DigestMismatch { .. } | E::SizeMismatch { .. } => Code::DataLoss,
        E::InvalidManifest { .. } | E::Registry { .. } | E::Unpack { .. } => {
            Code::FailedPrecondition
        }
        E::Io { .. } | E::RegistriesConf { .. } => Code::Internal,
        E::State(StateError::InvalidId { .. }) => Code::InvalidArgument,
        E::State(_) => Code::Internal,
    }
}

/// Pod errors: kubelet retries RunPodSandbox on anything but the argument errors.
fn runtime_code(e: &crust_runtime::RuntimeError) -> Code {
    use crust_runtime::RuntimeError as E;
    match e {
        E::NotFound { .. } => Code::NotFound,
        E::Ambiguous { .. } | E::InvalidArgument { .. } => Code::InvalidArgument,
        E::AlreadyExists { .. } => Code::AlreadyExists,
        E::NotReady { .. } | E::ContainerState { .. } => Code::FailedPrecondition,
        E::Launch { .. } => Code::Unknown,
        E::Checkpoint { .. } => Code::Internal,
        E::DeadlineExceeded { .. } => Code::DeadlineExceeded,
        E::Unsupported { .. } | E::InvalidTransition { .. } => Code::FailedPrecondition,
        // A Localhost profile is the node's to load (kubelet reports the pod as
        // blocked); a default profile that fails to load is crust's problem.
        E::AppArmor {
            source: crust_runtime::apparmor::AppArmorError::NotLoaded { .. },
            ..
        } => Code::FailedPrecondition,
        E::AppArmor { .. } => Code::Internal,
        E::State(StateError::InvalidId { .. }) => Code::InvalidArgument,
        E::Cgroup { .. }
        | E::Monitor { .. }
        | E::Io { .. }
        | E::Teardown { .. }
        | E::Network { .. }
        | E::State(_) => Code::Internal,
    }
}

/// The longest status message sent. Messages quote client input only through
/// [`crust_runtime::excerpt`]; this is the backstop for one that repeats an id or a
/// path a client sent (a 1 MiB container id in ContainerStatus): the client gets the
/// start of the message and its length, not megabytes back.
pub const STATUS_MESSAGE_MAX: usize = 1024;

fn bounded(message: String) -> String {
    if message.len() <= STATUS_MESSAGE_MAX {
        return message;
    }
    let mut end = STATUS_MESSAGE_MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &message[..end], message.len())
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        Status::new(e.code(), bounded(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut() {
        let status = Status::from(ApiError::NotFound {
            kind: "container",
            id: "é".repeat(1 << 20),
        });
        assert_eq!(status.code(), Code::NotFound);
        assert!(
            status.message().len() < STATUS_MESSAGE_MAX + 40,
            "{}",
            status.message().len()
        );
        assert!(
            status.message().starts_with("container \"éé"),
            "{}",
            &status.message()[..40]
        );
        assert!(status.message().ends_with("bytes)"));
    }

    #[test]
    fn codes_and_messages() {
        let cases = [
            (
                ApiError::Unimplemented {
                    rpc: "RunPodSandbox",
                },
                Code::Unimplemented,
                "RunPodSandbox",
            ),
            (
                ApiError::Starting {
                    phase: "loading state",
                },
                Code::Unavailable,
                "loading state",
            ),
            (
                ApiError::InvalidArgument {
                    field: "runtime_config.network_config.pod_cidr",
                    reason: "bad".into(),
                },
                Code::InvalidArgument,
                "runtime_config.network_config.pod_cidr",
            ),
            (
                ApiError::NotFound {
                    kind: "pod sandbox",
                    id: "abc".into(),
                },
                Code::NotFound,
                "\"abc\"",
            ),
            (
                ApiError::AlreadyExists {
                    kind: "container",
                    id: "c1".into(),
                },
                Code::AlreadyExists,
                "c1",
            ),
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
                ApiError::Runtime(crust_runtime::RuntimeError::AppArmor {
                    id: "c1".into(),
                    source: crust_runtime::apparmor::AppArmorError::NotLoaded {
                        field: "config.linux.security_context.apparmor.localhost_ref".into(),
                        profile: "mine".into(),
                    },
                }),
                Code::FailedPrecondition,
                "apparmor.localhost_ref: AppArmor profile \"mine\" is not loaded",
            ),
            (
                ApiError::Runtime(crust_runtime::RuntimeError::AppArmor {
                    id: "c1".into(),
                    source: crust_runtime::apparmor::AppArmorError::Load {
                        profile: "crust-default".into(),
                        parser: "apparmor_parser".into(),
                        reason: "exit status: 1".into(),
                    },
                }),
                Code::Internal,
                "load AppArmor profile \"crust-default\" with apparmor_parser",
            ),
            (
                ApiError::State(StateError::InvalidId {
                    kind: "thing",
                    id: "../x".into(),
                    reason: "bad",
                }),
                Code::InvalidArgument,
                "../x",
            ),
            (
                ApiError::Image(crust_image::ImageError::InvalidReference(
                    crust_image::Reference::parse("Bad").unwrap_err(),
                )),
                Code::InvalidArgument,
                "\"Bad\"",
            ),
            (
                ApiError::Image(crust_image::ImageError::NotFound {
                    image: "x:1".into(),
                    detail: None,
                }),
                Code::NotFound,
                "x:1",
            ),
            (
                ApiError::Image(crust_image::ImageError::Unauthenticated {
                    image: "x:1".into(),
                    registry: "r".into(),
                }),
                Code::Unauthenticated,
                "x:1",
            ),
            (
                ApiError::Image(crust_image::ImageError::PermissionDenied {
                    image: "x:1".into(),
                    registry: "r".into(),
                }),
                Code::PermissionDenied,
                "x:1",
            ),
            (
                ApiError::Image(crust_image::ImageError::Unavailable {
                    image: "x:1".into(),
                    registry: "r".into(),
                    reason: "refused".into(),
                }),
                Code::Unavailable,
                "x:1",
            ),
            (
                ApiError::Image(crust_image::ImageError::ProgressTimeout {
                    image: "x:1".into(),
                    after: std::time::Duration::from_secs(2),
                }),
                Code::DeadlineExceeded,
                "x:1",
            ),
        ];
        for (err, code, text) in cases {
            let status = Status::from(err);
            assert_eq!(status.code(), code, "{status:?}");
            assert!(
                status.message().contains(text),
                "{:?} should contain {text:?}",
                status.message()
            );
        }
    }
}
