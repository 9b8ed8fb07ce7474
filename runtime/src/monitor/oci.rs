//! Containers of `oci` runtime handlers: the same generated spec, run by an OCI runtime
//! binary (runc) instead of the built-in launcher.
//!
//! The monitor runs the runtime as a plain child (`std::process::Command`) and waits for
//! it synchronously, with a bound, before going back to its poll loop, so the loop's
//! generic `waitpid(-1)` reaper can never take the runtime's own exit status. The
//! runtime's `create` leaves the container's init (waiting on its exec FIFO) orphaned;
//! the monitor is a child subreaper, so the init becomes its child and its exit is
//! reaped and recorded like a built-in container's (matched by the `--pid-file` pid).
//!
//! Unlike the built-in launcher, which mounts the rootfs overlay inside the container's
//! own mount namespace, an OCI runtime expects `root.path` to be the rootfs already: the
//! overlay is mounted on the host side before `create` and unmounted by [`delete`].
#![allow(unsafe_code)]

use std::{
    fs::{self, File, OpenOptions},
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::net::UnixListener,
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use nix::{
    fcntl::OFlag,
    mount::{MntFlags, umount2},
    unistd::{Pid, pipe2},
};

use super::{OciRuntime, OverlayMount};

/// How long one runtime command may take; below crustd's own timeout for container
/// requests (30 s), so crustd always hears the outcome.
const RUNTIME_TIMEOUT: Duration = Duration::from_secs(20);

/// Initial terminal size, as the built-in launcher's.
const INITIAL_SIZE: (u16, u16) = (80, 24);

/// A container the runtime created; what remove needs to undo it.
pub(super) struct OciContainer {
    pub runtime: OciRuntime,
    pub id: String,
    pub bundle: PathBuf,
    /// The mounted overlay (`root.path`).
    pub rootfs: PathBuf,
    /// `delete` ran (runtime state gone, rootfs unmounted).
    pub deleted: bool,
}

/// The monitor's end of a created container.
pub(super) struct Created {
    pub pid: Pid,
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: Option<OwnedFd>,
}

/// Mounts the rootfs and runs `<runtime> create`. On failure everything made is undone.
pub(super) fn create(
    c: &OciContainer,
    overlay: Option<&OverlayMount>,
    stdin: bool,
    tty: bool,
) -> Result<Created, String> {
    on_mounted_rootfs(c, overlay, "create", || create_mounted(c, stdin, tty))
}

/// Mounts the rootfs, then runs `step` (`what` names it); if either fails, the runtime's
/// state and the mount are undone.
fn on_mounted_rootfs(
    c: &OciContainer,
    overlay: Option<&OverlayMount>,
    what: &str,
    step: impl FnOnce() -> Result<Created, String>,
) -> Result<Created, String> {
    if let Some(o) = overlay {
        o.mount_at(&c.rootfs)?;
    }
    step().inspect_err(|_| {
        let undo = OciContainer {
            runtime: c.runtime.clone(),
            id: c.id.clone(),
            bundle: c.bundle.clone(),
            rootfs: c.rootfs.clone(),
            deleted: false,
        };
        if let Err(more) = delete(&undo) {
            eprintln!("crust-monitor: undo failed {what} of {}: {more}", c.id);
        }
    })
}

fn create_mounted(c: &OciContainer, stdin: bool, tty: bool) -> Result<Created, String> {
    let pid_file = c.bundle.join("runtime.pid");
    let _ = fs::remove_file(&pid_file);
    let mut args: Vec<String> = vec![
        "create".into(),
        "--bundle".into(),
        c.bundle.display().to_string(),
        "--pid-file".into(),
        pid_file.display().to_string(),
    ];
    let mut cmd = c.runtime.command(&c.bundle, "create");
    let mut ours_in = None;
    let mut ours_out = None;
    let mut ours_err = None;
    let mut console = None;
    if tty {
        // The runtime makes the pty inside the container and sends us the master over
        // this socket (runc's --console-socket protocol: one SCM_RIGHTS message).
        // In the runtime's (short) state root: the bundle path is too long for a unix
        // socket address (108 bytes).
        fs::create_dir_all(&c.runtime.root)
            .map_err(|e| format!("create {}: {e}", c.runtime.root.display()))?;
        let short: String = c.id.chars().take(16).collect();
        let path = c.runtime.root.join(format!("console-{short}.sock"));
        let _ = fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).map_err(|e| format!("bind {}: {e}", path.display()))?;
        args.extend(["--console-socket".into(), path.display().to_string()]);
        console = Some((listener, path));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr_file(&c.bundle, "create")?);
    } else {
        // Without a terminal the runtime hands its own stdio to the container.
        let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        cmd.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
        if stdin {
            let (in_r, in_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
            cmd.stdin(Stdio::from(in_r));
            ours_in = Some(in_w);
        } else {
            cmd.stdin(Stdio::null());
        }
        ours_out = Some(out_r);
        ours_err = Some(err_r);
    }
    cmd.args(&args).arg(&c.id);
    let status = run_bounded(cmd, "create");
    if let Some((_, path)) = &console {
        // A connection the runtime made stays queued on the listener.
        let _ = fs::remove_file(path);
    }
    let status = status?;
    if !status.success() {
        return Err(format!(
            "{} create {}: {status}: {}",
            c.runtime.binary.display(),
            c.id,
            c.runtime.errors(&c.bundle, "create")
        ));
    }
    let pid = fs::read_to_string(&pid_file)
        .map_err(|e| format!("read {}: {e}", pid_file.display()))?
        .trim()
        .parse::<i32>()
        .map_err(|e| format!("pid file {}: {e}", pid_file.display()))?;
    let pid = Pid::from_raw(pid);
    match console {
        None => Ok(Created {
            pid,
            stdin: ours_in,
            stdout: ours_out.expect("pipes made"),
            stderr: ours_err,
        }),
        Some((listener, _)) => {
            // The runtime connected and sent before it exited; both are queued.
            listener
                .set_nonblocking(true)
                .map_err(|e| format!("console socket: {e}"))?;
            let (conn, _) = listener
                .accept()
                .map_err(|e| format!("the runtime sent no console (accept: {e})"))?;
            let master = super::launch::receive_fd(&conn)
                .map_err(|e| format!("receive the container's pty master: {e}"))?;
            let size = libc::winsize {
                ws_col: INITIAL_SIZE.0,
                ws_row: INITIAL_SIZE.1,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: `master` is an open pty master; TIOCSWINSZ reads a winsize from
            // the valid pointer.
            unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
            let input = if stdin {
                Some(
                    master
                        .try_clone()
                        .map_err(|e| format!("dup pty master: {e}"))?,
                )
            } else {
                None
            };
            Ok(Created {
                pid,
                stdin: input,
                stdout: master,
                stderr: None,
            })
        }
    }
}

/// Mounts the rootfs and runs `<runtime> restore --detach` from CRIU's images in
/// `images`: the checkpointed processes come back running as children of the
/// runtime's CRIU and are reparented to the monitor (a child subreaper) when those
/// exit. Their stdio: runc hands CRIU its own stdin/stdout/stderr in place of the
/// pipes the image's `descriptors.json` names, so the new pipes made here carry the
/// restored process's output to this container's log. On failure everything made is
/// undone (runtime state, rootfs mount).
pub(super) fn restore(
    c: &OciContainer,
    overlay: Option<&OverlayMount>,
    images: &super::RestoreImages,
    stdin: bool,
) -> Result<Created, String> {
    on_mounted_rootfs(c, overlay, "restore", || restore_mounted(c, images, stdin))
}

fn restore_mounted(
    c: &OciContainer,
    images: &super::RestoreImages,
    stdin: bool,
) -> Result<Created, String> {
    let pid_file = c.bundle.join("runtime.pid");
    let _ = fs::remove_file(&pid_file);
    fs::create_dir_all(&images.work)
        .map_err(|e| format!("create {}: {e}", images.work.display()))?;
    let mut cmd = c.runtime.command(&c.bundle, "restore");
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    cmd.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
    let mut ours_in = None;
    if stdin {
        let (in_r, in_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        cmd.stdin(Stdio::from(in_r));
        ours_in = Some(in_w);
    } else {
        cmd.stdin(Stdio::null());
    }
    cmd.arg("restore")
        .arg("--detach")
        .arg("--bundle")
        .arg(&c.bundle)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--image-path")
        .arg(&images.images)
        .arg("--work-path")
        .arg(&images.work)
        .arg(&c.id);
    let status = run_bounded(cmd, "restore")?;
    if !status.success() {
        // runc's own log says little ("criu failed: type RESTORE errno 0"); CRIU's
        // restore.log says what it could not restore.
        let log = fs::read_to_string(images.work.join("restore.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        return Err(format!(
            "{} restore {}: {status}: {}{}{}",
            c.runtime.binary.display(),
            c.id,
            c.runtime.errors(&c.bundle, "restore"),
            if tail.is_empty() {
                ""
            } else {
                "; CRIU's restore.log ends:\n"
            },
            tail
        ));
    }
    let pid = fs::read_to_string(&pid_file)
        .map_err(|e| format!("read {}: {e}", pid_file.display()))?
        .trim()
        .parse::<i32>()
        .map_err(|e| format!("pid file {}: {e}", pid_file.display()))?;
    Ok(Created {
        pid: Pid::from_raw(pid),
        stdin: ours_in,
        stdout: out_r,
        stderr: Some(err_r),
    })
}

/// `<runtime> start`: the container's init execs the process.
pub(super) fn start(c: &OciContainer) -> Result<(), String> {
    let mut cmd = c.runtime.command(&c.bundle, "start");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file(&c.bundle, "start")?)
        .arg("start")
        .arg(&c.id);
    let status = run_bounded(cmd, "start")?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} start {}: {status}: {}",
            c.runtime.binary.display(),
            c.id,
            c.runtime.errors(&c.bundle, "start")
        ))
    }
}

