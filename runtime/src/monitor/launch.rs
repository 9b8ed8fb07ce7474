//! The built-in launcher: turns an OCI runtime spec into a running container process.
//!
//! Runs inside the monitor, which is single-threaded: the cloned child is a full copy
//! of a process with no other threads and no held locks, so it may allocate and run
//! ordinary Rust until it execs. The child sets everything up, reports "ready" on the
//! status pipe, waits for the start byte, then execs; a failure at any point is written
//! to the status pipe (close-on-exec, so a successful exec reads as EOF).
#![allow(unsafe_code)]

use std::{
    ffi::CString,
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::fs::{OpenOptionsExt, symlink},
    },
    path::{Component, Path, PathBuf},
};

use nix::{
    fcntl::OFlag,
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns},
    sys::stat::Mode,
    unistd::{
        Gid, Pid, Uid, chdir, dup2_stderr, dup2_stdin, dup2_stdout, execvpe, pipe2, pivot_root,
        setgid, setgroups, setuid,
    },
};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// The monitor's end of a freshly created container.
pub struct Launched {
    pub pid: Pid,
    /// Write one byte to start the container.
    pub start: OwnedFd,
    /// Child's reports: `R` when set up, or an error text; EOF after a successful exec.
    pub status: OwnedFd,
    /// The container's stdin: a pipe's write end, or (with a terminal) a duplicate of
    /// the pty master. `None`: the container reads /dev/null.
    pub stdin: Option<OwnedFd>,
    /// Output: a pipe's read end, or the pty master (stderr is then `None`: a terminal
    /// has one output stream).
    pub stdout: OwnedFd,
    pub stderr: Option<OwnedFd>,
}

/// Where a container's writes go and where it lives.
pub struct LaunchConfig<'a> {
    pub spec: &'a Spec,
    /// Cgroup directories (one per hierarchy) the process is placed in before it runs.
    pub cgroup_dirs: &'a [PathBuf],
    /// The rootfs overlay to mount at `root.path` in the container's mount namespace.
    pub overlay: Option<&'a super::OverlayMount>,
    /// CRI `stdin`: the container reads from a pipe the monitor writes.
    pub stdin: bool,
    /// CRI `tty`: the container gets a terminal (stdin, stdout and stderr are its
    /// slave, and it is the controlling terminal of the container's session).
    pub tty: bool,
}

/// The container's side of its stdio, as raw fds made before the clone (the child only
/// dup2s them).
#[derive(Clone, Copy)]
struct ChildStdio {
    /// Read end of the stdin pipe; -1 for /dev/null.
    stdin: RawFd,
    out: RawFd,
    err: RawFd,
    /// With a terminal: the child's end of the socket it sends the pty master over
    /// (`out`/`err`/`stdin` are then unused).
    console: RawFd,
}

/// Initial terminal size (CRI gives none at create; kubelet resizes on attach).
const INITIAL_SIZE: (u16, u16) = (80, 24);

