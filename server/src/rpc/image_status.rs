//! `ImageStatus`: one image, or none (a missing image is not an error).

use std::collections::HashMap;

use crust_proto::runtime::v1::{ImageStatusRequest, ImageStatusResponse};

use crate::{convert_image, daemon::Daemon, error::ApiError};

/// Looks the image up by id, tag or digest. `verbose` adds `info["info"]`: the image
/// config JSON, as containerd's `imageSpec` (crictl inspecti prints it).
pub async fn image_status(
    daemon: &Daemon,
    req: ImageStatusRequest,
) -> Result<ImageStatusResponse, ApiError> {
    let image = convert_image::image_name(req.image.as_ref(), "image.image")?;
    daemon.check_image_handler(req.image.as_ref())?;
    tracing::Span::current().record("image", image.as_str());
    let store = daemon.images()?;
    let Some(view) = store.find(&image)? else {
        // CRI: "If the image isn't present, returns a response with ImageStatusResponse.Image set to nil."
        return Ok(ImageStatusResponse::default());
    };
    let mut info = HashMap::new();
    if req.verbose {
        let config = store.config_json(&view.record.id)?;
        let config: serde_json::Value =
            serde_json::from_slice(&config).unwrap_or(serde_json::Value::Null);
        let verbose = serde_json::json!({
            "imageSpec": config,
            "chainIDs": view.record.layers.iter().map(|l| l.chain_id.clone()).collect::<Vec<_>>(),
            "manifestDigests": view.record.manifest_digests,
        });
        info.insert("info".to_string(), verbose.to_string());
    }
    Ok(ImageStatusResponse {
        image: Some(convert_image::image_to_cri(&view)),
        info,
    })
}
