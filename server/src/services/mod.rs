//! The two CRI gRPC services and crust's own `crust.v1.Images`, thin dispatchers to
//! the `rpc` modules.

mod crust_images;
mod image;
mod runtime;

pub use crust_images::CrustImagesApi;
pub use image::ImageApi;
pub use runtime::RuntimeApi;
