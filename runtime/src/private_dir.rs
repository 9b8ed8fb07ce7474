//! Directories only their owner (root) may enter, whatever the umask and whatever an
//! older crustd or an operator left there.
//!
//! Used for everything other local users must not reach: containers' writable layers
//! (setuid binaries and device nodes a container made, CVE-2021-41091), pod records,
//! monitor sockets (a directory others can write would let them put their own socket at
//! a pod's path before the monitor binds it).

use std::{
    fs,
    io::{self, ErrorKind},
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::Path,
};

/// Mode of the directories only root may enter.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Makes `dir` a directory only its owner can enter: created 0700 (its missing parents
/// as `create_dir_all` makes them), or an existing one set to 0700. The mode is set
/// explicitly, since mkdir's mode is filtered by the umask and an existing directory
/// keeps whatever mode it had. A symlink or non-directory at `dir` is refused, not
/// followed: making its target private is not what the caller asked. Idempotent.
///
/// ```
/// use std::os::unix::fs::PermissionsExt;
/// let tmp = tempfile::tempdir().unwrap();
/// let dir = tmp.path().join("a/private");
/// crust_runtime::ensure_private_dir(&dir).unwrap();
/// let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
/// assert_eq!(mode, 0o700);
/// ```
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent()
        && !parent.as_os_str().is_empty()
    {
        fs::create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            ErrorKind::NotADirectory,
            "exists and is not a directory",
        ));
    }
    if meta.mode() & 0o7777 != PRIVATE_DIR_MODE {
        fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR_MODE))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn private_whatever_it_was() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("a/sock");
        ensure_private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700, "created with its parent");
        for loose in [0o1777, 0o755, 0o711, 0o000] {
            fs::set_permissions(&fresh, fs::Permissions::from_mode(loose)).unwrap();
            ensure_private_dir(&fresh).unwrap();
            assert_eq!(mode(&fresh), 0o700, "was {loose:o}, then fixed");
        }
    }

    #[test]
    fn a_symlink_or_file_is_refused_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        fs::create_dir(&target).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(ensure_private_dir(&link).is_err(), "a symlink is refused");
        assert_eq!(mode(&target), 0o755, "its target is left alone");
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(ensure_private_dir(&file).is_err(), "a file is refused");
    }
}
