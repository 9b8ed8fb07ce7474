use std::{io, path::PathBuf};

use crate::{cgroup::CgroupError, monitor::MonitorError};

/// What can go wrong running pods. Variants carry the ids and paths involved.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },

    #[error("{kind} id prefix {prefix:?} is ambiguous ({count} matches)")]
    Ambiguous {
        kind: &'static str,
        prefix: String,
        count: usize,
    },

    #[error("{kind} {name:?} already exists as {id}")]
    AlreadyExists {
        kind: &'static str,
        name: String,
        id: String,
    },

    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },

    #[error("{what} is not supported yet: {reason}")]
    Unsupported { what: &'static str, reason: String },

    // `kind` in the next four: "pod sandbox" or "container", whichever `id` names
    // (CRI clients and people read "container X" for a container RPC's failure).
    #[error("{kind} {id}: cgroup: {source}")]
    Cgroup {
        kind: &'static str,
        id: String,
        source: CgroupError,
    },

    #[error("{kind} {id}: {source}")]
    Monitor {
        kind: &'static str,
        id: String,
        source: MonitorError,
    },

    #[error("{kind} {id}: {op} {path}: {source}")]
    Io {
        kind: &'static str,
        id: String,
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    /// The container's AppArmor profile cannot be applied (not loaded, or the default
    /// profile failed to load).
    #[error("container {id}: {source}")]
    AppArmor {
        id: String,
        source: crate::apparmor::AppArmorError,
    },

    #[error("pod sandbox {id} is not ready")]
    NotReady { id: String },

    #[error("container {id}: {message}")]
    Launch { id: String, message: String },

    #[error("container {id}: {what} did not finish within {after:?} (killed)")]
    DeadlineExceeded {
        id: String,
        what: String,
        after: std::time::Duration,
    },

    /// The OCI runtime (CRIU) could not checkpoint the container.
    #[error("container {id}: checkpoint failed: {message}")]
    Checkpoint { id: String, message: String },

    #[error("container {id} is {state:?}, not {wanted}")]
    ContainerState {
        id: String,
        state: crate::container::ContainerState,
        wanted: &'static str,
    },

    #[error("pod sandbox {id}: network setup failed: {message}")]
    Network { id: String, message: String },

    #[error("{kind} {id}: teardown incomplete: {}", errors.join("; "))]
    Teardown {
        kind: &'static str,
        id: String,
        errors: Vec<String>,
    },

    #[error("pod sandbox {id} is {state:?}, cannot become {to:?}")]
    InvalidTransition {
        id: String,
        state: crate::sandbox::SandboxState,
        to: crate::sandbox::SandboxState,
    },

    #[error(transparent)]
    State(#[from] crust_state::StateError),
}