/// Clones the container process. It sets itself up in new PID (unless it joins the
/// pod's) and mount namespaces and then waits for [`Launched::start`].
pub fn create(cfg: &LaunchConfig<'_>) -> Result<Launched, String> {
    let (status_r, status_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (start_r, start_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let stdin_pipe = if cfg.stdin && !cfg.tty {
        Some(pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?)
    } else {
        None
    };
    // The pty is made by the child, from the container's own devpts instance (the
    // spec mounts /dev/pts with `newinstance`): a slave from the monitor's devpts
    // would not resolve inside the container (`tty` would say "not a tty"). runc's
    // console socket works the same way.
    let console = if cfg.tty {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        Some(
            socketpair(
                AddressFamily::Unix,
                SockType::Stream,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|e| format!("socketpair: {e}"))?,
        )
    } else {
        None
    };

    let namespaces = cfg
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let mut flags = CloneFlags::CLONE_NEWNS;
    let wants_new_pid = namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_none());
    if wants_new_pid {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    // The pod's, a TARGET container's, or (for a PID namespace of its own, or the
    // host's) the monitor's own: see `pidns`.
    let pid_path = namespaces
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Pid)
        .and_then(|n| n.path().as_deref());
    let born_in = match pid_path {
        Some(path) => super::pidns::ChildPidNs::At(path),
        None => super::pidns::ChildPidNs::Own,
    };
    let status_fd = status_w.as_raw_fd();
    let start_fd = start_r.as_raw_fd();
    let stdio = ChildStdio {
        stdin: stdin_pipe.as_ref().map_or(-1, |(r, _)| r.as_raw_fd()),
        out: out_w.as_raw_fd(),
        err: err_w.as_raw_fd(),
        console: console.as_ref().map_or(-1, |(_, child)| child.as_raw_fd()),
    };
    let mut stack = vec![0u8; 1 << 20];
    let spec = cfg.spec.clone();
    let overlay = cfg.overlay.cloned();
    let child = Box::new(move || -> isize {
        let mut status = unsafe_file(status_fd);
        match child_main(&spec, overlay.as_ref(), status_fd, start_fd, stdio) {
            Ok(never) => match never {},
            Err(e) => {
                let _ = status.write_all(format!("E{e}").as_bytes());
                127
            }
        }
    });
    // SAFETY: the monitor is single-threaded, so the child (which does not share our
    // memory: no CLONE_VM) is a consistent copy; the stack outlives the call because
    // the child gets its own copy of it on its first write.
    let pid = super::pidns::with_children_in(born_in, || {
        // SAFETY: as above.
        unsafe { nix::sched::clone(child, &mut stack, flags, Some(libc::SIGCHLD)) }
            .map_err(std::io::Error::from)
    })
    .map_err(|e| format!("clone container process: {e}"))?;
    drop((status_w, start_r, out_w, err_w));
    let stdin_w = stdin_pipe.map(|(r, w)| {
        drop(r);
        w
    });
    let console = console.map(|(ours, child)| {
        drop(child);
        ours
    });

    for dir in cfg.cgroup_dirs {
        let procs = dir.join("cgroup.procs");
        if let Err(e) = fs::write(&procs, pid.to_string()) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            return Err(format!("place container in {}: {e}", procs.display()));
        }
    }
    // Wait for the child's verdict on its setup, but not forever: a mount on a hung
    // filesystem must not freeze the pod's monitor (it serves every container).
    if !readable_within(&status_r, SETUP_TIMEOUT_MS) {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        return Err(format!(
            "container setup did not finish within {} s (killed)",
            SETUP_TIMEOUT_MS / 1000
        ));
    }
    let mut first = [0u8; 1];
    let mut status_file = File::from(status_r);
    match status_file.read(&mut first) {
        Ok(1) if first[0] == b'R' => {}
        Ok(1) => {
            let mut rest = String::new();
            let _ = status_file.read_to_string(&mut rest);
            return Err(rest);
        }
        _ => return Err("container process died during setup".into()),
    }
    let (stdin, stdout, stderr) = match console {
        None => (stdin_w, out_r, Some(err_r)),
        Some(sock) => {
            // The child sent the master before reporting ready, so it is queued.
            let master = match receive_fd(&sock) {
                Ok(fd) => fd,
                Err(e) => {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    return Err(format!("receive the container's pty master: {e}"));
                }
            };
            let input = if cfg.stdin {
                Some(
                    master
                        .try_clone()
                        .map_err(|e| format!("dup pty master: {e}"))?,
                )
            } else {
                None
            };
            (input, master, None)
        }
    };
    Ok(Launched {
        pid,
        start: start_w,
        status: status_file.into(),
        stdin,
        stdout,
        stderr,
    })
}

