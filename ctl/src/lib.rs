//! The client side of CRI: connecting to a runtime's socket and printing CRI objects the
//! way crictl does. Used by `crustctl` and by the end-to-end tests.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let channel = crust_ctl::connect("unix:///run/crust/crust.sock", std::time::Duration::from_secs(2)).await?;
//! let mut client = crust_ctl::runtime_client(channel);
//! let version = client.version(crust_proto::runtime::v1::VersionRequest::default()).await?;
//! println!("{}", version.into_inner().runtime_name);
//! # Ok(()) }
//! ```

mod connect;
pub mod cri_log;
pub mod files;
pub mod output;
pub mod stream_client;
pub mod template;

pub use connect::{
    ConnectError, connect, connect_with_deadline, image_client, runtime_client, socket_path,
};
