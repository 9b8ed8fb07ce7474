//! Exec (streaming): an interactive command in a running container, with stdin, output
//! streams and, for a tty, a pty whose size the client controls.
//!
//! As for ExecSync, crustd starts `crust-monitor exec` in a cgroup of its own below the
//! container's. With a tty, the pty comes from the container's own devpts, as runc's
//! console socket does it: the helper's stdin is one end of a socket pair, the command's
//! process opens the container's `/dev/ptmx` and sends the master back over it (so `tty`
//! inside prints `/dev/pts/N`); crustd keeps the master. The helper's stderr (its own
//! errors from before the terminal existed) joins the session's output. When the
//! command exits, or the session is dropped (the client went away), the exec cgroup is
//! killed: nothing the command started outlives the session.
#![allow(unsafe_code)]

use std::{
    fs::File,
    io::{ErrorKind, Read, Write},
    os::fd::{AsRawFd, OwnedFd},
    process::Stdio,
    sync::Arc,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt, unix::AsyncFd},
    sync::{mpsc, oneshot},
};

use super::{OUTPUT_QUEUE, StdioEnd, StdioOutput, StdioRequest, StdioSession, TerminalSize};
use crate::{error::RuntimeError, sandbox::SandboxManager};

const CHUNK: usize = 32 * 1024;

impl SandboxManager {
    /// Starts `command` in the running container `id` and returns the live session.
    /// `req.tty` gives the command a pty (its stderr is then the terminal too, so
    /// `req.stderr` must be false, as kubelet requires).
    pub async fn exec_session(
        &self,
        id: &str,
        command: &[String],
        req: StdioRequest,
    ) -> Result<StdioSession, RuntimeError> {
        if req.tty && req.stderr {
            return Err(RuntimeError::InvalidArgument {
                field: "stderr",
                reason: "tty and stderr cannot both be true: a terminal merges stderr into stdout"
                    .into(),
            });
        }
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(RuntimeError::InvalidArgument {
                field: "stdin",
                reason: "one of stdin, stdout and stderr must be true".into(),
            });
        }
        let (id, exec_cgroup, mut cmd) = self.exec_command(id, command, req.tty)?;
        let mut console = None;
        if req.tty {
            let (ours, theirs) =
                std::os::unix::net::UnixStream::pair().map_err(|e| RuntimeError::Launch {
                    id: id.clone(),
                    message: format!("console socket: {e}"),
                })?;
            cmd.stdin(Stdio::from(OwnedFd::from(theirs)))
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            console = Some(ours);
        } else {
            cmd.stdin(if req.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(if req.stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(if req.stderr {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        }
        cmd.kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let doomed = exec_cgroup.clone();
                let _ = self.cgroup_blocking(move |c| c.remove(&doomed)).await;
                return Err(RuntimeError::Io {
                    kind: "container",
                    id,
                    op: "start exec helper",
                    path: self.config.monitor_bin.clone(),
                    source: e,
                });
            }
        };
        // Our copy of the helper's end of the console socket would hide the helper's
        // exit (EOF) from `receive_master`.
        drop(cmd);
        let pty_master = match console {
            None => None,
            Some(sock) => match receive_master(sock).await {
                Ok(master) => Some(master),
                Err(e) => {
                    // The helper failed before the terminal existed; its stderr says why.
                    let _ = child.kill().await;
                    let mut why = String::new();
                    if let Some(mut err) = child.stderr.take() {
                        let _ = err.read_to_string(&mut why).await;
                    }
                    let (c, doomed) = (self.cgroups()?.clone(), exec_cgroup.clone());
                    let _ = tokio::task::spawn_blocking(move || {
                        let _ = c.kill_all(&doomed);
                        c.remove(&doomed)
                    })
                    .await;
                    return Err(RuntimeError::Launch {
                        id,
                        message: format!(
                            "receive the exec's pty master: {e}{}{}",
                            if why.trim().is_empty() { "" } else { ": " },
                            why.trim()
                        ),
                    });
                }
            },
        };

        let (out_tx, output) = mpsc::channel(OUTPUT_QUEUE);
        let (end_tx, end) = oneshot::channel();
        let (cancel_tx, cancel_rx) = oneshot::channel::<()>();
        let mut session = StdioSession {
            stdin: None,
            resize: None,
            output,
            end,
            guard: Some(Box::new(cancel_tx)),
        };
        let mut pumps = Vec::new();
        if let Some(master) = pty_master {
            let master = Arc::new(nonblocking(master).map_err(|e| RuntimeError::Launch {
                id: id.clone(),
                message: format!("pty: {e}"),
            })?);
            if req.stdin {
                let (tx, rx) = mpsc::channel(OUTPUT_QUEUE);
                session.stdin = Some(tx);
                tokio::spawn(pty_input(master.clone(), rx));
            }
            let (tx, mut rx) = mpsc::channel::<TerminalSize>(4);
            session.resize = Some(tx);
            let m = master.clone();
            tokio::spawn(async move {
                while let Some(size) = rx.recv().await {
                    set_size(m.get_ref(), size);
                }
            });
            pumps.push(tokio::spawn(pty_output(master, out_tx.clone())));
            if let Some(err) = child.stderr.take() {
                pumps.push(tokio::spawn(pipe_output(err, out_tx.clone(), false)));
            }
        } else {
            if let Some(mut stdin) = child.stdin.take() {
                let (tx, mut rx) = mpsc::channel::<Vec<u8>>(OUTPUT_QUEUE);
                session.stdin = Some(tx);
                tokio::spawn(async move {
                    while let Some(data) = rx.recv().await {
                        if stdin.write_all(&data).await.is_err() {
                            return;
                        }
                    }
                    // Sender dropped: the client closed stdin; dropping ours is EOF.
                });
            }
            if let Some(out) = child.stdout.take() {
                pumps.push(tokio::spawn(pipe_output(out, out_tx.clone(), false)));
            }
            if let Some(err) = child.stderr.take() {
                pumps.push(tokio::spawn(pipe_output(err, out_tx.clone(), true)));
            }
        }
        drop(out_tx);

        let cgroups = self.cgroups()?.clone();
        tokio::spawn(async move {
            let end = tokio::select! {
                status = child.wait() => match status {
                    Ok(status) => StdioEnd::Exited(exit_code(status)),
                    Err(e) => StdioEnd::Closed(format!("wait for exec: {e}")),
                },
                _ = cancel_rx => StdioEnd::Closed("the client went away".into()),
            };
            // The command is over (or abandoned): whatever it left behind dies now, which
            // also closes pipes and the pty a lingering child held, so the pumps finish.
            let (c, doomed) = (cgroups.clone(), exec_cgroup.clone());
            let _ = tokio::task::spawn_blocking(move || c.kill_all(&doomed)).await;
            let _ = child.kill().await;
            for pump in pumps {
                let _ = pump.await;
            }
            let _ = tokio::task::spawn_blocking(move || cgroups.remove(&exec_cgroup)).await;
            let _ = end_tx.send(end);
        });
        Ok(session)
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

async fn pipe_output(
    mut pipe: impl AsyncRead + Unpin,
    tx: mpsc::Sender<StdioOutput>,
    stderr: bool,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let data = buf[..n].to_vec();
                let chunk = if stderr {
                    StdioOutput::Stderr(data)
                } else {
                    StdioOutput::Stdout(data)
                };
                // A closed receiver means nobody listens any more; keep draining so
                // the command is not blocked on a full pipe until it is killed.
                let _ = tx.send(chunk).await;
            }
        }
    }
}