/// Starts a created container (given its start and status pipes) and waits for the
/// outcome of its exec.
pub fn start(start_pipe: &OwnedFd, status_pipe: &OwnedFd) -> Result<(), String> {
    let mut start = unsafe_file(start_pipe.as_raw_fd());
    start
        .write_all(b"S")
        .map_err(|e| format!("signal start: {e}"))?;
    std::mem::forget(start);
    if !readable_within(status_pipe, SETUP_TIMEOUT_MS) {
        return Err(format!(
            "container did not exec within {} s",
            SETUP_TIMEOUT_MS / 1000
        ));
    }
    let mut report = String::new();
    let mut status = unsafe_file(status_pipe.as_raw_fd());
    let _ = status.read_to_string(&mut report);
    std::mem::forget(status);
    match report.strip_prefix('E') {
        Some(error) => Err(error.to_string()),
        None => Ok(()),
    }
}

/// How long a container may take to set itself up, or to exec once started. Below
/// crustd's own timeout for these requests, so crustd always hears the outcome.
const SETUP_TIMEOUT_MS: u16 = 20_000;

/// Waits until `fd` has data or EOF, for at most `ms` milliseconds.
fn readable_within(fd: &OwnedFd, ms: u16) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return true,
        }
    }
}

/// A `File` view of a descriptor we keep owning elsewhere (callers forget it).
fn unsafe_file(fd: RawFd) -> File {
    // SAFETY: `fd` is open for the lifetime of the returned File; callers either own
    // it (the child, which never returns) or `mem::forget` the File.
    unsafe { File::from_raw_fd(fd) }
}

enum Never {}

