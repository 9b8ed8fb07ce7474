//! `PullImage`: fetch an image into the store and return its id.

use crust_image::PullProgress;
use crust_proto::runtime::v1::{PullImageRequest, PullImageResponse};

use crate::{convert_image, daemon::Daemon, error::ApiError};

/// Pulls `req.image`; `image_ref` in the answer is the image id (config digest), as
/// containerd returns, so kubelet can refer to it immutably.
pub async fn pull_image(
    daemon: &Daemon,
    req: PullImageRequest,
) -> Result<PullImageResponse, ApiError> {
    let id = pull(daemon, req, None).await?;
    Ok(PullImageResponse { image_ref: id })
}

/// The pull behind both `PullImage` and crust's `PullImageProgress`: checks the
/// request, pulls (reporting into `progress` if given) and returns the image id.
pub async fn pull(
    daemon: &Daemon,
    req: PullImageRequest,
    progress: Option<&PullProgress>,
) -> Result<String, ApiError> {
    let image = convert_image::image_name(req.image.as_ref(), "image.image")?;
    daemon.check_image_handler(req.image.as_ref())?;
    tracing::Span::current().record("image", image.as_str());
    let credentials = convert_image::credentials(req.auth.as_ref(), &image)?;
    let store = daemon.images()?.clone();
    let started = std::time::Instant::now();
    let id = store
        .pull_with_progress(&image, credentials, progress)
        .await?;
    tracing::info!(image_id = %id, elapsed_ms = started.elapsed().as_millis() as u64, "pulled");
    Ok(id)
}
