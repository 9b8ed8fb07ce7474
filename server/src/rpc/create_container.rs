//! `CreateContainer`: resolve the image, then have the runtime create the container.
//! An `image.image` that is an absolute path names a checkpoint archive to restore
//! from ([`super::create_container_restore`]).

use crust_proto::runtime::v1::{CreateContainerRequest, CreateContainerResponse};
use crust_runtime::container::ImageForContainer;

use crate::{convert_container, daemon::Daemon, error::ApiError};

pub async fn create_container(
    daemon: &Daemon,
    req: CreateContainerRequest,
) -> Result<CreateContainerResponse, ApiError> {
    tracing::Span::current().record(
        "pod_id",
        crust_runtime::excerpt(&req.pod_sandbox_id).as_ref(),
    );
    let config = req.config.ok_or(ApiError::InvalidArgument {
        field: "config",
        reason: "is required".into(),
    })?;
    let Some(image) = config.image.as_ref() else {
        return Err(ApiError::InvalidArgument {
            field: "config.image",
            reason: "is required".into(),
        });
    };
    let reference = image.image.clone();
    if reference.is_empty() {
        return Err(ApiError::InvalidArgument {
            field: "config.image.image",
            reason: "is required".into(),
        });
    }
    if super::create_container_restore::is_archive_path(&reference) {
        return super::create_container_restore::create_restored(
            daemon,
            &req.pod_sandbox_id,
            config,
            reference,
        )
        .await;
    }
    let cdi: Vec<String> = config.cdi_devices.iter().map(|d| d.name.clone()).collect();
    // Checked and converted first: a bad config fails before the image is looked up.
    let mut spec = convert_container::container_spec(config)?;
    if !cdi.is_empty() {
        // Reads the node's CDI spec files: off the async threads.
        let dirs = daemon.config.runtime.cdi_spec_dirs.clone();
        spec = tokio::task::spawn_blocking(move || {
            crust_runtime::container::apply_cdi_devices(&mut spec, &cdi, &dirs).map(|()| spec)
        })
        .await
        .map_err(|_| ApiError::TaskFailed {
            rpc: "CreateContainer",
        })??;
    }
    tracing::Span::current().record("image", reference.as_str());
    // The lease keeps the image's layers until the container record pins them.
    let (image, lease) = daemon.images()?.runtime_image(&reference)?;
    let volume_leases = resolve_image_volumes(daemon, &mut spec.mounts)?;
    let image = ImageForContainer {
        id: image.id.clone(),
        reference,
        layers_root: image.layers_root.clone(),
        lower: image.lower_names.clone(),
        config: convert_container::image_config(&image.config),
    };
    let created = daemon
        .sandboxes
        .create_container(&req.pod_sandbox_id, spec, image)
        .await;
    drop(lease);
    drop(volume_leases);
    let id = match created {
        Ok(id) => id,
        Err(e) => {
            // A RemoveImage during the attempt may have left the image to us.
            crate::image_store::prune_unused(daemon).await;
            return Err(e.into());
        }
    };
    tracing::Span::current().record("container_id", id.as_str());
    Ok(CreateContainerResponse { container_id: id })
}

/// Points each image volume (`Mount.image`, which kubelet sets to the image_ref its
/// PullImage returned) at the image's layers. The leases keep those layers until the
/// container record names the image (then a RemoveImage hides it until the last
/// container using it goes, as for the container's own image).
pub(super) fn resolve_image_volumes(
    daemon: &Daemon,
    mounts: &mut [crust_runtime::container::MountSpec],
) -> Result<Vec<crust_image::store::ImageLease>, ApiError> {
    let mut leases = Vec::new();
    for m in mounts.iter_mut() {
        let Some(volume) = m.image.as_mut() else {
            continue;
        };
        let (image, lease) = daemon.images()?.runtime_image(&volume.reference)?;
        volume.id = image.id.clone();
        volume.layers_root = image.layers_root.clone();
        volume.lower = image.lower_names.clone();
        leases.push(lease);
    }
    Ok(leases)
}
