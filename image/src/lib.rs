//! Images for crust: references, the registry client, the content-addressed store and
//! layer unpacking (issue 3).
//!
//! The server talks to [`ImageStore`]: [`ImageStore::pull`] (or
//! [`ImageStore::pull_with_progress`] with a [`PullProgress`] to sample), [`ImageStore::find`],
//! [`ImageStore::list`], [`ImageStore::remove`], [`ImageStore::usage`]; the runtime
//! asks it for [`ImageStore::runtime_image`] (overlay lower dirs and the config).

pub mod auth;
pub mod error;
pub mod oci;
pub mod progress;
mod pull;
pub mod reference;
pub mod registries;
pub mod registry;
mod remove;
pub mod store;
pub mod unpack;

pub use auth::{AuthConfig, Credentials};
pub use error::ImageError;
pub use progress::{LayerPhase, LayerProgress, PullProgress};
pub use reference::{Reference, ReferenceError};
pub use registries::Registries;
pub use remove::Removed;
pub use store::{
    FsUsage, ImageConfig, ImageRecord, ImageStore, ImageView, LayerInfo, RuntimeImage, StoreOptions,
};
