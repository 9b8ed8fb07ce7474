//! Crash-safe file replacement.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

/// Prefix of the temporary files [`write_atomic`] creates. A file with this prefix that
/// is still present after a crash was never renamed into place, so it is garbage.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `dir/name` with `bytes` so that a crash at any point leaves either the old
/// content or the new one: write a uniquely named temp file in the same directory,
/// fsync it, rename it over the target, then fsync the directory so the rename itself is
/// durable. The file is created with mode 0600.
///
/// Concurrent writers of the same name do not corrupt it (each has its own temp file;
/// the last rename wins); callers that need ordering serialize per object.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    rename_into_place(dir, name, bytes, true)
}

/// A uniquely named temp file with `bytes` (fsync'd when `durable`), renamed over
/// `dir/name` (and the directory fsync'd when `durable`).
fn rename_into_place(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> io::Result<()> {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{TEMP_PREFIX}{name}-{}-{n}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        drop(file);
        fs::rename(&tmp, dir.join(name))?;
        if durable {
            fsync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        // Best effort: the temp file is garbage whether or not the rename happened.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Replaces `dir/name` with `bytes` atomically but not durably: a uniquely named temp
/// file renamed over the target, with no fsync. Any process (a restarted crustd
/// included) sees either the old content or the new, because a crash of a *process*
/// leaves the page cache intact; a power loss may lose the change. For files under a
/// volatile root (`/run`: they do not outlive a reboot anyway) and for caches whose
/// loss their readers tolerate. Also the first half of [`Store::put_visible`]; the
/// durable second half is [`sync_replaced`].
///
/// [`Store::put_visible`]: crate::Store::put_visible
pub fn replace_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    rename_into_place(dir, name, bytes, false)
}

/// Makes a [`replace_atomic`] of `dir/name` durable: fsyncs the file's data, then the
/// directory (the rename). Afterwards it survives a power loss like [`write_atomic`]'s.
pub fn sync_replaced(dir: &Path, name: &str) -> io::Result<()> {
    File::open(dir.join(name))?.sync_all()?;
    fsync_dir(dir)
}

/// Makes a directory's entries (creations, renames, unlinks) durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "a.json", b"one").unwrap();
        write_atomic(dir.path(), "a.json", b"two").unwrap();
        assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["a.json"], "only the target should remain");
    }

    #[test]
    fn failure_keeps_old_content_and_removes_temp() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "a.json", b"old").unwrap();
        // Renaming a file over a non-empty directory fails: the old file must survive.
        fs::create_dir(dir.path().join("b.json")).unwrap();
        fs::write(dir.path().join("b.json/x"), b"").unwrap();
        assert!(write_atomic(dir.path(), "b.json", b"new").is_err());
        assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"old");
        let temps = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(TEMP_PREFIX)
            })
            .count();
        assert_eq!(temps, 0, "temp file must be removed after a failed write");
    }

    #[test]
    fn replace_then_sync_leaves_only_the_new_content() {
        let dir = tempfile::tempdir().unwrap();
        replace_atomic(dir.path(), "a.json", b"one").unwrap();
        replace_atomic(dir.path(), "a.json", b"two").unwrap();
        sync_replaced(dir.path(), "a.json").unwrap();
        assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["a.json"], "only the target should remain");
        assert!(
            sync_replaced(dir.path(), "missing.json").is_err(),
            "syncing a file that was never written must fail"
        );
    }

    #[test]
    fn file_mode_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "a.json", b"x").unwrap();
        let mode = fs::metadata(dir.path().join("a.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
