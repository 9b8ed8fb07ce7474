//! A container's writable-layer directories, `<root>/containers/<id>/{upper,work,rootfs}`,
//! and who may reach them.
//!
//! `upper` holds everything the container wrote, setuid-root binaries and device nodes
//! included, with their real modes (overlayfs copies up as they are). Reachable from
//! the host by a local user, a setuid-root file there is a root shell for them
//! (CVE-2021-41091: moby's data dirs were traversable; containerd keeps its overlay
//! snapshots under a 0700 `snapshots/`). So `<root>/containers/` and `<id>/` are 0700,
//! set explicitly (the umask does not decide), also when they exist from before.
//! Nothing but root needs to walk them: both launchers mount and pivot into the rootfs
//! as root, and the container's own users see it only from inside.

use std::{
    fs,
    io::ErrorKind,
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use crate::ensure_private_dir;

/// What failed: the operation, the path and the error.
pub(crate) type DirError = (&'static str, PathBuf, std::io::Error);

/// [`ensure_private_dir`], its error in the shape the callers report.
fn private(dir: &Path) -> Result<(), DirError> {
    ensure_private_dir(dir).map_err(|e| ("make private", dir.to_path_buf(), e))
}

/// Makes `<containers_dir>/<dir>` private and creates `upper`, `work` and `rootfs` in
/// it. `top_layer` is the image's top-most layer directory, if it has layers.
///
/// overlayfs shows the upper directory's own owner and mode as the container's `/`,
/// so `upper` is 0755 (whatever the umask: 0700 would lock non-root container users
/// out of their root) and owned as the top layer's root, as containerd's overlay
/// snapshotter does.
pub(crate) fn make_writable_dirs(
    containers_dir: &Path,
    dir: &Path,
    top_layer: Option<&Path>,
) -> Result<(), DirError> {
    private(containers_dir)?;
    private(dir)?;
    for name in ["upper", "work", "rootfs"] {
        let path = dir.join(name);
        match fs::DirBuilder::new().mode(0o755).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(("create", path, e)),
        }
    }
    let upper = dir.join("upper");
    fs::set_permissions(&upper, fs::Permissions::from_mode(0o755))
        .map_err(|e| ("chmod", upper.clone(), e))?;
    if let Some(top) = top_layer {
        let meta = fs::metadata(top).map_err(|e| ("stat", top.to_path_buf(), e))?;
        std::os::unix::fs::lchown(&upper, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| ("chown", upper.clone(), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn dirs_are_private_whatever_existed_before() {
        let tmp = tempfile::tempdir().unwrap();
        let containers = tmp.path().join("containers");
        // Left by an older crustd: traversable by everyone.
        fs::create_dir(&containers).unwrap();
        fs::set_permissions(&containers, fs::Permissions::from_mode(0o755)).unwrap();
        let layer = tmp.path().join("layer");
        fs::create_dir(&layer).unwrap();
        let dir = containers.join("c1");
        make_writable_dirs(&containers, &dir, Some(&layer)).unwrap();
        let cases = [
            (containers.clone(), 0o700, "containers dir fixed"),
            (dir.clone(), 0o700, "container dir"),
            (dir.join("upper"), 0o755, "upper is the container's /"),
        ];
        for (path, want, what) in cases {
            assert_eq!(mode(&path), want, "{what}: {}", path.display());
        }
        assert!(dir.join("work").is_dir() && dir.join("rootfs").is_dir());
        // Idempotent.
        make_writable_dirs(&containers, &dir, None).unwrap();
    }

    #[test]
    fn a_symlink_is_not_made_private_in_place_of_a_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let link = tmp.path().join("containers");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let err = make_writable_dirs(&link, &link.join("c1"), None).unwrap_err();
        assert_eq!(err.1, link, "{err:?}");
    }
}