/// `<runtime> delete --force`, then unmounts the rootfs. Idempotent: a container the
/// runtime does not know and a rootfs not mounted are fine.
pub(super) fn delete(c: &OciContainer) -> Result<(), String> {
    let mut errors = Vec::new();
    let stderr = stderr_file(&c.bundle, "delete");
    let mut cmd = c.runtime.command(&c.bundle, "delete");
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    if let Ok(file) = stderr {
        cmd.stderr(file);
    }
    cmd.args(["delete", "--force"]).arg(&c.id);
    match run_bounded(cmd, "delete") {
        Ok(status) if status.success() => {}
        Ok(status) => {
            let text = c.runtime.errors(&c.bundle, "delete");
            // runc: "container does not exist"; crun: "No such file or directory".
            if !(text.contains("does not exist") || text.contains("No such file")) {
                errors.push(format!("delete: {status}: {text}"));
            }
        }
        Err(e) => errors.push(e),
    }
    match umount2(&c.rootfs, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => errors.push(format!("unmount {}: {e}", c.rootfs.display())),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

impl OciRuntime {
    /// `<binary> --root R --log <bundle>/<op>.log --log-format json` (fresh log per op).
    fn command(&self, bundle: &Path, op: &str) -> Command {
        let log = bundle.join(format!("{op}.log"));
        let _ = fs::remove_file(&log);
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&log)
            .args(["--log-format", "json"]);
        cmd
    }

    /// What the runtime said went wrong in `op`: the error entries of its JSON log,
    /// else its stderr.
    fn errors(&self, bundle: &Path, op: &str) -> String {
        let log = fs::read_to_string(bundle.join(format!("{op}.log"))).unwrap_or_default();
        let mut messages: Vec<String> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| matches!(v["level"].as_str(), Some("error" | "fatal")))
            .filter_map(|v| v["msg"].as_str().map(str::to_string))
            .collect();
        messages.dedup();
        if messages.is_empty() {
            let stderr =
                fs::read_to_string(bundle.join(format!("{op}.stderr"))).unwrap_or_default();
            let text = if stderr.trim().is_empty() {
                log
            } else {
                stderr
            };
            return text.trim().chars().take(2000).collect();
        }
        messages.join("; ")
    }
}

fn stderr_file(bundle: &Path, op: &str) -> Result<File, String> {
    let path = bundle.join(format!("{op}.stderr"));
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| format!("create {}: {e}", path.display()))
}

/// Spawns the runtime and waits for it by its pid (never through the generic reaper),
/// killing it after [`RUNTIME_TIMEOUT`].
fn run_bounded(mut cmd: Command, op: &str) -> Result<ExitStatus, String> {
    let mut child = super::pidns::with_children_in(super::pidns::ChildPidNs::Own, || cmd.spawn())
        .map_err(|e| format!("run {:?} {op}: {e}", cmd.get_program()))?;
    // The child's copies of our pipe ends must not stay open in the parent.
    drop(cmd);
    wait_bounded(&mut child, op)
}

fn wait_bounded(child: &mut Child, op: &str) -> Result<ExitStatus, String> {
    match crate::proc::wait_bounded(child, RUNTIME_TIMEOUT) {
        Ok(Some(status)) => Ok(status),
        Ok(None) => Err(format!(
            "runtime {op} did not finish within {} s (killed)",
            RUNTIME_TIMEOUT.as_secs()
        )),
        Err(e) => Err(format!("wait for runtime {op}: {e}")),
    }
}
