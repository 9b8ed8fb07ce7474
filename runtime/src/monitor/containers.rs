//! The monitor's containers: create/start through the launcher (or, for `oci` runtime
//! handlers, an OCI runtime binary: see [`super::oci`]), copy their output into
//! CRI log files, and record each exit in a file before anyone is told.
#![allow(unsafe_code)]

use std::{
    collections::HashMap,
    io::ErrorKind,
    os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
    time::SystemTime,
};

use nix::{
    fcntl::{FcntlArg, OFlag, fcntl},
    sys::{
        signal::{Signal, kill},
        wait::WaitStatus,
    },
    unistd::Pid,
};

use super::{
    ExitRecord, Reply,
    crilog::{CriLog, Stream},
    hooks,
    launch::{self, LaunchConfig, Launched},
    oci::{self, OciContainer},
};
use crate::proc::ProcRef;

struct Container {
    pid: Pid,
    proc_ref: Option<ProcRef>,
    /// Until started: how to start it.
    pending: Option<Pending>,
    /// When StartContainer released it (unix nanoseconds); `None` before, or when
    /// the start failed.
    started_at: Option<i64>,
    /// Run by an OCI runtime: what remove must undo.
    oci: Option<OciContainer>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    /// Where attachers' input goes (a pipe, or the pty master); `None` without CRI
    /// `stdin`, or once closed.
    stdin: Option<OwnedFd>,
    /// Input not yet taken by the container (the fd is non-blocking).
    stdin_buf: Vec<u8>,
    /// Close stdin once `stdin_buf` is written (an attacher ended it, `stdin_once`).
    stdin_closing: bool,
    stdio: StdioConfig,
    /// Someone is attached: output is also queued as [`Event::Output`].
    tee: bool,
    log: CriLog,
    exit_file: PathBuf,
    exited: bool,
    /// The container's cgroup directories: what is left in them when its process
    /// exits is killed.
    cgroup_dirs: Vec<PathBuf>,
    /// For the built-in launcher's poststart/poststop hooks: the spec (when it has
    /// such hooks) and the bundle directory.
    hooks: Option<(oci_spec::runtime::Spec, PathBuf)>,
}

/// A created container's way to start.
enum Pending {
    /// The built-in launcher's start and status pipes.
    Builtin(OwnedFd, OwnedFd),
    /// `<runtime> start`.
    Oci,
}

/// A container's CRI stdio settings.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct StdioConfig {
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
}

/// A [`super::Request::CreateContainer`], borrowed.
#[derive(Clone, Copy)]
pub(super) struct NewContainer<'a> {
    pub id: &'a str,
    pub spec: &'a Path,
    pub log_path: &'a Path,
    pub exit_file: &'a Path,
    pub cgroup_dirs: &'a [PathBuf],
    pub overlay: Option<&'a super::OverlayMount>,
    pub oci: Option<&'a super::OciRuntime>,
    pub stdio: StdioConfig,
    /// Longest log line before it is split into `P` records.
    pub max_log_line: usize,
    /// Restore it from these CRIU images (running at once) instead of creating it.
    pub restore: Option<&'a super::RestoreImages>,
}

/// What attachers need to hear about, in order.
pub(super) enum Event {
    Output(String, Stream, Vec<u8>),
    /// The container exited (after its last output) or was removed.
    Exited(String, i32),
}

/// Input buffered per container before attachers are read no further (backpressure
/// goes to the attachers, never to the monitor loop).
pub(super) const STDIN_BUFFER: usize = 1 << 20;

/// Output read from one stream per loop turn (and the size of one read).
pub(super) const OUTPUT_CHUNK: usize = 64 * 1024;

/// Output read at once from a stream whose process is gone: the most a pipe can hold
/// (`/proc/sys/fs/pipe-max-size`'s default, which an unprivileged container cannot
/// raise its pipe past).
const EXIT_DRAIN: usize = 1 << 20;

/// All containers of this pod.
#[derive(Default)]
pub(super) struct Containers {
    map: HashMap<String, Container>,
    /// Drained by the monitor loop after each round (see [`super::attach`]).
    pub(super) events: Vec<Event>,
    /// Where output is read into: on the heap, pages touched only as far as reads
    /// reach (a 64 KiB array on the stack is probed page by page, so every monitor
    /// kept 64 KiB of stack resident for good after its first read).
    scratch: Vec<u8>,
}

