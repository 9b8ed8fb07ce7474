//! One file per implemented RPC. Each takes the daemon and the request and returns the
//! response or an [`crate::error::ApiError`]; spans, metrics and status mapping are
//! done once, in [`crate::daemon::Daemon::handle`].

pub mod runtime_config;
pub mod status;
pub mod update_runtime_config;
pub mod version;
