//! Finding and measuring processes by PID through /proc.

use std::{fs, path::Path};

/// `Rss:` and `Pss:` of `pid` from `/proc/<pid>/smaps_rollup`, KiB (0 if gone).
pub fn smaps_rollup(pid: i32) -> (u64, u64) {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

/// The parent of `pid`, from `/proc/<pid>/stat`.
pub fn parent_pid(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = stat.rsplit_once(')')?.1;
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

/// The process listening on the unix socket at `path`: `SO_PEERCRED` of a connection
/// to it gives the PID that called `listen` (the path's name may have been renamed
/// into place, so `/proc/net/unix` need not show it).
pub fn socket_owner(path: &Path) -> Option<i32> {
    let stream = std::os::unix::net::UnixStream::connect(path).ok()?;
    let cred =
        nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials).ok()?;
    Some(cred.pid()).filter(|&p| p > 0)
}
