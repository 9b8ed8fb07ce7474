//! The Kubernetes Container Runtime Interface, `runtime.v1`, as generated Rust.
//!
//! Only generated code lives here: prost messages, the tonic `RuntimeService` and
//! `ImageService` servers and clients, and protojson serde impls. The `.proto` source is
//! `cri/api.proto`, kept wire-compatible with `k8s.io/cri-api` v0.36. crust's own
//! service (`crust.v1.Images`, pull progress; not CRI) is `services/crust/v1/images.proto`.
//!
//! ```
//! use crust_proto::runtime::v1::VersionRequest;
//! let req = VersionRequest { version: "v1".into() };
//! assert_eq!(serde_json::to_string(&req).unwrap(), r#"{"version":"v1"}"#);
//! ```

/// The `runtime` proto package.
pub mod runtime {
    /// The `runtime.v1` proto package: all CRI messages and both services.
    #[allow(clippy::all, missing_docs, rustdoc::all)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/runtime.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/runtime.v1.serde.rs"));
    }
}

/// The `crust` proto package: crust's own services, not part of the CRI.
pub mod crust {
    /// The `crust.v1` proto package (`services/crust/v1/images.proto`): `Images` with
    /// `PullImageProgress`, served by crustd on the CRI socket.
    #[allow(clippy::all, missing_docs, rustdoc::all)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/crust.v1.rs"));
    }
}

/// The encoded `FileDescriptorSet` of `cri/api.proto` and `crust/v1/images.proto`, for reflection and for the test
/// that checks our field numbers against upstream's.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cri_descriptor.bin"));

/// Largest gRPC message crustd and crustctl send or accept, as kubelet does (16 MiB).
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;
