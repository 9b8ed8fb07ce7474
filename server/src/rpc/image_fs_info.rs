//! `ImageFsInfo`: what the image store uses on its filesystem.

use crust_proto::runtime::v1::{
    FilesystemIdentifier, FilesystemUsage, ImageFsInfoRequest, ImageFsInfoResponse, UInt64Value,
};

use crate::{daemon::Daemon, error::ApiError};

/// Reports bytes and inodes used under `<root>/image` (kubelet's image GC compares
/// them with the filesystem's capacity).
pub async fn image_fs_info(
    daemon: &Daemon,
    _req: ImageFsInfoRequest,
) -> Result<ImageFsInfoResponse, ApiError> {
    let store = daemon.images()?.clone();
    let root = store.root().to_path_buf();
    let usage = tokio::task::spawn_blocking(move || store.usage())
        .await
        .expect("usage task panicked")?;
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    Ok(ImageFsInfoResponse {
        image_filesystems: vec![FilesystemUsage {
            timestamp,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: root.display().to_string(),
            }),
            used_bytes: Some(UInt64Value {
                value: usage.used_bytes,
            }),
            inodes_used: Some(UInt64Value {
                value: usage.inodes_used,
            }),
        }],
        container_filesystems: Vec::new(),
    })
}