/// Reads once from `fd` into the spare capacity of `buf` (at most `max` bytes beyond
/// its length, reserved first) and extends it by what was read, touching no more of
/// the reserve than the kernel wrote.
pub(super) fn read_appending(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let want = spare.len().min(max);
    // SAFETY: `spare` is writable memory of `want` bytes owned by `buf`; read writes at
    // most that many, and exactly the `n` it reports, which are then initialized.
    let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), want) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the first `n` spare bytes were written by read (see above).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

fn ok(pid: Option<ProcRef>) -> Reply {
    Reply {
        ok: true,
        error: None,
        init_alive: None,
        pid,
        started_at: None,
        process: None,
    }
}

fn fail(error: String) -> Reply {
    Reply {
        ok: false,
        error: Some(error),
        init_alive: None,
        pid: None,
        started_at: None,
        process: None,
    }
}

/// Where a container is, from whether it still waits to be started, when it was
/// started, and whether it was reaped.
fn process_state(pending: bool, started_at: Option<i64>, exited: bool) -> super::ProcessState {
    use super::ProcessState as P;
    match (pending, started_at, exited) {
        (true, _, false) => P::Created,
        (_, Some(_), false) => P::Running,
        // Ran and ended, or was killed before it was started (pod stop, remove).
        (_, Some(_), true) | (true, None, true) => P::Exited,
        // StartContainer took it out of waiting but the start failed.
        (false, None, _) => P::StartFailed,
    }
}

fn set_nonblocking(fd: &OwnedFd) {
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let _ = fcntl(
            fd,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        );
    }
}

