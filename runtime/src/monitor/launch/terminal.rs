//! The container's terminal: a pty from its own devpts instance, made in the child
//! and handed to the monitor over a socket (runc's console socket works the same way).

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::{
    fcntl::OFlag,
    sys::stat::Mode,
    unistd::{Uid, dup2_stderr, dup2_stdin, dup2_stdout},
};

/// Initial terminal size (CRI gives none at create; kubelet resizes on attach).
const INITIAL_SIZE: (u16, u16) = (80, 24);

/// In the child, after pivot_root (or, for an exec, after joining the container's
/// mount namespace): opens a pty from the container's `/dev/ptmx`, sends the master
/// over `console` (to the monitor, or to crustd for an exec), and makes the slave our
/// stdin, stdout, stderr and controlling terminal (of a new session, as a login would).
pub(in crate::monitor) fn setup_terminal(console: RawFd, uid: u32) -> Result<(), String> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let master = nix::fcntl::open(
        "/dev/ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open /dev/ptmx: {e}"))?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the valid pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(format!("unlock pty: {}", nix::Error::last()));
    }
    let size = libc::winsize {
        ws_col: INITIAL_SIZE.0,
        ws_row: INITIAL_SIZE.1,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from the valid pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        return Err(format!("set terminal size: {}", nix::Error::last()));
    }
    // TIOCGPTPEER opens the slave from the master itself: no path lookup in a
    // container-controlled /dev/pts.
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new fd or -1.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY,
        )
    };
    if slave < 0 {
        return Err(format!("open pty slave: {}", nix::Error::last()));
    }
    // SAFETY: the fd was just returned to us and is owned by nobody else.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    // The process may run as another user; the terminal is its to use (as login does).
    let _ = nix::unistd::fchown(&slave, Some(Uid::from_raw(uid)), None);
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        console,
        &[std::io::IoSlice::new(b"M")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("send pty master: {e}"))?;
    drop(master);
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    // SAFETY: TIOCSCTTY takes an int argument by value (0: do not steal).
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(format!("set controlling terminal: {}", nix::Error::last()));
    }
    dup2_stdin(&slave).map_err(|e| format!("stdin: {e}"))?;
    dup2_stdout(&slave).map_err(|e| format!("stdout: {e}"))?;
    dup2_stderr(&slave).map_err(|e| format!("stderr: {e}"))?;
    Ok(())
}

/// Receives the fd the child sent with [`setup_terminal`]. Does not wait
/// (`MSG_DONTWAIT`: `WouldBlock` when nothing is queued yet); `UnexpectedEof` when the
/// sender closed its end without sending one.
pub(crate) fn receive_fd(sock: impl AsFd) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let bytes = msg.bytes;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just installed this fd in our table for us.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Err(if bytes == 0 {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the sender closed the socket without sending a pty",
        )
    } else {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "no fd in the message")
    })
}