/// Everything the container process does between clone and exec.
fn child_main(
    spec: &Spec,
    overlay: Option<&super::OverlayMount>,
    status_fd: RawFd,
    start_fd: RawFd,
    stdio: ChildStdio,
) -> Result<Never, String> {
    let linux = spec.linux().clone().unwrap_or_default();
    // Compiled now so a bad profile fails CreateContainer; loaded as late as possible.
    let seccomp = linux
        .seccomp()
        .as_ref()
        .map(super::seccomp::compile)
        .transpose()?;
    // Join the namespaces the spec names by path (the pod's, pinned by the monitor).
    for ns in linux.namespaces().clone().unwrap_or_default() {
        let Some(path) = ns.path() else { continue };
        let flag = match ns.typ() {
            LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
            LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
            LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
            // Joining a PID namespace only affects children: the monitor cloned us
            // into the one the spec names (`pidns`). Check rather than run in the
            // wrong one.
            LinuxNamespaceType::Pid => {
                use std::os::unix::fs::MetadataExt;
                let ino = |p: &Path| fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
                if ino(path) != ino(Path::new("/proc/self/ns/pid")) {
                    return Err(format!(
                        "born outside the PID namespace {} the spec names",
                        path.display()
                    ));
                }
                continue;
            }
            _ => continue,
        };
        let file =
            File::open(path).map_err(|e| format!("open namespace {}: {e}", path.display()))?;
        setns(file, flag).map_err(|e| format!("join namespace {}: {e}", path.display()))?;
    }

    let root = spec.root().as_ref().ok_or("spec has no root")?;
    let rootfs = root.path().clone();
    setup_mounts(spec, &rootfs, overlay)?;

    // Sysctls (namespaced: net.*, IPC) in the pod's namespaces.
    for (key, value) in linux.sysctl().clone().unwrap_or_default() {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        fs::write(&path, &value).map_err(|e| format!("sysctl {key}={value}: {e}"))?;
    }

    let process = spec.process().clone().ok_or("spec has no process")?;
    if let Some(adj) = process.oom_score_adj() {
        fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| format!("oom_score_adj {adj}: {e}"))?;
    }
    for rlimit in process.rlimits().clone().unwrap_or_default() {
        let resource = rlimit_resource(&format!("{:?}", rlimit.typ()))
            .ok_or_else(|| format!("unknown rlimit {:?}", rlimit.typ()))?;
        nix::sys::resource::setrlimit(resource, rlimit.soft(), rlimit.hard())
            .map_err(|e| format!("setrlimit {:?}: {e}", rlimit.typ()))?;
    }

    // Stdio: the monitor's pipes, or a terminal from the container's devpts.
    if stdio.console >= 0 {
        setup_terminal(stdio.console, process.user().uid())?;
    } else {
        if stdio.stdin >= 0 {
            // SAFETY: the stdin pipe's read end, inherited and owned by this child.
            let input = unsafe { OwnedFd::from_raw_fd(stdio.stdin) };
            dup2_stdin(&input).map_err(|e| format!("stdin: {e}"))?;
        } else {
            let null = File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
            dup2_stdin(&null).map_err(|e| format!("stdin: {e}"))?;
        }
        // SAFETY: out/err are the pipe write ends this child inherited and owns.
        let (out, err) = unsafe {
            (
                OwnedFd::from_raw_fd(stdio.out),
                OwnedFd::from_raw_fd(stdio.err),
            )
        };
        dup2_stdout(&out).map_err(|e| format!("stdout: {e}"))?;
        dup2_stderr(&err).map_err(|e| format!("stderr: {e}"))?;
    }

    let no_new_privs = process.no_new_privileges() == Some(true);
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it while we
    // still have it (runc's order). With it, load it right before exec.
    if let (Some(programs), false) = (&seccomp, no_new_privs) {
        super::seccomp::apply(programs)?;
    }
    apply_identity(&process)?;
    chdir(process.cwd().as_path())
        .map_err(|e| format!("chdir {}: {e}", process.cwd().display()))?;

    let args: Vec<CString> = process
        .args()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|a| CString::new(a).map_err(|_| "argument contains NUL".to_string()))
        .collect::<Result<_, _>>()?;
    let env: Vec<CString> = process
        .env()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|a| CString::new(a).map_err(|_| "environment contains NUL".to_string()))
        .collect::<Result<_, _>>()?;
    let program = args.first().cloned().ok_or("process.args is empty")?;

    // Set up: tell the monitor, then wait for StartContainer.
    let mut start = unsafe_file(start_fd);
    let mut byte = [0u8; 1];
    report_ready(status_fd)?;
    match start.read(&mut byte) {
        Ok(1) => {}
        _ => return Err("monitor went away before start".into()),
    }
    reset_signals()?;
    if let (Some(programs), true) = (&seccomp, no_new_privs) {
        super::seccomp::apply(programs)?;
    }
    // execvpe searches PATH from the container's environment (`env`), like runc.
    if let Some(path) = env
        .iter()
        .filter_map(|e| e.to_str().ok())
        .find_map(|e| e.strip_prefix("PATH="))
    {
        // SAFETY: single-threaded child; setenv cannot race.
        unsafe { std::env::set_var("PATH", path) };
    }
    let error = execvpe(&program, &args, &env).unwrap_err();
    Err(format!("exec {:?}: {error}", program))
}

/// In the child, after pivot_root: opens a pty from the container's `/dev/ptmx`, sends
/// the master to the monitor over `console`, and makes the slave our stdin, stdout,
/// stderr and controlling terminal (of a new session, as a login would).
fn setup_terminal(console: RawFd, uid: u32) -> Result<(), String> {
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

/// Receives the fd the child sent with [`setup_terminal`].
pub(super) fn receive_fd(sock: &OwnedFd) -> Result<OwnedFd, String> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| e.to_string())?;
    for cmsg in msg.cmsgs().map_err(|e| e.to_string())? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just installed this fd in our table for us.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Err("no fd in the message".into())
}

fn report_ready(status_fd: RawFd) -> Result<(), String> {
    let mut status = unsafe_file(status_fd);
    let result = status
        .write_all(b"R")
        .map_err(|e| format!("report ready: {e}"));
    std::mem::forget(status);
    result
}

