//! Opening the image store at start-up, from `[image]` config.

use std::sync::Arc;

use crust_image::{ImageStore, Registries, StoreOptions};
use crust_state::Quarantined;

use crate::daemon::Daemon;

/// Opens `<root>/image` (removing crash leftovers) and loads image records. An error
/// is returned as text: it is shown by every image RPC (UNAVAILABLE) rather than
/// stopping the runtime side of the daemon.
pub fn open(daemon: &Daemon) -> Result<(Arc<ImageStore>, Vec<Quarantined>), String> {
    let config = &daemon.config.image;
    let registries = match &config.registries_conf {
        Some(path) => Registries::load(path).map_err(|e| e.to_string())?,
        None => Registries::default(),
    };
    let options = StoreOptions {
        root: daemon.config.root.join("image"),
        progress_timeout: config.pull_progress_timeout,
        max_concurrent_downloads: config.max_concurrent_downloads,
        max_layer_unpacked_bytes: config.max_layer_unpacked_bytes,
        pinned_images: config.pinned_images.clone(),
        registries,
    };
    let started = std::time::Instant::now();
    match ImageStore::open(options, daemon.store.clone()) {
        Ok((store, quarantined)) => {
            tracing::info!(
                images = store.list().len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "image store loaded"
            );
            Ok((Arc::new(store), quarantined))
        }
        Err(error) => {
            tracing::error!(%error, "cannot open the image store; image RPCs will answer UNAVAILABLE");
            Err(error.to_string())
        }
    }
}

/// Deletes images removed while containers used them once none does (containerd frees
/// such an image's snapshots with the last container's lease). Called after a
/// container or pod is removed and at start-up; cheap when no image is hidden.
/// Best-effort: a failure is logged and retried at the next call.
pub async fn prune_unused(daemon: &Daemon) {
    let Ok(store) = daemon.images() else {
        return;
    };
    let store = store.clone();
    let users = daemon.sandboxes.image_users();
    let result = tokio::task::spawn_blocking(move || store.prune_unused(&|id| users.uses(id)))
        .await
        .expect("prune images task panicked");
    match result {
        Ok(ids) if !ids.is_empty() => {
            tracing::info!(images = ?ids, "deleted removed images no container uses any more");
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot delete unused removed images; will retry"),
    }
}
