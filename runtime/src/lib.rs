//! Pod sandboxes and containers for crust: the per-pod monitor, the container launcher
//! and cgroups. Containers land with issue 5; until then crustd answers their RPCs with
//! `UNIMPLEMENTED`.

/// A span for one step of an RPC, for `CRUST_SPAN_TIMINGS` (crustd's `span_timings`):
/// debug level under the `crust::step` target, so it is a disabled callsite unless that
/// file (or debug logging) was asked for.
#[macro_export]
macro_rules! step_span {
    ($name:literal) => {
        tracing::debug_span!(target: "crust::step", $name)
    };
    ($name:literal, $detail:expr) => {
        tracing::debug_span!(target: "crust::step", $name, detail = $detail)
    };
}

pub mod apparmor;
pub mod cgroup;
pub mod container;
mod error;
pub mod events;
pub mod fds;
pub mod features;
pub mod ids;
pub mod monitor;
mod private_dir;
pub mod proc;
pub mod sandbox;
mod text;

pub use error::RuntimeError;
pub use private_dir::{PRIVATE_DIR_MODE, ensure_private_dir};
pub use text::{EXCERPT_BYTES, excerpt};
