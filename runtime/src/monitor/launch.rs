//! The built-in launcher: turns an OCI runtime spec into a running container process.
//!
//! Runs inside the monitor, which is single-threaded: the cloned child is a full copy
//! of a process with no other threads and no held locks, so it may allocate and run
//! ordinary Rust until it execs. The child sets everything up, reports "ready" on the
//! status pipe, waits for the start byte, then execs; a failure at any point is written
//! to the status pipe (close-on-exec, so a successful exec reads as EOF).
//!
//! The start pipe carries two bytes: `P` once the monitor has placed the child in its
//! cgroups (the child waits for it before anything that depends on its cgroup: the
//! cgroup namespace, the /sys/fs/cgroup view, mknod under the device cgroup), then
//! `S` for StartContainer. With createRuntime/prestart hooks there is one more round
//! between them: the child, in all its namespaces, writes `N` on the status pipe; the
//! monitor runs the hooks (in its own namespaces, as the runtime spec asks) and
//! answers `H`.
#![allow(unsafe_code)]

mod cgroupfs;
mod devices;
mod idmap;
mod mount_at;
mod mounts;
mod terminal;

pub(super) use idmap::{host_id, idmapped_layers, join_userns};
pub(crate) use terminal::receive_fd;
pub(super) use terminal::setup_terminal;

use std::{
    ffi::CString,
    fs::{self, File},
    io::{Read, Write},
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::fs::DirBuilderExt,
    },
    path::{Path, PathBuf},
};

use nix::{
    fcntl::OFlag,
    sched::{CloneFlags, setns, unshare},
    unistd::{
        Gid, Pid, Uid, chdir, dup2_stderr, dup2_stdin, dup2_stdout, execvpe, pipe2, setgid,
        setgroups, setuid,
    },
};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::hooks;

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

/// The parts of a container's spec the monitor itself reads before the clone. The
/// whole spec is parsed by the cloned child: the deserializer for it (a few hundred
/// KiB of code) and its allocations then never touch the monitor, which lives as
/// long as the pod (a child's page faults and heap are its own).
#[derive(Debug, Default, serde::Deserialize)]
pub struct SpecOutline {
    #[serde(default)]
    linux: Option<OutlineLinux>,
    /// Present (even empty): the monitor runs hooks, so it needs the whole spec.
    #[serde(default)]
    pub hooks: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct OutlineLinux {
    #[serde(default)]
    namespaces: Vec<OutlineNamespace>,
}

#[derive(Debug, serde::Deserialize)]
struct OutlineNamespace {
    #[serde(rename = "type")]
    typ: String,
    #[serde(default)]
    path: Option<PathBuf>,
}

/// Where a container's writes go and where it lives.
pub struct LaunchConfig<'a> {
    /// The container's id and bundle (the directory of its config.json), for hooks.
    pub id: &'a str,
    pub bundle: &'a Path,
    /// The spec as written (parsed by the child), its outline, and the parsed spec
    /// where the monitor needs it for hooks.
    pub spec_json: &'a [u8],
    pub outline: &'a SpecOutline,
    pub hooks: Option<&'a Spec>,
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
        .outline
        .linux
        .as_ref()
        .map_or(&[][..], |l| &l.namespaces[..]);
    let mut flags = CloneFlags::CLONE_NEWNS;
    let wants_new_pid = namespaces
        .iter()
        .any(|n| n.typ == "pid" && n.path.is_none());
    if wants_new_pid {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    // The pod's, a TARGET container's, or (for a PID namespace of its own, or the
    // host's) the monitor's own: see `pidns`.
    let pid_path = namespaces
        .iter()
        .find(|n| n.typ == "pid")
        .and_then(|n| n.path.as_deref());
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
    let mut stack = ChildStack::new(1 << 20)?;
    let (spec_json, id, bundle, overlay) = (cfg.spec_json, cfg.id, cfg.bundle, cfg.overlay);
    let child = Box::new(move || -> isize {
        let mut status = unsafe_file(status_fd);
        let parsed = serde_json::from_slice::<Spec>(spec_json)
            .map_err(|e| format!("parse spec: {e}"))
            .and_then(|spec| {
                let lsm = match spec.process() {
                    Some(p) => super::lsm::exec_attrs(p)?,
                    None => Vec::new(),
                };
                Ok((spec, lsm))
            });
        let outcome = parsed.and_then(|(spec, lsm)| {
            let ctx = ChildCtx {
                spec: &spec,
                id,
                bundle,
                overlay,
                lsm: &lsm,
            };
            child_main(&ctx, status_fd, start_fd, stdio)
        });
        match outcome {
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
        unsafe { nix::sched::clone(child, stack.as_mut(), flags, Some(libc::SIGCHLD)) }
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
            // A child that failed before it was placed (its spec, its seccomp
            // profile) said why: that, not the ESRCH of its exit, is the error.
            if readable_within(&status_r, 0) {
                let mut report = String::new();
                let _ = File::from(status_r).read_to_string(&mut report);
                if let Some(why) = report.strip_prefix('E') {
                    return Err(why.to_string());
                }
            }
            return Err(format!("place container in {}: {e}", procs.display()));
        }
    }
    // Fails only if the child is already gone (EPIPE): its status pipe then says why.
    let _ = nix::unistd::write(&start_w, b"P");
    if let Some(spec) = cfg.hooks.filter(|s| hooks::Stage::CreateRuntime.wanted(s)) {
        let kill = || {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        };
        if !readable_within(&status_r, SETUP_TIMEOUT_MS) {
            kill();
            return Err("container setup did not reach its createRuntime hooks (killed)".into());
        }
        let mut byte = [0u8; 1];
        match nix::unistd::read(&status_r, &mut byte) {
            Ok(1) if byte[0] == b'N' => {}
            // An error report: read below, where every setup failure is.
            Ok(1) => {
                let mut rest = String::new();
                let _ = File::from(status_r).read_to_string(&mut rest);
                return Err(rest);
            }
            _ => return Err("container process died during setup".into()),
        }
        let state = hooks::HookState {
            id: cfg.id,
            status: "creating",
            pid: pid.as_raw(),
            bundle: cfg.bundle,
        };
        if let Err(e) = hooks::Stage::CreateRuntime.run(spec, &state) {
            kill();
            return Err(e);
        }
        let _ = nix::unistd::write(&start_w, b"H");
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

/// The cloned child's stack: an anonymous mapping of its own, so only the pages the
/// child touches ever exist, and in the child only. (A `vec![0; 1 MiB]` is mapped the
/// first time, but glibc's malloc raises its mmap threshold once such a chunk is
/// freed, so the next one came from the heap and was zeroed there, page by page.)
struct ChildStack {
    ptr: std::ptr::NonNull<libc::c_void>,
    len: std::num::NonZeroUsize,
}

impl ChildStack {
    fn new(len: usize) -> Result<Self, String> {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};
        let len = std::num::NonZeroUsize::new(len).ok_or("empty stack")?;
        // SAFETY: a fresh private anonymous mapping at an address the kernel picks
        // aliases nothing.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_STACK,
            )
        }
        .map_err(|e| format!("map the container process's stack: {e}"))?;
        Ok(Self { ptr, len })
    }

    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes, readable, writable and zero-filled by
        // the kernel, and lives (unaliased) as long as `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast(), self.len.get()) }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made; no reference into it
        // outlives `self` (`as_mut` borrows it).
        let _ = unsafe { nix::sys::mman::munmap(self.ptr, self.len.get()) };
    }
}

