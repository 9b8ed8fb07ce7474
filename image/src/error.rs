//! The image crate's error type. Every variant names the image (as the user wrote it)
//! or the object it is about; none carries a credential.

use std::{io, path::PathBuf, time::Duration};

use crate::{ReferenceError, unpack::UnpackError};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    InvalidReference(#[from] ReferenceError),

    #[error("invalid auth for image {image:?}: {reason}")]
    InvalidAuth { image: String, reason: &'static str },

    #[error("image {image:?} not found{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    NotFound {
        image: String,
        detail: Option<String>,
    },

    #[error("pull {image:?}: registry {registry} requires authentication")]
    Unauthenticated { image: String, registry: String },

    #[error("pull {image:?}: registry {registry} denied access")]
    PermissionDenied { image: String, registry: String },

    #[error("pull {image:?}: registry {registry} unreachable: {reason}")]
    Unavailable {
        image: String,
        registry: String,
        reason: String,
    },

    #[error("pull {image:?}: no progress for {}", humanize(*after))]
    ProgressTimeout { image: String, after: Duration },

    #[error("pull {image:?}: registry {registry} answered {status} for {what}")]
    Registry {
        image: String,
        registry: String,
        status: u16,
        what: String,
    },

    #[error("pull {image:?}: {what} has digest {actual}, expected {expected}")]
    DigestMismatch {
        image: String,
        what: String,
        expected: String,
        actual: String,
    },

    /// The registry sent (or announced in `Content-Length`) more or fewer bytes than
    /// the descriptor declares. `received` is where reading stopped (one chunk past
    /// `declared` when it sent too much) or the announced length.
    #[error("pull {image:?}: {what} {digest}: {}", size_detail(*declared, *received))]
    SizeMismatch {
        image: String,
        what: &'static str,
        digest: String,
        declared: u64,
        received: u64,
    },

    #[error("pull {image:?}: invalid {what}: {reason}")]
    InvalidManifest {
        image: String,
        what: &'static str,
        reason: String,
    },

    #[error("pull {image:?}: no manifest for platform {platform}")]
    NoMatchingPlatform { image: String, platform: String },

    #[error("pull {image:?}: layer {layer}: {source}")]
    Unpack {
        image: String,
        layer: String,
        #[source]
        source: UnpackError,
    },

    #[error("image store: {op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("image store: {0}")]
    State(#[from] crust_state::StateError),

    #[error("invalid registries.conf {path:?}: {reason}")]
    RegistriesConf { path: PathBuf, reason: String },
}

fn size_detail(declared: u64, received: u64) -> String {
    if received > declared {
        format!("the registry sent more than the {declared} bytes its descriptor declares")
    } else {
        format!("the registry sent {received} bytes, its descriptor declares {declared}")
    }
}

fn humanize(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

impl ImageError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { op, path, source }
    }
}