/// Gives the process the signal state a fresh program expects: nothing blocked and
/// every handler at its default. The monitor blocks SIGCHLD/SIGTERM/... (it reads them
/// from a signalfd) and Rust ignores SIGPIPE; both survive exec, and a container that
/// inherited them would ignore StopContainer's SIGTERM and never get SIGPIPE.
pub(crate) fn reset_signals() -> Result<(), String> {
    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal, sigprocmask};
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no code of ours in signal context.
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|e| format!("reset signal mask: {e}"))
}

/// Identity and privileges, as the spec's process asks: groups and ids first (needs
/// CAP_SETUID/SETGID), keeping the permitted set across setuid, then the final
/// capability sets and no_new_privs. Shared by containers and execs in them.
pub(crate) fn apply_identity(process: &oci_spec::runtime::Process) -> Result<(), String> {
    let user = process.user();
    let caps = super::caps::CapSets::from_spec(process.capabilities().as_ref())?;
    caps.drop_bounding()?;
    super::caps::keep_caps(true)?;
    let groups: Vec<Gid> = user
        .additional_gids()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(Gid::from_raw)
        .collect();
    setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    setgid(Gid::from_raw(user.gid())).map_err(|e| format!("setgid {}: {e}", user.gid()))?;
    setuid(Uid::from_raw(user.uid())).map_err(|e| format!("setuid {}: {e}", user.uid()))?;
    caps.apply()?;
    if process.no_new_privileges() == Some(true) {
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    }
    Ok(())
}

