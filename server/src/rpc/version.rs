//! `Version`: who we are and which CRI version we speak.

use crust_proto::runtime::v1::{VersionRequest, VersionResponse};

use crate::error::ApiError;

/// Name kubelet shows as the node's container runtime (`crust://0.1.0`).
pub const RUNTIME_NAME: &str = "crust";
/// The CRI API version served.
pub const RUNTIME_API_VERSION: &str = "v1";
/// Version of the kubelet runtime API, which every CRI runtime reports as 0.1.0.
const KUBELET_API_VERSION: &str = "0.1.0";

/// Answers `Version`. The request's `version` (the kubelet's API version) is accepted
/// whatever it is: CRI has one version (v1), negotiated by the service name.
pub async fn version(_req: VersionRequest) -> Result<VersionResponse, ApiError> {
    Ok(VersionResponse {
        version: KUBELET_API_VERSION.into(),
        runtime_name: RUNTIME_NAME.into(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        runtime_api_version: RUNTIME_API_VERSION.into(),
    })
}
