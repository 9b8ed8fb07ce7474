//! `ListImages`: every image, or those matching the filter's image.

use crust_proto::runtime::v1::{Image, ImageFilter, ListImagesRequest, ListImagesResponse};

use crate::{convert_image, daemon::Daemon, error::ApiError};

/// Lists images; a filter image (id, tag or digest) narrows it to that one image. An
/// unparseable filter matches nothing, as containerd does.
pub async fn list_images(
    daemon: &Daemon,
    req: ListImagesRequest,
) -> Result<ListImagesResponse, ApiError> {
    Ok(ListImagesResponse {
        images: matching(daemon, req.filter.as_ref())?,
    })
}

pub(crate) fn matching(
    daemon: &Daemon,
    filter: Option<&ImageFilter>,
) -> Result<Vec<Image>, ApiError> {
    let store = daemon.images()?;
    let wanted = filter
        .and_then(|f| f.image.as_ref())
        .map(|s| s.image.trim())
        .filter(|s| !s.is_empty());
    let views = match wanted {
        None => store.list(),
        Some(query) => match store.find(query) {
            Ok(found) => found.into_iter().collect(),
            Err(crust_image::ImageError::InvalidReference(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        },
    };
    Ok(views.iter().map(convert_image::image_to_cri).collect())
}