impl Containers {
    pub(super) fn create(&mut self, new: NewContainer<'_>) -> Reply {
        let NewContainer {
            id,
            spec,
            log_path,
            exit_file,
            cgroup_dirs,
            overlay,
            oci,
            stdio,
            max_log_line,
            restore,
        } = new;
        if self.map.contains_key(id) {
            return fail(format!("container {id} already exists in this monitor"));
        }
        let spec_path = spec;
        // The built-in launcher's child parses the spec (see `SpecOutline`); the
        // monitor does only where it runs hooks, or hands the spec to an OCI runtime.
        let parsed = std::fs::read(spec)
            .map_err(|e| e.to_string())
            .and_then(|json| {
                let outline: launch::SpecOutline =
                    serde_json::from_slice(&json).map_err(|e| e.to_string())?;
                let full = if oci.is_some() || outline.hooks.is_some() {
                    Some(
                        serde_json::from_slice::<oci_spec::runtime::Spec>(&json)
                            .map_err(|e| e.to_string())?,
                    )
                } else {
                    None
                };
                Ok((json, outline, full))
            });
        let (json, outline, full) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => return fail(format!("read spec {}: {e}", spec.display())),
        };
        let log = match CriLog::open(log_path, max_log_line) {
            Ok(log) => log,
            Err(e) => return fail(format!("open log {}: {e}", log_path.display())),
        };
        if let (Some(runtime), Some(spec)) = (oci, &full) {
            return self.create_oci(new, runtime, spec, log);
        }
        if restore.is_some() {
            return fail("restore needs an OCI runtime (runc with CRIU)".into());
        }
        let bundle = spec_path.parent().unwrap_or(Path::new("/")).to_path_buf();
        match launch::create(&LaunchConfig {
            id,
            bundle: &bundle,
            spec_json: &json,
            outline: &outline,
            hooks: full.as_ref(),
            cgroup_dirs,
            overlay,
            stdin: stdio.stdin,
            tty: stdio.tty,
        }) {
            Ok(Launched {
                pid,
                start,
                status,
                stdin,
                stdout,
                stderr,
            }) => {
                for fd in [Some(&stdout), stderr.as_ref(), stdin.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    set_nonblocking(fd);
                }
                let proc_ref = ProcRef::of(pid.as_raw());
                self.map.insert(
                    id.to_string(),
                    Container {
                        pid,
                        proc_ref,
                        pending: Some(Pending::Builtin(start, status)),
                        started_at: None,
                        oci: None,
                        stdout: Some(stdout),
                        stderr,
                        stdin,
                        stdin_buf: Vec::new(),
                        stdin_closing: false,
                        stdio,
                        tee: false,
                        log,
                        exit_file: exit_file.to_path_buf(),
                        exited: false,
                        cgroup_dirs: cgroup_dirs.to_vec(),
                        hooks: full
                            .filter(|spec| {
                                hooks::Stage::Poststart.wanted(spec)
                                    || hooks::Stage::Poststop.wanted(spec)
                            })
                            .map(|spec| (spec, bundle)),
                    },
                );
                ok(proc_ref)
            }
            Err(e) => fail(e),
        }
    }

    pub(super) fn start(&mut self, id: &str) -> Reply {
        let Some(c) = self.map.get_mut(id) else {
            return fail(format!("container {id} not found"));
        };
        let Some(pending) = c.pending.take() else {
            return fail(format!("container {id} was already started"));
        };
        let started_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let started = match (&pending, &c.oci) {
            (Pending::Builtin(start, status), _) => launch::start(start, status),
            (Pending::Oci, Some(oci)) => oci::start(oci),
            (Pending::Oci, None) => Err("no OCI runtime recorded".into()),
        };
        match started {
            Ok(()) => {
                c.started_at = Some(started_at);
                if let Some((spec, bundle)) = &c.hooks {
                    let state = hooks::HookState {
                        id,
                        status: "running",
                        pid: c.pid.as_raw(),
                        bundle,
                    };
                    // runtime-spec: a failed poststart hook is logged; the container
                    // goes on as if it had succeeded.
                    if let Err(e) = hooks::Stage::Poststart.run(spec, &state) {
                        eprintln!("crust-monitor: container {id}: {e}");
                    }
                }
                Reply {
                    started_at: Some(started_at),
                    ..ok(c.proc_ref)
                }
            }
            Err(e) => fail(e),
        }
    }

    /// Where container `id`'s process is (see [`super::ProcessState`]). Read-only.
    pub(super) fn status(&self, id: &str) -> Reply {
        let Some(c) = self.map.get(id) else {
            return fail(format!("container {id} not found"));
        };
        Reply {
            started_at: c.started_at,
            process: Some(process_state(c.pending.is_some(), c.started_at, c.exited)),
            ..ok(c.proc_ref)
        }
    }

    pub(super) fn signal(&mut self, id: &str, signal: i32) -> Reply {
        let Some(c) = self.map.get(id) else {
            return fail(format!("container {id} not found"));
        };
        if c.exited {
            return ok(c.proc_ref);
        }
        let Ok(sig) = Signal::try_from(signal) else {
            return fail(format!("invalid signal {signal}"));
        };
        match kill(c.pid, sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => ok(c.proc_ref),
            Err(e) => fail(format!("signal {sig}: {e}")),
        }
    }

    pub(super) fn reopen_log(&mut self, id: &str) -> Reply {
        let Some(c) = self.map.get_mut(id) else {
            return fail(format!("container {id} not found"));
        };
        match c.log.reopen() {
            Ok(()) => ok(c.proc_ref),
            Err(e) => fail(format!("reopen log: {e}")),
        }
    }

    /// Drops a container's state (its fds and log file), killing it first if needed.
    pub(super) fn remove(&mut self, id: &str) -> Reply {
        if let Some(c) = self.map.get(id)
            && !c.exited
        {
            let _ = kill(c.pid, Signal::SIGKILL);
            if let Ok(status) = nix::sys::wait::waitpid(c.pid, None) {
                self.on_exit(status);
            }
        }
        let mut teardown = Ok(());
        if let Some(c) = self.map.get_mut(id)
            && let Some(o) = c.oci.as_mut()
            && !o.deleted
        {
            teardown = oci::delete(o);
            o.deleted = teardown.is_ok();
        }
        if let Err(e) = teardown {
            return fail(format!("remove container {id}: {e}"));
        }
        if let Some(c) = self.map.get(id)
            && let Some((spec, bundle)) = &c.hooks
        {
            let state = hooks::HookState {
                id,
                status: "stopped",
                pid: 0,
                bundle,
            };
            // Logged, not failed: the container is gone either way (runtime-spec).
            if let Err(e) = hooks::Stage::Poststop.run(spec, &state) {
                eprintln!("crust-monitor: container {id}: {e}");
            }
        }
        if self.map.remove(id).is_some() {
            // Attachers of an exited container were told already; this is for those
            // of one that was killed above (its exit was queued) or never reaped.
            self.events.push(Event::Exited(id.to_string(), -1));
        }
        ok(None)
    }

    /// The output pipes to watch: (container, stream, fd).
    pub(super) fn output_fds(&self) -> Vec<(String, Stream, RawFd)> {
        let mut fds = Vec::new();
        for (id, c) in &self.map {
            if let Some(fd) = &c.stdout {
                fds.push((id.clone(), Stream::Stdout, fd.as_raw_fd()));
            }
            if let Some(fd) = &c.stderr {
                fds.push((id.clone(), Stream::Stderr, fd.as_raw_fd()));
            }
        }
        fds
    }

    /// Copies up to `budget` bytes from the pipe into the log; closes it at EOF.
    ///
    /// The budget is what keeps the monitor responsive: a writer that never stops
    /// (`yes`) refills the pipe as fast as it is read, so "until empty" would never
    /// end and the control socket would wait behind it (issue 13, item 8). The loop
    /// gives each stream [`OUTPUT_CHUNK`] per turn, round-robin.
    pub(super) fn on_output(&mut self, id: &str, stream: Stream, budget: usize) {
        let Some(c) = self.map.get_mut(id) else {
            return;
        };
        let slot = match stream {
            Stream::Stdout => &mut c.stdout,
            Stream::Stderr => &mut c.stderr,
        };
        let Some(fd) = slot.as_ref() else { return };
        let buf = &mut self.scratch;
        let mut left = budget;
        let eof = loop {
            if left == 0 {
                break false;
            }
            buf.clear();
            match read_appending(fd.as_raw_fd(), buf, left.min(OUTPUT_CHUNK)) {
                Ok(0) => break true,
                Ok(n) => {
                    left -= n;
                    c.log.write(stream, buf);
                    if c.tee {
                        self.events
                            .push(Event::Output(id.to_string(), stream, buf.clone()));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break true,
            }
        };
        if eof {
            c.log.finish(stream);
            *slot = None;
        }
    }

    /// Records the exit if `status` is one of ours. Returns true if it was.
    pub(super) fn on_exit(&mut self, status: WaitStatus) -> bool {
        let Some(pid) = status.pid() else {
            return false;
        };
        let Some((id, _)) = self.map.iter().find(|(_, c)| c.pid == pid && !c.exited) else {
            return false;
        };
        let id = id.clone();
        // Output still in the pipes belongs to the log before the exit is visible. A
        // pipe holds at most EXIT_DRAIN; more means a writer outlived the process
        // (killed just below), and the loop reads the rest.
        for stream in [Stream::Stdout, Stream::Stderr] {
            self.on_output(&id, stream, EXIT_DRAIN);
        }
        let c = self.map.get_mut(&id).expect("present");
        let (exit_code, signal) = match status {
            WaitStatus::Exited(_, code) => (code, None),
            WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
            _ => return false,
        };
        let finished_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        // In a PID namespace of its own the kernel has killed the container's other
        // processes with it; in the pod's (or a TARGET's, or the host's) they live on,
        // reparented. A container ends with its process, as with runc, which kills
        // what is left in the cgroup on delete: do it now, before the exit is visible.
        let oom_kills = crate::cgroup::oom_kills(&c.cgroup_dirs);
        kill_cgroup_members(&c.cgroup_dirs);
        let record = ExitRecord {
            exit_code,
            signal,
            finished_at,
            oom_kills: Some(oom_kills),
        };
        let dir = c.exit_file.parent().unwrap_or(Path::new("/"));
        let name = c
            .exit_file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Err(e) = crust_state::write_atomic(
            dir,
            &name,
            &serde_json::to_vec(&record).expect("serializes"),
        ) {
            eprintln!(
                "crust-monitor: record exit of {id} in {}: {e}",
                c.exit_file.display()
            );
        }
        c.exited = true;
        c.stdin = None;
        c.stdin_buf = Vec::new();
        self.events.push(Event::Exited(id, exit_code));
        true
    }

    /// SIGKILLs every container still running (pod shutdown).
    pub(super) fn kill_all(&mut self) {
        for c in self.map.values().filter(|c| !c.exited) {
            let _ = kill(c.pid, Signal::SIGKILL);
        }
    }

    /// Deletes every OCI-runtime container's runtime state and rootfs mount (pod
    /// shutdown, after their processes are reaped). Best-effort.
    pub(super) fn delete_oci_all(&mut self) {
        for (id, c) in self.map.iter_mut() {
            if let Some(o) = c.oci.as_mut()
                && !o.deleted
            {
                match oci::delete(o) {
                    Ok(()) => o.deleted = true,
                    Err(e) => eprintln!("crust-monitor: delete container {id}: {e}"),
                }
            }
        }
    }

    /// Pids of containers not yet reaped.
    pub(super) fn running(&self) -> Vec<Pid> {
        self.map
            .values()
            .filter(|c| !c.exited)
            .map(|c| c.pid)
            .collect()
    }
}

impl Containers {
    /// [`Containers::create`] through an OCI runtime.
    fn create_oci(
        &mut self,
        new: NewContainer<'_>,
        runtime: &super::OciRuntime,
        spec: &oci_spec::runtime::Spec,
        log: CriLog,
    ) -> Reply {
        let Some(root) = spec.root().as_ref() else {
            return fail("spec has no root".into());
        };
        let Some(bundle) = new.spec.parent() else {
            return fail(format!("spec {} has no directory", new.spec.display()));
        };
        let handle = OciContainer {
            runtime: runtime.clone(),
            id: new.id.to_string(),
            bundle: bundle.to_path_buf(),
            rootfs: root.path().clone(),
            deleted: false,
        };
        let now = || {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0)
        };
        // A restored container runs from here on: no StartContainer follows.
        let (created, started_at) = match new.restore {
            None => (
                oci::create(&handle, new.overlay, new.stdio.stdin, new.stdio.tty),
                None,
            ),
            Some(images) => {
                let started_at = now();
                (
                    oci::restore(&handle, new.overlay, images, new.stdio.stdin),
                    Some(started_at),
                )
            }
        };
        let created = match created {
            Ok(created) => created,
            Err(e) => return fail(e),
        };
        for fd in [
            Some(&created.stdout),
            created.stderr.as_ref(),
            created.stdin.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            set_nonblocking(fd);
        }
        let proc_ref = ProcRef::of(created.pid.as_raw());
        self.map.insert(
            new.id.to_string(),
            Container {
                pid: created.pid,
                proc_ref,
                pending: started_at.is_none().then_some(Pending::Oci),
                started_at,
                oci: Some(handle),
                stdout: Some(created.stdout),
                stderr: created.stderr,
                stdin: created.stdin,
                stdin_buf: Vec::new(),
                stdin_closing: false,
                stdio: new.stdio,
                tee: false,
                log,
                exit_file: new.exit_file.to_path_buf(),
                exited: false,
                cgroup_dirs: new.cgroup_dirs.to_vec(),
                // The OCI runtime runs the spec's hooks itself.
                hooks: None,
            },
        );
        Reply {
            started_at,
            ..ok(proc_ref)
        }
    }
}

