//! Descriptors a process holds without meaning to pass them on.
//!
//! A descriptor without close-on-exec survives every exec. One that crustd inherited
//! from whatever started it (`exec 7</etc` in a shell, a leaky init system or
//! supervisor), or that a helper opened without `O_CLOEXEC`, would otherwise travel
//! through the monitor into containers and execs, where `fchdir`, `openat` or
//! `/proc/self/fd/N/..` on a host directory walks the host's filesystem from inside the
//! container (CVE-2024-21626, runc's leaked cgroup fd). runc and crun close every fd
//! above the ones they pass before the container's exec; crust's launcher and exec
//! helper do the same. crustd also marks what it inherited close-on-exec as it
//! starts, and the monitor closes it, which covers every child they spawn (runc, CNI
//! plugins, exec helpers).
#![allow(unsafe_code)]

use std::{fs, os::fd::RawFd};

/// `close_range(2)` with `flags`, for every fd from `first` up. Linux 5.9 (5.11 for
/// `CLOSE_RANGE_CLOEXEC`).
fn close_range(first: RawFd, flags: libc::c_uint) -> std::io::Result<()> {
    // SAFETY: close_range takes integers only and touches no memory; callers own the
    // descriptors it closes or marks (they mean to drop everything from `first`).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Marks every descriptor from `first` up close-on-exec, so it stays usable here but
/// no exec'd program inherits it. Where the kernel lacks `CLOSE_RANGE_CLOEXEC`
/// (before 5.11), `fcntl` on each fd listed in `/proc/self/fd`, or on every number
/// below the fd limit where /proc is not mounted. Allocates: call it where that is
/// allowed, i.e. not between fork and exec of a threaded process.
pub fn mark_cloexec_from(first: RawFd) {
    if close_range(first, libc::CLOSE_RANGE_CLOEXEC).is_ok() {
        return;
    }
    let fds: Vec<RawFd> = match fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|fd| *fd >= first)
            .collect(),
        Err(_) => (first..fd_limit()).collect(),
    };
    for fd in fds {
        // SAFETY: fcntl on an integer fd; one that is not open (or closed meanwhile:
        // the directory's own) just fails with EBADF, which is ignored.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// One above the highest descriptor number this process may hold (the soft
/// RLIMIT_NOFILE, at most 2^20). Async-signal-safe.
fn fd_limit() -> RawFd {
    // SAFETY: getrlimit writes only into `limit`.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(1 << 20) as RawFd
        } else {
            1024
        }
    }
}

/// Closes every descriptor from `first` up: for a process that never execs (the pod
/// init) and must hold nothing. Async-signal-safe: `close_range`, or on kernels
/// before 5.9 a `close` of every number below the fd limit.
pub fn close_from(first: RawFd) {
    if close_range(first, 0).is_ok() {
        return;
    }
    for fd in first..fd_limit() {
        // SAFETY: close takes an integer; one that is not open fails with EBADF.
        unsafe { libc::close(fd) };
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    fn cloexec(fd: RawFd) -> bool {
        // SAFETY: F_GETFD on an integer fd.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert!(flags >= 0, "fd {fd} is open");
        flags & libc::FD_CLOEXEC != 0
    }

    #[test]
    fn marks_inherited_descriptors_close_on_exec() {
        // dup2 gives a copy without close-on-exec, like an inherited fd. A high number
        // keeps clear of the test harness's own descriptors.
        let file = fs::File::open("/").unwrap();
        let target = 900;
        // SAFETY: dup2 onto a number this test owns from here on.
        assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), target) }, target);
        assert!(!cloexec(target));
        mark_cloexec_from(target);
        assert!(cloexec(target), "fd {target} after mark_cloexec_from");
        close_from(target);
        // SAFETY: F_GETFD on an integer fd.
        assert_eq!(unsafe { libc::fcntl(target, libc::F_GETFD) }, -1, "closed");
    }
}