fn nonblocking(fd: OwnedFd) -> std::io::Result<AsyncFd<File>> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = fcntl(&fd, FcntlArg::F_GETFL)?;
    fcntl(
        &fd,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )?;
    // SAFETY: the File owns the fd, so it stays open (and is not reused) for as long as
    // the registration lives, which is what `register` requires.
    unsafe { AsyncFd::register(File::from(fd)) }.map_err(|e| e.into_parts().1)
}

/// Copies the pty master's output to the session. EIO is how a master reports that
/// every slave fd is closed: the end of the output.
async fn pty_output(master: Arc<AsyncFd<File>>, tx: mpsc::Sender<StdioOutput>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let Ok(mut ready) = master.readable().await else {
            return;
        };
        match ready.try_io(|f| f.get_ref().read(&mut buf)) {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => {
                let _ = tx.send(StdioOutput::Stdout(buf[..n].to_vec())).await;
            }
            Err(_would_block) => continue,
        }
    }
}

async fn pty_input(master: Arc<AsyncFd<File>>, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(data) = rx.recv().await {
        let mut rest = &data[..];
        while !rest.is_empty() {
            let Ok(mut ready) = master.writable().await else {
                return;
            };
            match ready.try_io(|f| f.get_ref().write(rest)) {
                Ok(Ok(n)) => rest = &rest[n..],
                Ok(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
                Ok(Err(_)) => return,
                Err(_would_block) => {}
            }
        }
    }
    // The client closed stdin: a terminal has no EOF of its own, so send ^D (VEOF in
    // canonical mode), as `kubectl exec -i -t` users get from their own terminal.
    if let Ok(mut ready) = master.writable().await {
        let _ = ready.try_io(|f| f.get_ref().write(&[4]));
    }
}

/// The pty master the helper's command sends over the console socket (see
/// `monitor::exec`). EOF, when the helper exits without sending one, ends the wait.
async fn receive_master(sock: std::os::unix::net::UnixStream) -> std::io::Result<OwnedFd> {
    sock.set_nonblocking(true)?;
    let sock = tokio::net::UnixStream::from_std(sock)?;
    loop {
        sock.readable().await?;
        match sock.try_io(tokio::io::Interest::READABLE, || {
            crate::monitor::launch::receive_fd(&sock)
        }) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

fn set_size(master: &impl AsRawFd, size: TerminalSize) {
    let ws = nix::pty::Winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one Winsize from the pointer, which is valid for the call;
    // the fd is the open pty master.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}
