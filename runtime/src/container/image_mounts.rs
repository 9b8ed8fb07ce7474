//! Image volumes (CRI `Mount.image`, KEP-4639): an image kubelet pulled, mounted into a
//! container read-only. Each one is mounted on the host at create, under the
//! container's private directory (`<dir>/image-mounts/<mount index>`): a read-only
//! overlay of the image's layers (a bind of the layer for a one-layer image; overlayfs
//! wants two lowers when it has no upper), `nosuid,nodev,noexec`, as containerd mounts a
//! read-only snapshot view. The CRI mount then binds that (or its `image_sub_path`)
//! into the container with the same flags, through either launcher. The mounts are
//! undone by [`unmount_image_volumes`] on removal and on rollback.

use std::{
    fs, io,
    os::fd::AsFd,
    path::{Component, Path, PathBuf},
};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::{ImageMount, MountSpec};
use crate::error::RuntimeError;

/// The kernel copies mount data into one page: longer `lowerdir=` options fail.
const MOUNT_DATA_MAX: usize = 4095;

/// The directory holding a container's image volume mounts.
fn mounts_dir(container_dir: &Path) -> PathBuf {
    container_dir.join("image-mounts")
}

/// Mounts every image volume of `mounts` under `container_dir` and points its
/// `host_path` at what the container must see (the image's root, or its sub path
/// resolved inside the image). Others are left as they are. On error what was
/// mounted stays for [`unmount_image_volumes`] (the caller's rollback) to undo.
pub(crate) fn mount_image_volumes(
    id: &str,
    container_dir: &Path,
    mounts: &mut [MountSpec],
) -> Result<(), RuntimeError> {
    for (i, m) in mounts.iter_mut().enumerate() {
        let Some(image) = m.image.clone() else {
            continue;
        };
        let sub = sub_path(i, &image.sub_path)?;
        let target = mounts_dir(container_dir).join(i.to_string());
        fs::create_dir_all(&target).map_err(io_error(id, "create", &target))?;
        mount_image(id, &image, &target)?;
        m.host_path = resolve_in_image(id, i, &image, &target, &sub)?
            .to_string_lossy()
            .into_owned();
        // CRI: "All OCI mounts are per feature definition readonly".
        m.readonly = true;
    }
    Ok(())
}

/// Unmounts a container's image volumes; idempotent ("not mounted" and "gone" are
/// success). Returns what could not be undone.
pub(crate) fn unmount_image_volumes(container_dir: &Path) -> Vec<String> {
    let dir = mounts_dir(container_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => return vec![format!("read {}: {e}", dir.display())],
    };
    let mut errors = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => errors.push(format!("unmount {}: {e}", path.display())),
        }
    }
    errors
}

/// `image_sub_path` as a relative path of plain names: it names a place inside the
/// image, so `..` and absolute paths are refused rather than resolved.
fn sub_path(i: usize, sub: &str) -> Result<PathBuf, RuntimeError> {
    let path = Path::new(sub);
    let plain = path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !plain || sub.contains('\0') {
        return Err(RuntimeError::InvalidArgument {
            field: "config.mounts[].image_sub_path",
            reason: format!(
                "mounts[{i}]: {sub:?} must be a relative path inside the image without `..`"
            ),
        });
    }
    Ok(path.to_path_buf())
}

fn mount_image(id: &str, image: &ImageMount, target: &Path) -> Result<(), RuntimeError> {
    let layers: Vec<PathBuf> = image
        .lower
        .iter()
        .map(|l| image.layers_root.join(l))
        .collect();
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    match layers.as_slice() {
        [] => Err(RuntimeError::InvalidArgument {
            field: "config.mounts[].image",
            reason: format!("image {} has no layers to mount", image.reference),
        }),
        [layer] => {
            mount(
                Some(layer.as_path()),
                target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(errno(id, "bind-mount", target))?;
            // A bind takes its flags only on a remount.
            mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags,
                None::<&str>,
            )
            .map_err(errno(id, "remount read-only", target))
        }
        _ => {
            let mut data = String::from("lowerdir=");
            for (n, layer) in layers.iter().enumerate() {
                let text = layer.to_string_lossy();
                // overlayfs splits lowerdir on `:` and options on `,`.
                if text.contains([':', ',', '\\']) {
                    return Err(RuntimeError::InvalidArgument {
                        field: "config.mounts[].image",
                        reason: format!("layer path {text:?} cannot be passed to overlayfs"),
                    });
                }
                if n > 0 {
                    data.push(':');
                }
                data.push_str(&text);
            }
            if data.len() > MOUNT_DATA_MAX {
                return Err(RuntimeError::InvalidArgument {
                    field: "config.mounts[].image",
                    reason: format!(
                        "image {} has too many layers ({}) to mount as a volume",
                        image.reference,
                        layers.len()
                    ),
                });
            }
            mount(
                Some("overlay"),
                target,
                Some("overlay"),
                flags,
                Some(data.as_str()),
            )
            .map_err(errno(id, "mount overlay", target))
        }
    }
}

/// The real path of `sub` inside the mounted image at `root`, every symlink resolved
/// as if the image were `/` (RESOLVE_IN_ROOT), so none leads out to the host.
fn resolve_in_image(
    id: &str,
    i: usize,
    image: &ImageMount,
    root: &Path,
    sub: &Path,
) -> Result<PathBuf, RuntimeError> {
    let root = &fs::canonicalize(root).map_err(io_error(id, "resolve", root))?;
    if sub.as_os_str().is_empty() {
        return Ok(root.to_path_buf());
    }
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_error(id, "open", root)(e.into()))?;
    let found = rustix::fs::openat2(
        dir.as_fd(),
        sub,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    );
    let fd = match found {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => {
            return Err(RuntimeError::InvalidArgument {
                field: "config.mounts[].image_sub_path",
                reason: format!(
                    "mounts[{i}]: {} does not exist in image {}",
                    sub.display(),
                    image.reference
                ),
            });
        }
        Err(e) => return Err(io_error(id, "resolve", &root.join(sub))(e.into())),
    };
    let link = PathBuf::from(format!(
        "/proc/self/fd/{}",
        rustix::fd::AsRawFd::as_raw_fd(&fd)
    ));
    let real = fs::read_link(&link).map_err(io_error(id, "resolve", &root.join(sub)))?;
    // Defence in depth: what the kernel resolved must still be inside the image.
    if !real.starts_with(root) {
        return Err(RuntimeError::InvalidArgument {
            field: "config.mounts[].image_sub_path",
            reason: format!("mounts[{i}]: {} leaves the image", sub.display()),
        });
    }
    Ok(real)
}

fn io_error<'a>(
    id: &'a str,
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> RuntimeError + 'a {
    move |source| RuntimeError::Io {
        kind: "container",
        id: id.to_string(),
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn errno<'a>(
    id: &'a str,
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(nix::errno::Errno) -> RuntimeError + 'a {
    move |e| io_error(id, op, path)(io::Error::from(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_stay_inside_the_image() {
        for (sub, ok) in [
            ("", true),
            ("etc", true),
            ("usr/share/doc", true),
            ("./data", true),
            ("/etc", false),
            ("../etc", false),
            ("data/../../x", false),
        ] {
            assert_eq!(sub_path(0, sub).is_ok(), ok, "{sub:?}");
        }
    }
}
