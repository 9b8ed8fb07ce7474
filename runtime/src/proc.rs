//! Identifying processes across PID reuse.

use std::fs;

/// A process identified by PID and kernel start time (clock ticks since boot, field 22
/// of `/proc/<pid>/stat`). A recycled PID has a different start time, so a stale
/// record can never make us signal or trust an unrelated process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcRef {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcRef {
    /// The process `pid` as it is now, if it exists.
    pub fn of(pid: i32) -> Option<ProcRef> {
        start_time(pid).map(|start_time| ProcRef { pid, start_time })
    }

    /// True while this very process exists and has not been reaped. A zombie counts as
    /// dead.
    pub fn is_alive(&self) -> bool {
        match stat_fields(self.pid) {
            Some((state, start)) => start == self.start_time && state != 'Z' && state != 'X',
            None => false,
        }
    }

    /// Waits until this process has exited (or `timeout` passed; returns whether it is
    /// gone). Woken by a pidfd, which becomes readable when the process exits, so a
    /// stop does not sleep past the moment it is done; polls only where pidfds are
    /// not available.
    #[allow(unsafe_code)]
    pub async fn wait_gone(&self, timeout: std::time::Duration) -> bool {
        if let Ok(fd) = pidfd_open(self.pid) {
            // Checked after the pidfd pins the PID: if it already names another
            // process (or a zombie), ours is gone.
            if !self.is_alive() {
                return true;
            }
            // SAFETY: `fd` is owned by the AsyncFd from here and registered nowhere else.
            let registered = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            };
            if let Ok(fd) = registered {
                let exited = tokio::time::timeout(timeout, fd.readable()).await;
                return matches!(exited, Ok(Ok(_))) || !self.is_alive();
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while self.is_alive() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        true
    }

    /// SIGKILLs the process if it is still this one. Returns whether a signal was sent.
    pub fn kill(&self) -> bool {
        self.is_alive()
            && nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
    }
}

/// Waits for `child` (a helper we spawned, waited for by its own pid) for at most
/// `timeout`; past that, kills and reaps it and returns `Ok(None)`. Polls, so the
/// caller's own reaping of other children is left alone.
pub fn wait_bounded(
    child: &mut std::process::Child,
    timeout: std::time::Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Start time of `pid`, from `/proc/<pid>/stat`.
pub fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid).map(|(_, start)| start)
}

fn stat_fields(pid: i32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and ')'; fields resume after the
    // last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    // `rest` starts at field 3 (state); start time is field 22.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// A pidfd for `pid` (pidfd_open(2)): readable once the process exits, and it keeps
/// naming that process (signals through it never reach a later owner of the PID).
#[allow(unsafe_code)]
pub(crate) fn pidfd_open(pid: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no
    // memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor the call above just made, owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// SIGKILL through a pidfd: reaches the process the pidfd was opened for, or none
/// (ESRCH once it has exited), never a process that got its PID later.
#[allow(unsafe_code)]
pub(crate) fn pidfd_kill(fd: &std::os::fd::OwnedFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_send_signal takes a descriptor, a signal number, a null siginfo
    // (the kernel fills in a plain kill's) and flags; no memory of ours is passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Blocks until every process behind `fds` has exited (each pidfd turns readable
/// then) or `timeout` passed; returns whether all did. For synchronous teardown
/// code: the caller is woken by the last exit instead of sleeping past it.
pub(crate) fn wait_pidfds(
    mut fds: Vec<std::os::fd::OwnedFd>,
    timeout: std::time::Duration,
) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let deadline = std::time::Instant::now() + timeout;
    while !fds.is_empty() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        let ms = PollTimeout::try_from(left.as_millis().clamp(1, 60_000) as i32)
            .unwrap_or(PollTimeout::MAX);
        let mut polled: Vec<PollFd<'_>> = fds
            .iter()
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut polled, ms) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
        let exited: Vec<bool> = polled
            .iter()
            .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(polled);
        let mut i = 0;
        fds.retain(|_| {
            i += 1;
            !exited[i - 1]
        });
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidfd_kill_and_wait_see_a_child_exit() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let fd = pidfd_open(child.id() as i32).unwrap();
        let again = fd.try_clone().unwrap();
        assert!(
            !wait_pidfds(
                vec![fd.try_clone().unwrap()],
                std::time::Duration::from_millis(20)
            ),
            "a sleeping child has not exited"
        );
        pidfd_kill(&fd).unwrap();
        assert!(wait_pidfds(
            vec![fd, again],
            std::time::Duration::from_secs(30)
        ));
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = ProcRef::of(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        assert!(me.start_time > 0);
        let impostor = ProcRef {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(
            !impostor.is_alive(),
            "a recycled PID must not count as alive"
        );
        assert!(!impostor.kill(), "and must never be signalled");
    }

    #[test]
    fn exited_process_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let r = ProcRef::of(child.id() as i32);
        child.wait().unwrap();
        if let Some(r) = r {
            assert!(!r.is_alive());
        }
        assert!(ProcRef::of(i32::MAX).is_none());
    }
}
