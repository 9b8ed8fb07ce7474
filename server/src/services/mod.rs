//! The two CRI gRPC services, thin dispatchers to the `rpc` modules.

mod image;
mod runtime;

pub use image::ImageApi;
pub use runtime::RuntimeApi;
