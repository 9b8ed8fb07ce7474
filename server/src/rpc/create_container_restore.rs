//! `CreateContainer` whose `config.image.image` is the path of a checkpoint archive on
//! the node: the container to be restored from it (StartContainer then restores the
//! checkpointed processes). As in CRI-O, the restored container keeps what the archive
//! says it ran (its image, command, environment, working directory and its bind
//! mounts' destinations) and takes its metadata, labels, annotations, resources,
//! security context and the sources of those bind mounts from the request, in the pod
//! the request names.

use std::path::PathBuf;

use crust_proto::runtime::v1::{ContainerConfig, CreateContainerResponse};
use crust_runtime::container::{
    ArchiveError, CHECKPOINTED_AT_ANNOTATION, CheckpointArchive, ImageForContainer,
    RESTORED_FROM_ANNOTATION, RestoreSpec,
};

use crate::{convert_container, daemon::Daemon, error::ApiError};

const FIELD: &str = "config.image.image";

/// Mount destinations the runtime makes for every container (or the pod provides):
/// a restore gets the new pod's, never the archive's. CRI-O's list, plus `/etc/hosts`
/// (crust's pod file) .
const RUNTIME_MOUNTS: &[&str] = &[
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/mqueue",
    "/dev/shm",
    "/sys",
    "/sys/fs/cgroup",
    "/etc/resolv.conf",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/passwd",
    "/etc/group",
    "/run/secrets",
    "/run/.containerenv",
];

/// Whether `image.image` names a checkpoint archive rather than an image: an absolute
/// path (no image reference starts with `/`).
pub fn is_archive_path(image: &str) -> bool {
    image.starts_with('/')
}

pub async fn create_restored(
    daemon: &Daemon,
    pod_id: &str,
    mut config: ContainerConfig,
    archive_path: String,
) -> Result<CreateContainerResponse, ApiError> {
    let path = PathBuf::from(&archive_path);
    let archive = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            crust_runtime::container::read_checkpoint_archive(&path)
        })
        .await
        .map_err(|_| ApiError::TaskFailed {
            rpc: "CreateContainer",
        })?
        .map_err(|e| match e {
            ArchiveError::NotFound { .. } => ApiError::NotFound {
                kind: "checkpoint archive (config.image.image)",
                id: crust_runtime::excerpt(&archive_path).into_owned(),
            },
            e => ApiError::InvalidArgument {
                field: FIELD,
                reason: e.to_string(),
            },
        })?
    };
    tracing::Span::current().record("image", archive.image.as_str());
    // The image the checkpoint was made from supplies the lower layers the writable
    // layer's diff goes on; crust pulls nothing here (kubelet pulls what the pod
    // names, which for a restore is the archive).
    let (image, lease) = daemon
        .images()?
        .runtime_image(&archive.image)
        .map_err(|e| match e {
            crust_image::ImageError::NotFound { .. } => ApiError::NotFound {
                kind: "image (the one the checkpoint archive was made from; pull it first)",
                id: archive.image.clone(),
            },
            e => e.into(),
        })?;
    keep_archive_mounts(&mut config, &archive, &image.config.volumes, &archive_path)?;
    let mut spec = convert_container::container_spec(config)?;
    apply_archive(&mut spec, &archive);
    spec.annotations
        .insert(RESTORED_FROM_ANNOTATION.into(), archive_path.clone());
    if !archive.checkpointed_at.is_empty() {
        spec.annotations.insert(
            CHECKPOINTED_AT_ANNOTATION.into(),
            archive.checkpointed_at.clone(),
        );
    }
    spec.restore = Some(RestoreSpec {
        archive: path,
        checkpointed_at: archive.checkpointed_at.clone(),
    });
    let volume_leases = super::create_container::resolve_image_volumes(daemon, &mut spec.mounts)?;
    let image = ImageForContainer {
        id: image.id.clone(),
        reference: archive.image.clone(),
        layers_root: image.layers_root.clone(),
        lower: image.lower_names.clone(),
        config: convert_container::image_config(&image.config),
    };
    let created = daemon.sandboxes.create_container(pod_id, spec, image).await;
    drop(lease);
    drop(volume_leases);
    let id = match created {
        Ok(id) => id,
        Err(e) => {
            crate::image_store::prune_unused(daemon).await;
            return Err(e.into());
        }
    };
    tracing::Span::current().record("container_id", id.as_str());
    tracing::info!(container_id = %id, checkpointed = %archive.id, "container created from a checkpoint archive");
    Ok(CreateContainerResponse { container_id: id })
}

/// The process as it was checkpointed: CRIU brings back its memory, so what the spec
/// says of it must be what ran (ContainerStatus, exec's environment).
fn apply_archive(spec: &mut crust_runtime::container::ContainerSpec, archive: &CheckpointArchive) {
    let Some(process) = archive.spec.process().as_ref() else {
        return;
    };
    spec.command = process.args().clone().unwrap_or_default();
    spec.args = Vec::new();
    spec.working_dir = process.cwd().display().to_string();
    spec.envs = process
        .env()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        })
        .collect();
}