/// Rootfs, spec mounts, devices, pivot_root, masked and read-only paths.
fn setup_mounts(
    spec: &Spec,
    rootfs: &Path,
    overlay: Option<&super::OverlayMount>,
) -> Result<(), String> {
    // Nothing we mount may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("make / rslave: {e}"))?;
    if let Some(o) = overlay {
        if o.lower.is_empty() {
            return Err("image has no layers".into());
        }
        // Relative lowerdir names, resolved against our cwd: short option strings.
        chdir(o.layers_root.as_path())
            .map_err(|e| format!("chdir {}: {e}", o.layers_root.display()))?;
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            o.lower.join(":"),
            o.upper.display(),
            o.work.display()
        );
        mount(
            Some("overlay"),
            rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|e| format!("mount overlay rootfs at {}: {e}", rootfs.display()))?;
    }
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind rootfs {}: {e}", rootfs.display()))?;

    for m in spec.mounts().clone().unwrap_or_default() {
        let target = resolve_in_root(rootfs, m.destination())?;
        let typ = m.typ().clone().unwrap_or_default();
        let options = m.options().clone().unwrap_or_default();
        let (flags, data) = mount_flags(&options);
        let bind = flags.contains(MsFlags::MS_BIND);
        let source = m.source().clone().unwrap_or_else(|| PathBuf::from(&typ));
        if bind {
            // Bind targets take the source's kind: a file over a file, a dir over a dir.
            if source.is_dir() {
                fs::create_dir_all(&target)
                    .map_err(|e| format!("create {}: {e}", target.display()))?;
            } else {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)
                        .map_err(|e| format!("create {}: {e}", parent.display()))?;
                }
                if !target.exists() {
                    File::create(&target)
                        .map_err(|e| format!("create {}: {e}", target.display()))?;
                }
            }
            mount(
                Some(&source),
                &target,
                None::<&str>,
                flags & (MsFlags::MS_BIND | MsFlags::MS_REC),
                None::<&str>,
            )
            .map_err(|e| {
                format!(
                    "bind {} at {}: {e}",
                    source.display(),
                    m.destination().display()
                )
            })?;
            if flags.contains(MsFlags::MS_RDONLY) {
                // Read-only binds need a remount; keep the flags the source already has.
                let remount = MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | (flags & !(MsFlags::MS_REC | MsFlags::MS_BIND));
                mount(None::<&str>, &target, None::<&str>, remount, None::<&str>)
                    .map_err(|e| format!("remount {} read-only: {e}", m.destination().display()))?;
            }
            if options.iter().any(|o| o == "rro") {
                recursive_read_only(&target).map_err(|e| {
                    format!(
                        "make {} recursively read-only: {e}",
                        m.destination().display()
                    )
                })?;
            }
            // Propagation as CRI asked (rslave: host mounts appear; rshared: both ways).
            let propagation = options.iter().find_map(|o| match o.as_str() {
                "rprivate" => Some(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
                "private" => Some(MsFlags::MS_PRIVATE),
                "rslave" => Some(MsFlags::MS_SLAVE | MsFlags::MS_REC),
                "slave" => Some(MsFlags::MS_SLAVE),
                "rshared" => Some(MsFlags::MS_SHARED | MsFlags::MS_REC),
                "shared" => Some(MsFlags::MS_SHARED),
                _ => None,
            });
            if let Some(p) = propagation {
                mount(None::<&str>, &target, None::<&str>, p, None::<&str>).map_err(|e| {
                    format!("set propagation of {}: {e}", m.destination().display())
                })?;
            }
        } else if typ == "cgroup" || typ == "cgroup2" {
            // The host's cgroup tree, read-only (a private cgroup namespace view comes
            // with the cgroup namespace work).
            fs::create_dir_all(&target).map_err(|e| format!("create {}: {e}", target.display()))?;
            mount(
                Some("/sys/fs/cgroup"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| format!("bind cgroups: {e}"))?;
            let _ = mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            );
        } else {
            fs::create_dir_all(&target).map_err(|e| format!("create {}: {e}", target.display()))?;
            mount(
                Some(&source),
                &target,
                Some(typ.as_str()),
                flags,
                data.as_deref(),
            )
            .map_err(|e| format!("mount {typ} at {}: {e}", m.destination().display()))?;
        }
    }

    // Default devices: bind the host's nodes (works where mknod is not allowed, too).
    let dev = resolve_in_root(rootfs, Path::new("/dev"))?;
    if dev.is_dir() {
        for name in ["null", "zero", "full", "random", "urandom", "tty"] {
            let target = dev.join(name);
            if !target.exists() {
                let _ = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .mode(0o666)
                    .open(&target);
            }
            mount(
                Some(&Path::new("/dev").join(name)),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("bind /dev/{name}: {e}"))?;
        }
        for (link, to) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("ptmx", "pts/ptmx"),
        ] {
            let _ = symlink(to, dev.join(link));
        }
    }

    // pivot_root(".", ".") then detach the old root: the process sees only the rootfs.
    chdir(rootfs).map_err(|e| format!("chdir rootfs: {e}"))?;
    pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach old root: {e}"))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))?;

    let linux = spec.linux().clone().unwrap_or_default();
    for path in linux.masked_paths().clone().unwrap_or_default() {
        let p = Path::new(&path);
        match fs::metadata(p) {
            Ok(meta) if meta.is_dir() => mount(
                Some("tmpfs"),
                p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(|e| format!("mask {path}: {e}"))?,
            Ok(_) => mount(
                Some("/dev/null"),
                p,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("mask {path}: {e}"))?,
            Err(_) => {}
        }
    }
    for path in linux.readonly_paths().clone().unwrap_or_default() {
        let p = Path::new(&path);
        if !p.exists() {
            continue;
        }
        mount(
            Some(p),
            p,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| format!("readonly {path}: {e}"))?;
        mount(
            None::<&str>,
            p,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| format!("readonly {path}: {e}"))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| format!("read-only rootfs: {e}"))?;
    }
    let _ = Mode::empty();
    Ok(())
}

