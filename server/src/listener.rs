//! The CRI unix socket: exclusive, owner-only, stale sockets replaced.

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::{
        fs::{OpenOptionsExt, PermissionsExt},
        net::UnixStream,
    },
    path::{Path, PathBuf},
};

use nix::{
    fcntl::{Flock, FlockArg},
    unistd::{Gid, chown},
};
use tokio::net::UnixListener;

/// Why the socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("create socket directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("open lock file {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("another crustd is serving {socket} (it holds {lock})")]
    InUse { socket: PathBuf, lock: PathBuf },
    #[error("a process is already accepting connections on {socket}")]
    Live { socket: PathBuf },
    #[error("remove stale socket {path}: {source}")]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("bind {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
}

/// Ownership of the socket path: the lock that makes it ours. Dropping it releases the
/// lock; [`SocketGuard::remove`] also unlinks the socket on clean shutdown.
pub struct SocketGuard {
    pub path: PathBuf,
    _lock: Flock<File>,
}

/// Binds the CRI socket at `path` with mode 0660 and group `gid`.
///
/// A lock file (`<path>.lock`, held with `flock` for the life of the process) decides
/// who owns the socket, so two daemons starting at once cannot both replace it. With
/// the lock held, a socket left at `path` is stale (its daemon crashed) and is
/// replaced, unless something still accepts on it (a process that does not use our
/// lock), which is refused rather than hijacked. The socket is bound under a temporary
/// name, given its mode, then renamed into place, so it is never reachable with the
/// umask's default permissions.
pub fn bind(path: &Path, gid: u32) -> Result<(UnixListener, SocketGuard), ListenError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|source| ListenError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let lock_path = with_suffix(path, ".lock");
    let lock_err = |source| ListenError::Lock {
        path: lock_path.clone(),
        source,
    };
    // 0600, also when an older crustd (or a loose umask) left it readable: anyone who
    // can open the lock can flock it and keep the next crustd from ever serving.
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&lock_path)
        .map_err(lock_err)?;
    lock_file
        .set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(lock_err)?;
    let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|_| {
        ListenError::InUse {
            socket: path.to_path_buf(),
            lock: lock_path.clone(),
        }
    })?;

    if fs::symlink_metadata(path).is_ok() {
        if UnixStream::connect(path).is_ok() {
            return Err(ListenError::Live {
                socket: path.to_path_buf(),
            });
        }
        tracing::warn!(socket = %path.display(), "replacing stale socket left by a previous crustd");
        fs::remove_file(path).map_err(|source| ListenError::RemoveStale {
            path: path.to_path_buf(),
            source,
        })?;
    }

    let tmp = with_suffix(path, &format!(".tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let bind_err = |source| ListenError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(&tmp).map_err(bind_err)?;
    let prepared = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o660))
        .and_then(|()| chown(&tmp, None, Some(Gid::from_raw(gid))).map_err(io::Error::from))
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(source) = prepared {
        let _ = fs::remove_file(&tmp);
        return Err(bind_err(source));
    }
    Ok((
        listener,
        SocketGuard {
            path: path.to_path_buf(),
            _lock: lock,
        },
    ))
}

impl SocketGuard {
    /// Unlinks the socket file (clean shutdown). The lock is released on drop.
    pub fn remove(&self) {
        if let Err(error) = fs::remove_file(&self.path)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(socket = %self.path.display(), %error, "cannot remove socket");
        }
    }
}

impl Drop for SocketGuard {
    /// A daemon that fails after binding (say, the metrics port is taken) must not leave
    /// its socket behind for clients to hang on.
    fn drop(&mut self) {
        self.remove();
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn mode_is_0660_and_second_bind_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/crust.sock");
        let first = bind(&path, nix::unistd::getgid().as_raw()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
        let err = bind(&path, 0).err().expect("second bind must fail");
        assert!(matches!(err, ListenError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("crust.sock"), "{err}");
        drop(first);
    }

    #[tokio::test]
    async fn lock_file_is_0600_also_when_left_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crust.sock");
        let lock = dir.path().join("crust.sock.lock");
        // Left by an older crustd: anyone could open it and hold its flock.
        fs::write(&lock, b"").unwrap();
        fs::set_permissions(&lock, fs::Permissions::from_mode(0o644)).unwrap();
        let _bound = bind(&path, 0).unwrap();
        let mode = fs::metadata(&lock).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o600, "{mode:o}");
    }

    #[tokio::test]
    async fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crust.sock");
        // A socket file nobody listens on: what a crashed daemon leaves behind.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let (_listener, socket) = bind(&path, 0).unwrap();
        assert!(UnixStream::connect(&path).is_ok(), "new socket must accept");
        socket.remove();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn live_socket_without_lock_is_not_hijacked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crust.sock");
        let _other = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = bind(&path, 0).err().expect("must refuse a live socket");
        assert!(matches!(err, ListenError::Live { .. }), "{err}");
        assert!(
            path.exists(),
            "the other process's socket must be left alone"
        );
    }
}