/// CRI-O's rule for bind mounts: every bind mount the checkpointed container had (but
/// the runtime's own and the image's volumes) must be in the request, which says
/// where its source is now; a checkpoint archive alone never mounts a host path.
/// Request mounts the checkpoint did not have are dropped: CRIU restores the mount
/// table it dumped.
fn keep_archive_mounts(
    config: &mut ContainerConfig,
    archive: &CheckpointArchive,
    image_volumes: &[String],
    archive_path: &str,
) -> Result<(), ApiError> {
    let clean = |p: &str| {
        let t = p.trim_end_matches('/');
        if t.is_empty() {
            "/".to_string()
        } else {
            t.to_string()
        }
    };
    let binds: Vec<String> = archive
        .spec
        .mounts()
        .as_ref()
        .map(|mounts| {
            mounts
                .iter()
                .filter(|m| {
                    m.typ().as_deref() == Some("bind")
                        || m.options()
                            .as_ref()
                            .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"))
                })
                .map(|m| clean(&m.destination().display().to_string()))
                .filter(|d| {
                    !RUNTIME_MOUNTS.contains(&d.as_str())
                        && !image_volumes.iter().any(|v| clean(v) == *d)
                })
                .collect()
        })
        .unwrap_or_default();
    let missing: Vec<&str> = binds
        .iter()
        .filter(|d| {
            !config
                .mounts
                .iter()
                .any(|m| clean(&m.container_path) == **d)
        })
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::InvalidArgument {
            field: "config.mounts",
            reason: format!(
                "restoring {} needs these bind mounts in the request (their host paths): {}",
                crust_runtime::excerpt(archive_path),
                missing.join(", ")
            ),
        });
    }
    config
        .mounts
        .retain(|m| binds.contains(&clean(&m.container_path)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_proto::runtime::v1::Mount;

    fn archive(mounts: serde_json::Value) -> CheckpointArchive {
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["/bin/sh", "-c", "x"], "cwd": "/w", "env": ["A=1", "B=x=y"],
                        "user": {"uid": 0, "gid": 0}},
            "root": {"path": "/r"},
            "mounts": mounts,
        });
        CheckpointArchive {
            id: "old".into(),
            name: "n".into(),
            image: "busybox".into(),
            checkpointed_at: String::new(),
            spec: serde_json::from_value(spec).unwrap(),
        }
    }

    fn mount(path: &str) -> Mount {
        Mount {
            container_path: path.into(),
            host_path: format!("/host{path}"),
            ..Default::default()
        }
    }

    #[test]
    fn bind_mounts_must_be_in_the_request() {
        let a = archive(serde_json::json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/etc/hosts", "type": "bind", "source": "/old/hosts", "options": ["rbind"]},
            {"destination": "/data", "type": "bind", "source": "/old/data", "options": ["rbind"]},
            {"destination": "/vol", "type": "bind", "source": "/old/vol", "options": ["rbind"]},
        ]));
        let volumes = vec!["/vol".to_string()];
        for (mounts, ok, kept, case) in [
            (vec![], false, vec![], "the archive's /data is missing"),
            (vec![mount("/data")], true, vec!["/data"], "given"),
            (
                vec![mount("/data/")],
                true,
                vec!["/data/"],
                "trailing slash",
            ),
            (
                vec![mount("/data"), mount("/extra")],
                true,
                vec!["/data"],
                "an extra one is dropped",
            ),
        ] {
            let mut config = ContainerConfig {
                mounts,
                ..Default::default()
            };
            let got = keep_archive_mounts(&mut config, &a, &volumes, "/a.tar");
            assert_eq!(got.is_ok(), ok, "{case}: {got:?}");
            if let Err(e) = got {
                let text = e.to_string();
                assert!(
                    text.contains("config.mounts") && text.contains("/data"),
                    "{case}: {text}"
                );
                assert!(
                    !text.contains("/vol") && !text.contains("/etc/hosts"),
                    "{case}: {text}"
                );
            } else {
                let paths: Vec<&str> = config
                    .mounts
                    .iter()
                    .map(|m| m.container_path.as_str())
                    .collect();
                assert_eq!(paths, kept, "{case}");
            }
        }
    }

    #[test]
    fn process_comes_from_the_archive() {
        let a = archive(serde_json::json!([]));
        let mut spec = crust_runtime::container::ContainerSpec {
            command: vec!["/other".into()],
            args: vec!["x".into()],
            ..Default::default()
        };
        apply_archive(&mut spec, &a);
        assert_eq!(spec.command, ["/bin/sh", "-c", "x"]);
        assert!(spec.args.is_empty());
        assert_eq!(spec.working_dir, "/w");
        assert_eq!(
            spec.envs,
            [
                ("A".to_string(), "1".to_string()),
                ("B".into(), "x=y".into())
            ]
        );
    }

    #[test]
    fn archive_paths() {
        assert!(is_archive_path("/var/lib/ckpt.tar"));
        for image in [
            "busybox",
            "docker.io/library/busybox:1",
            "localhost:5000/x",
            "sha256:ab",
        ] {
            assert!(!is_archive_path(image), "{image}");
        }
    }
}