/// `dest` inside `rootfs`, resolving every symlink on the way as if `rootfs` were `/`
/// (an absolute link restarts at the rootfs, `..` stops at it), so nothing created or
/// mounted for the container can land on the host, whatever links the image holds.
/// (Only the image and crust write the rootfs before the container starts, so the
/// walk is not racing the container.)
fn resolve_in_root(rootfs: &Path, dest: &Path) -> Result<PathBuf, String> {
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut pending: Vec<std::ffi::OsString> = dest
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate: PathBuf = std::iter::once(rootfs.as_os_str().to_os_string())
            .chain(resolved.iter().cloned())
            .chain(std::iter::once(part.clone()))
            .collect();
        match fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(format!(
                        "too many symlinks resolving {} in the rootfs",
                        dest.display()
                    ));
                }
                let target = fs::read_link(&candidate)
                    .map_err(|e| format!("read link {}: {e}", candidate.display()))?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(p) => pending.push(p.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved.push(part),
        }
    }
    Ok(std::iter::once(rootfs.as_os_str().to_os_string())
        .chain(resolved)
        .collect())
}

/// Makes a mount and every mount below it read-only (`mount_setattr(2)`, Linux 5.12):
/// a plain read-only bind leaves submounts writable, which `recursive_read_only`
/// exists to prevent. Fails (never silently degrades) on older kernels.
fn recursive_read_only(target: &Path) -> Result<(), String> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const AT_RECURSIVE: libc::c_int = 0x8000;
    let path = CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| "path contains NUL".to_string())?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a valid C path, a correctly laid out mount_attr and its size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        Err(nix::Error::last().to_string())
    } else {
        Ok(())
    }
}

/// OCI mount options -> flags and the data string for the rest.
fn mount_flags(options: &[String]) -> (MsFlags, Option<String>) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        match option.as_str() {
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => {}
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "private" | "rprivate" | "slave" | "rslave" | "shared" | "rshared" | "rro" => {}
            other => data.push(other.to_string()),
        }
    }
    (flags, (!data.is_empty()).then(|| data.join(",")))
}

fn rlimit_resource(name: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource::*;
    Some(match name {
        "RlimitNofile" => RLIMIT_NOFILE,
        "RlimitNproc" => RLIMIT_NPROC,
        "RlimitCore" => RLIMIT_CORE,
        "RlimitMemlock" => RLIMIT_MEMLOCK,
        "RlimitStack" => RLIMIT_STACK,
        "RlimitAs" => RLIMIT_AS,
        "RlimitCpu" => RLIMIT_CPU,
        "RlimitData" => RLIMIT_DATA,
        "RlimitFsize" => RLIMIT_FSIZE,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_stay_in_the_rootfs_whatever_the_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("real")).unwrap();
        symlink("/run/nologin", root.join("etc/hosts")).unwrap();
        symlink("../../../../..", root.join("up")).unwrap();
        symlink("/real", root.join("abs")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        let cases: &[(&str, PathBuf)] = &[
            ("/etc/resolv.conf", root.join("etc/resolv.conf")),
            ("/etc/hosts", root.join("run/nologin")),
            ("/up/etc", root.join("etc")),
            ("/abs/x", root.join("real/x")),
            ("/../../etc", root.join("etc")),
            ("/a/../../b", root.join("b")),
        ];
        for (dest, want) in cases {
            let got = resolve_in_root(root, Path::new(dest)).unwrap();
            assert_eq!(&got, want, "{dest}");
            assert!(got.starts_with(root), "{dest} escaped to {}", got.display());
        }
        assert!(
            resolve_in_root(root, Path::new("/loop1/x")).is_err(),
            "symlink loops are refused"
        );
    }

    #[test]
    fn mount_options() {
        let (f, d) = mount_flags(&[
            "nosuid".into(),
            "noexec".into(),
            "mode=755".into(),
            "size=65536k".into(),
        ]);
        assert!(f.contains(MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC));
        assert_eq!(d.as_deref(), Some("mode=755,size=65536k"));
        let (f, d) = mount_flags(&["rbind".into(), "ro".into(), "rprivate".into()]);
        assert!(f.contains(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY));
        assert_eq!(d, None);
    }
}
