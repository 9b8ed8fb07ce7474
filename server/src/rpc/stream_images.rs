//! `StreamImages`: `ListImages` as a stream of batches, for lists beyond one message.

use crust_proto::runtime::v1::{StreamImagesRequest, StreamImagesResponse};

use crate::{daemon::Daemon, error::ApiError};

/// Images per response message: small enough that even images with many tags stay
/// far below the 16 MiB message limit.
const BATCH: usize = 500;

/// The filtered image list, cut into batches; always at least one (possibly empty)
/// message so clients see the end of an empty list.
pub async fn stream_images(
    daemon: &Daemon,
    req: StreamImagesRequest,
) -> Result<Vec<StreamImagesResponse>, ApiError> {
    let images = super::list_images::matching(daemon, req.filter.as_ref())?;
    if images.is_empty() {
        return Ok(vec![StreamImagesResponse { images: Vec::new() }]);
    }
    Ok(images
        .chunks(BATCH)
        .map(|c| StreamImagesResponse { images: c.to_vec() })
        .collect())
}