/// Attach support: stdin, terminal size, and who wants output.
impl Containers {
    /// Whether an attach to `id` may begin: it runs, and has stdin if that is asked.
    /// Returns the container's tty setting.
    pub(super) fn attachable(&self, id: &str, stdin: bool) -> Result<bool, String> {
        let c = self
            .map
            .get(id)
            .ok_or_else(|| format!("container {id} not found"))?;
        if c.exited {
            return Err(format!("container {id} has exited"));
        }
        if c.pending.is_some() {
            return Err(format!("container {id} is not started"));
        }
        if stdin && !c.stdio.stdin {
            return Err(format!("container {id} was created without stdin"));
        }
        Ok(c.stdio.tty)
    }

    /// Turns the copy of output for attachers on or off.
    pub(super) fn set_tee(&mut self, id: &str, on: bool) {
        if let Some(c) = self.map.get_mut(id) {
            c.tee = on;
        }
    }

    /// Whether `id` takes more input now (false: leave attachers' input unread).
    pub(super) fn stdin_has_room(&self, id: &str) -> bool {
        self.map
            .get(id)
            .is_none_or(|c| c.stdin_buf.len() < STDIN_BUFFER)
    }

    /// Queues input for the container and writes what it takes now. Input for a
    /// container without (or past) stdin is dropped, as a closed pipe would.
    pub(super) fn write_stdin(&mut self, id: &str, data: &[u8]) {
        let Some(c) = self.map.get_mut(id) else {
            return;
        };
        if c.stdin.is_none() || c.stdin_closing {
            return;
        }
        c.stdin_buf.extend_from_slice(data);
        self.flush_stdin(id);
    }

