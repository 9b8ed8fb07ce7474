//! crustd, the crust CRI daemon: configuration, the gRPC services, the state the RPCs
//! share, start-up recovery and shutdown. The binary (`src/main.rs`) is a thin CLI
//! over [`serve::serve`].

pub mod authority;
pub mod config;
pub mod convert_container;
pub mod convert_image;
pub mod convert_limits;
#[cfg(test)]
mod convert_limits_tests;
pub mod convert_sandbox;
pub mod convert_userns;
pub mod daemon;
pub mod deadline;
pub mod error;
pub mod events;
pub mod image_store;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod node_config;
pub mod pod_network;
pub mod recovery;
pub mod rpc;
pub mod sd_notify;
pub mod serve;
pub mod services;
pub mod span_timings;
pub mod streaming;
