//! Pod sandboxes and containers for crust: the per-pod monitor, the container launcher
//! and cgroups. Containers land with issue 5; until then crustd answers their RPCs with
//! `UNIMPLEMENTED`.

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