/// A `File` view of a descriptor we keep owning elsewhere (callers forget it).
fn unsafe_file(fd: RawFd) -> File {
    // SAFETY: `fd` is open for the lifetime of the returned File; callers either own
    // it (the child, which never returns) or `mem::forget` the File.
    unsafe { File::from_raw_fd(fd) }
}

enum Never {}

/// What the container process is set up from.
struct ChildCtx<'a> {
    spec: &'a Spec,
    id: &'a str,
    bundle: &'a Path,
    overlay: Option<&'a super::OverlayMount>,
    lsm: &'a [super::lsm::ExecAttr],
}

/// Everything the container process does between clone and exec.
fn child_main(
    ctx: &ChildCtx<'_>,
    status_fd: RawFd,
    start_fd: RawFd,
    stdio: ChildStdio,
) -> Result<Never, String> {
    let spec = ctx.spec;
    let linux = spec.linux().clone().unwrap_or_default();
    // Compiled now so a bad profile fails CreateContainer; loaded as late as possible.
    let seccomp = linux
        .seccomp()
        .as_ref()
        .map(super::seccomp::compile)
        .transpose()?;
    // The pod's user namespace, opened while its pin is reachable (before
    // pivot_root); joined last (see `idmap`).
    let userns = idmap::userns_of(spec)
        .map(|p| File::open(&p).map_err(|e| format!("open user namespace {}: {e}", p.display())))
        .transpose()?;
    wait_for(start_fd, b'P')?;
    let mounts = spec.mounts().clone().unwrap_or_default();
    let cgroups = mounts
        .iter()
        .any(|m| matches!(m.typ().as_deref(), Some("cgroup" | "cgroup2")))
        .then(cgroupfs::CgroupView::discover)
        .transpose()?;
    // Join the namespaces the spec names by path (the pod's, pinned by the monitor).
    for ns in linux.namespaces().clone().unwrap_or_default() {
        let Some(path) = ns.path() else { continue };
        let flag = match ns.typ() {
            LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
            LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
            LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
            LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            // Joined last, below.
            LinuxNamespaceType::User => continue,
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

    // A cgroup namespace of its own is entered once the process is in its cgroups,
    // so that they become its root (runc's nsexec waits for the parent the same way);
    // and before the mounts, so a cgroup2 mount shows that root.
    let own_cgroupns = linux
        .namespaces()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Cgroup && n.path().is_none());
    if own_cgroupns {
        unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| format!("unshare cgroup namespace: {e}"))?;
    }
    if hooks::Stage::CreateRuntime.wanted(spec) {
        // In every namespace now: the monitor runs the createRuntime hooks.
        report(status_fd, b"N")?;
        wait_for(start_fd, b'H')?;
    }

    let process = spec.process().clone().ok_or("spec has no process")?;
    let root = spec.root().as_ref().ok_or("spec has no root")?;
    mounts::prepare_rootfs(
        spec,
        root.path(),
        ctx.overlay,
        cgroups.as_ref(),
        userns.as_ref(),
        &mut || {
            // runc's order: createContainer hooks in the container's namespaces with its
            // mounts made, before pivot_root (the host's /proc still names our pid).
            let pid = fs::read_link("/proc/self")
                .ok()
                .and_then(|p| p.to_str()?.parse().ok())
                .unwrap_or(0);
            let state = hooks::HookState {
                id: ctx.id,
                status: "creating",
                pid,
                bundle: ctx.bundle,
            };
            hooks::Stage::CreateContainer.run(spec, &state)?;
            // The AppArmor profile / SELinux label for the exec, requested while /proc is
            // still the monitor's (the host's): after pivot_root it would be a mount the
            // container's spec put there. After the createContainer hooks, so they run
            // with the runtime's confinement as in runc. The kernel applies it at the
            // execve, so the rest of the setup runs with the monitor's confinement; a
            // profile the kernel lacks fails CreateContainer here, not StartContainer.
            super::lsm::apply(ctx.lsm)
        },
    )?;
    // runc's `prepareRootfs` creates a missing cwd after pivot_root (so a link in the
    // image cannot lead it out of the rootfs), as root and before the root may go
    // read-only: a CRI working_dir need not exist in the image.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(process.cwd())
        .map_err(|e| format!("create working directory {}: {e}", process.cwd().display()))?;
    // Sysctls (namespaced: net.*, IPC), resolved in the namespaces we joined. Before
    // `finalize_rootfs` makes /proc/sys read-only, in runc's order.
    for (key, value) in linux.sysctl().clone().unwrap_or_default() {
        let path = Path::new("/proc/sys").join(super::daemon::sysctl_path(&key));
        fs::write(&path, &value).map_err(|e| format!("sysctl {key}={value}: {e}"))?;
    }
    mounts::finalize_rootfs(spec)?;

    super::process_limits::apply(&process)?;

    // Stdio: the monitor's pipes, or a terminal from the container's devpts.
    if stdio.console >= 0 {
        // Still host root here: the terminal goes to the host uid the container's
        // user is.
        let uid = idmap::host_id(linux.uid_mappings().as_ref(), process.user().uid());
        setup_terminal(stdio.console, uid)?;
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

    // Only stdio goes through the exec: anything else the monitor holds without
    // close-on-exec (an fd it inherited) would hand the container a way out of its
    // root (CVE-2024-21626). Marked, not closed: the status pipe must stay open until
    // the exec. Before seccomp, which may not allow close_range.
    crate::fds::mark_cloexec_from(3);
    // Before seccomp (a profile may refuse setns) and the identity (uid 0 must be
    // the namespace's root, not the host's).
    if let Some(ns) = &userns {
        idmap::join_userns(ns)?;
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
    report_ready(status_fd)?;
    wait_for(start_fd, b'S')?;
    reset_signals()?;
    // startContainer hooks: in the container, as the container's user, right before
    // the exec (runc runs them at the same point); its pid as its own /proc has it.
    let state = hooks::HookState {
        id: ctx.id,
        status: "created",
        pid: nix::unistd::getpid().as_raw(),
        bundle: ctx.bundle,
    };
    hooks::Stage::StartContainer.run(spec, &state)?;
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

/// Waits for the monitor's `byte` on the start pipe.
fn wait_for(start_fd: RawFd, byte: u8) -> Result<(), String> {
    let mut start = unsafe_file(start_fd);
    let mut got = [0u8; 1];
    let read = start.read(&mut got);
    std::mem::forget(start);
    match read {
        Ok(1) if got[0] == byte => Ok(()),
        Ok(1) => Err(format!(
            "unexpected byte {:?} from the monitor",
            got[0] as char
        )),
        _ => Err("monitor went away before start".into()),
    }
}

fn report_ready(status_fd: RawFd) -> Result<(), String> {
    report(status_fd, b"R")
}

/// Writes a progress byte to the monitor on the status pipe.
fn report(status_fd: RawFd, what: &[u8]) -> Result<(), String> {
    let mut status = unsafe_file(status_fd);
    let result = status
        .write_all(what)
        .map_err(|e| format!("report {}: {e}", String::from_utf8_lossy(what)));
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
    // The spec's umask, else runc's 0022: never whatever crustd was started with (under
    // umask 000 every file a container made, in a volume too, was world-writable).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        user.umask().unwrap_or(0o022),
    ));
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
