//! Where an `oci` handler's container in a pod user namespace gets its rootfs mounted:
//! `<state>/userns-rootfs/<id>/rootfs`, a path the pod's mapped root can walk.
//!
//! runc joins the pod's user namespace first (nsexec) and then bind-mounts and
//! pivots into `root.path` as that namespace's root, an unprivileged host uid without
//! CAP_DAC_OVERRIDE over host-root-owned directories. crust's own container
//! directories (`<root>/containers`, `<id>`) stay 0700: `upper` holds the container's
//! setuid binaries and device nodes (CVE-2021-41091). So, as containerd does for the
//! bundle of a container with a user namespace (0710, group the remapped root's),
//! the mount point gets a directory of its own:
//! - `<state>/userns-rootfs/` is 0711: anyone may traverse, nobody but root may list;
//! - `<id>/` is 0710, owner root, group the mapped root's host gid: only root and
//!   that gid (the pod's own processes) may enter;
//! - `rootfs` is the mount point of the overlay.
//!
//! A local user outside the pod stops at `<id>/`, as at `<root>/containers`. The
//! pod's own processes (host gid = the mapped root's) may reach their rootfs through
//! it; they can already see it from inside, and its image files are theirs through
//! the idmapped layers (a setuid-root file there is setuid to the mapped root). The
//! directories above `<state>` must be traversable for that gid, as `/run` is:
//! checked here, so a 0700 parent is a clear FAILED_PRECONDITION, not runc's EACCES.

use std::{
    fs,
    io::ErrorKind,
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

/// What failed: the operation, the path and the error.
pub(crate) type DirError = (&'static str, PathBuf, std::io::Error);

/// Why the mapped root cannot have its rootfs.
#[derive(Debug)]
pub(crate) enum RootfsError {
    Io(DirError),
    /// `path` (mode `mode`) cannot be searched by host uid/gid `ids`.
    NotTraversable {
        path: PathBuf,
        mode: u32,
        ids: (u32, u32),
    },
}

/// `<state_dir>/userns-rootfs/<id>`: the container's own directory there.
pub(crate) fn dir(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("userns-rootfs").join(id)
}

/// Whether `(uid, gid)` (no capabilities, no supplementary groups) may search a
/// directory with `meta`'s owner and mode.
fn searchable(meta: &fs::Metadata, (uid, gid): (u32, u32)) -> bool {
    let mode = meta.mode();
    if meta.uid() == uid {
        mode & 0o100 != 0
    } else if meta.gid() == gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// Makes `<state_dir>/userns-rootfs/<id>/rootfs` for a container whose root is host
/// `root` (uid, gid) and returns it. Checks every directory above is searchable by
/// that root first.
pub(crate) fn prepare(
    state_dir: &Path,
    id: &str,
    root: (u32, u32),
) -> Result<PathBuf, RootfsError> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |e| RootfsError::Io((op, path, e))
    };
    let parent = state_dir.join("userns-rootfs");
    fs::create_dir_all(&parent).map_err(io("create", &parent))?;
    let meta = fs::symlink_metadata(&parent).map_err(io("stat", &parent))?;
    if !meta.is_dir() {
        return Err(RootfsError::Io((
            "create",
            parent,
            std::io::Error::new(ErrorKind::NotADirectory, "exists and is not a directory"),
        )));
    }
    if meta.mode() & 0o7777 != 0o711 {
        fs::set_permissions(&parent, fs::Permissions::from_mode(0o711))
            .map_err(io("chmod", &parent))?;
    }
    for dir in parent.ancestors() {
        let meta = fs::metadata(dir).map_err(io("stat", dir))?;
        if !searchable(&meta, root) {
            return Err(RootfsError::NotTraversable {
                path: dir.to_path_buf(),
                mode: meta.mode() & 0o7777,
                ids: root,
            });
        }
    }
    let own = parent.join(id);
    match fs::DirBuilder::new().mode(0o700).create(&own) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(RootfsError::Io(("create", own, e))),
    }
    std::os::unix::fs::lchown(&own, Some(0), Some(root.1)).map_err(io("chown", &own))?;
    fs::set_permissions(&own, fs::Permissions::from_mode(0o710)).map_err(io("chmod", &own))?;
    let rootfs = own.join("rootfs");
    match fs::DirBuilder::new().mode(0o755).create(&rootfs) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(RootfsError::Io(("create", rootfs, e))),
    }
    Ok(rootfs)
}

/// Unmounts and removes the container's directory, if it has one. Idempotent; the
/// errors are the teardown's.
pub(crate) fn remove(state_dir: &Path, id: &str) -> Vec<String> {
    let own = dir(state_dir, id);
    let mut errors = Vec::new();
    let rootfs = own.join("rootfs");
    match nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => errors.push(format!("unmount {}: {e}", rootfs.display())),
    }
    match fs::remove_dir_all(&own) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => errors.push(format!("remove {}: {e}", own.display())),
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn the_mapped_root_gets_a_directory_of_its_own() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o711)).unwrap();
        let root = (100_000, 100_000);
        let rootfs = prepare(tmp.path(), "c1", root).unwrap();
        assert_eq!(rootfs, dir(tmp.path(), "c1").join("rootfs"));
        let own = dir(tmp.path(), "c1");
        let cases = [
            (
                tmp.path().join("userns-rootfs"),
                0o711,
                "traverse-only parent",
            ),
            (own.clone(), 0o710, "the container's directory"),
        ];
        for (path, want, what) in cases {
            assert_eq!(mode(&path), want, "{what}: {}", path.display());
        }
        assert_eq!(
            fs::metadata(&own).unwrap().gid(),
            100_000,
            "group: the mapped root's"
        );
        assert_eq!(fs::metadata(&own).unwrap().uid(), 0, "owner: root");
        // Idempotent.
        prepare(tmp.path(), "c1", root).unwrap();
        assert!(remove(tmp.path(), "c1").is_empty());
        assert!(!own.exists(), "removed");
        assert!(remove(tmp.path(), "c1").is_empty(), "removal is idempotent");
    }

    #[test]
    fn a_parent_the_mapped_root_cannot_search_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        fs::create_dir(&state).unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o700)).unwrap();
        match prepare(&state, "c1", (100_000, 100_000)) {
            Err(RootfsError::NotTraversable { path, mode, .. }) => {
                assert_eq!(path, tmp.path(), "the 0700 parent");
                assert_eq!(mode, 0o700);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn search_permission_follows_owner_group_other() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        fs::create_dir(&d).unwrap();
        std::os::unix::fs::lchown(&d, Some(7), Some(8)).unwrap();
        let cases = [
            (0o700, (7, 1), true, "owner x"),
            (
                0o070,
                (7, 8),
                false,
                "owner without x, group's not consulted",
            ),
            (0o710, (1, 8), true, "group x"),
            (
                0o701,
                (1, 8),
                false,
                "group without x, other's not consulted",
            ),
            (0o711, (1, 1), true, "other x"),
            (0o770, (1, 1), false, "other without x"),
        ];
        for (m, ids, want, what) in cases {
            fs::set_permissions(&d, fs::Permissions::from_mode(m)).unwrap();
            assert_eq!(searchable(&fs::metadata(&d).unwrap(), ids), want, "{what}");
        }
    }
}
