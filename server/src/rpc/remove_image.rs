//! `RemoveImage`: untag or delete; idempotent.

use crust_proto::runtime::v1::{RemoveImageRequest, RemoveImageResponse};

use crate::{convert_image, daemon::Daemon, error::ApiError};

/// Removes by id, tag or digest. Removing an image that is not there succeeds (CRI:
/// "This call is idempotent, and must not return an error if the image has already
/// been removed").
pub async fn remove_image(
    daemon: &Daemon,
    req: RemoveImageRequest,
) -> Result<RemoveImageResponse, ApiError> {
    let image = convert_image::image_name(req.image.as_ref(), "image.image")?;
    daemon.check_image_handler(req.image.as_ref())?;
    tracing::Span::current().record("image", image.as_str());
    let store = daemon.images()?.clone();
    // An image a container (in any state) uses is hidden, not deleted: its layers
    // are that container's rootfs. The check reads the live container records.
    let users = daemon.sandboxes.image_users();
    let removed = tokio::task::spawn_blocking(move || store.remove(&image, &|id| users.uses(id)))
        .await
        .expect("remove image task panicked")?;
    tracing::info!(outcome = ?removed, "removed");
    Ok(RemoveImageResponse {})
}