    /// An attach session's stdin ended: with `stdin_once`, the container's stdin is
    /// closed once the queued input is written (CRI `stdin_once`; containerd closes
    /// the stdin FIFO, and for a terminal shuts the console down, which hangs it up).
    pub(super) fn end_stdin(&mut self, id: &str) {
        let Some(c) = self.map.get_mut(id) else {
            return;
        };
        if c.stdio.stdin_once && c.stdin.is_some() {
            c.stdin_closing = true;
            self.flush_stdin(id);
        }
    }

    /// Writes queued input until the container stops taking it.
    pub(super) fn flush_stdin(&mut self, id: &str) {
        let Some(c) = self.map.get_mut(id) else {
            return;
        };
        let Some(fd) = c.stdin.as_ref() else {
            c.stdin_buf.clear();
            return;
        };
        let mut written = 0;
        let mut broken = false;
        while written < c.stdin_buf.len() {
            match nix::unistd::write(fd, &c.stdin_buf[written..]) {
                Ok(n) => written += n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => break,
                // EPIPE (the container closed its stdin), EIO (terminal gone).
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        c.stdin_buf.drain(..written);
        if broken {
            c.stdin_buf.clear();
            c.stdin = None;
        }
        if c.stdin_closing && c.stdin_buf.is_empty() && c.stdin.take().is_some() && c.stdio.tty {
            // The master has a second descriptor (the output one): drop it too, after
            // taking what output is left, so the terminal hangs up.
            self.on_output(id, Stream::Stdout, EXIT_DRAIN);
            if let Some(c) = self.map.get_mut(id)
                && c.stdout.take().is_some()
            {
                c.log.finish(Stream::Stdout);
            }
        }
    }

    /// Containers with input waiting: (container, fd) to poll for POLLOUT.
    pub(super) fn stdin_fds(&self) -> Vec<(String, RawFd)> {
        self.map
            .iter()
            .filter(|(_, c)| !c.stdin_buf.is_empty())
            .filter_map(|(id, c)| c.stdin.as_ref().map(|fd| (id.clone(), fd.as_raw_fd())))
            .collect()
    }

    /// Sets the terminal size (the kernel sends SIGWINCH to the foreground group).
    pub(super) fn resize(&mut self, id: &str, width: u16, height: u16) {
        let Some(c) = self.map.get(id) else { return };
        if !c.stdio.tty {
            return;
        }
        let Some(master) = c.stdout.as_ref() else {
            return;
        };
        let size = libc::winsize {
            ws_col: width,
            ws_row: height,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: `master` is an open pty master; TIOCSWINSZ reads a winsize from the
        // valid pointer.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    }
}

/// A borrowed view of a raw fd for `poll`.
///
/// # Safety
/// `fd` must stay open for `'a`.
pub(super) unsafe fn borrow<'a>(fd: RawFd) -> BorrowedFd<'a> {
    // SAFETY: guaranteed by the caller.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// SIGKILLs every process in `dirs` (not in their children: an exec's own cgroup is
/// crustd's to end). cgroup v2's `cgroup.kill` does it atomically; on v1 the members
/// are listed and signalled, which is enough here because a process in a container
/// whose main process has exited has nobody left to fork for it but itself.
fn kill_cgroup_members(dirs: &[PathBuf]) {
    for dir in dirs {
        if std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
            continue;
        }
        for _ in 0..3 {
            let members: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if members.is_empty() {
                break;
            }
            for pid in members {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{super::ProcessState as P, process_state};

    #[test]
    fn what_the_monitor_reports_of_a_container() {
        for (pending, started_at, exited, want, case) in [
            (
                true,
                None,
                false,
                P::Created,
                "created, waiting for its start",
            ),
            (false, Some(5), false, P::Running, "started, running"),
            (false, Some(5), true, P::Exited, "started, exited"),
            (true, None, true, P::Exited, "killed before it was started"),
            (
                false,
                None,
                false,
                P::StartFailed,
                "start failed, not yet reaped",
            ),
            (false, None, true, P::StartFailed, "start failed, reaped"),
        ] {
            assert_eq!(process_state(pending, started_at, exited), want, "{case}");
        }
    }
}
