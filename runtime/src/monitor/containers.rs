//! The monitor's containers: create/start through the launcher, copy their output into
//! CRI log files, and record each exit in a file before anyone is told.
#![allow(unsafe_code)]

use std::{
    collections::HashMap,
    fs::File,
    io::{ErrorKind, Read},
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
    launch::{self, LaunchConfig, Launched},
};
use crate::proc::ProcRef;

/// Longest log line before it is split into `P` records (containerd's default).
const MAX_LOG_LINE: usize = 16 * 1024;

struct Container {
    pid: Pid,
    proc_ref: Option<ProcRef>,
    /// Until started: the start and status pipes.
    pending: Option<(OwnedFd, OwnedFd)>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    log: CriLog,
    exit_file: PathBuf,
    exited: bool,
}

/// All containers of this pod.
#[derive(Default)]
pub(super) struct Containers {
    map: HashMap<String, Container>,
}

fn ok(pid: Option<ProcRef>) -> Reply {
    Reply {
        ok: true,
        error: None,
        init_alive: None,
        pid,
        started_at: None,
    }
}

fn fail(error: String) -> Reply {
    Reply {
        ok: false,
        error: Some(error),
        init_alive: None,
        pid: None,
        started_at: None,
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
    pub(super) fn create(
        &mut self,
        id: &str,
        spec: &Path,
        log_path: &Path,
        exit_file: &Path,
        cgroup_dirs: &[PathBuf],
        overlay: Option<&super::OverlayMount>,
    ) -> Reply {
        if self.map.contains_key(id) {
            return fail(format!("container {id} already exists in this monitor"));
        }
        let spec = match std::fs::read(spec)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                serde_json::from_slice::<oci_spec::runtime::Spec>(&b).map_err(|e| e.to_string())
            }) {
            Ok(spec) => spec,
            Err(e) => return fail(format!("read spec {}: {e}", spec.display())),
        };
        let log = match CriLog::open(log_path, MAX_LOG_LINE) {
            Ok(log) => log,
            Err(e) => return fail(format!("open log {}: {e}", log_path.display())),
        };
        match launch::create(&LaunchConfig {
            spec: &spec,
            cgroup_dirs,
            overlay,
        }) {
            Ok(Launched {
                pid,
                start,
                status,
                stdout,
                stderr,
            }) => {
                set_nonblocking(&stdout);
                set_nonblocking(&stderr);
                let proc_ref = ProcRef::of(pid.as_raw());
                self.map.insert(
                    id.to_string(),
                    Container {
                        pid,
                        proc_ref,
                        pending: Some((start, status)),
                        stdout: Some(stdout),
                        stderr: Some(stderr),
                        log,
                        exit_file: exit_file.to_path_buf(),
                        exited: false,
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
        let Some((start, status)) = c.pending.take() else {
            return fail(format!("container {id} was already started"));
        };
        let started_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        match launch::start(&start, &status) {
            Ok(()) => Reply {
                started_at: Some(started_at),
                ..ok(c.proc_ref)
            },
            Err(e) => fail(e),
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
        self.map.remove(id);
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

    /// Copies whatever the pipe holds into the log; closes it at EOF.
    pub(super) fn on_output(&mut self, id: &str, stream: Stream) {
        let Some(c) = self.map.get_mut(id) else {
            return;
        };
        let slot = match stream {
            Stream::Stdout => &mut c.stdout,
            Stream::Stderr => &mut c.stderr,
        };
        let Some(fd) = slot.as_ref() else { return };
        // SAFETY: the fd is owned by `slot` and stays open while this File view lives;
        // the view is forgotten, never closed.
        let mut file = unsafe_view(fd.as_raw_fd());
        let mut buf = [0u8; 64 * 1024];
        let eof = loop {
            match file.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => c.log.write(stream, &buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break true,
            }
        };
        std::mem::forget(file);
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
        // Output still in the pipes belongs to the log before the exit is visible.
        for stream in [Stream::Stdout, Stream::Stderr] {
            self.on_output(&id, stream);
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
        let record = ExitRecord {
            exit_code,
            signal,
            finished_at,
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
        true
    }

    /// SIGKILLs every container still running (pod shutdown).
    pub(super) fn kill_all(&mut self) {
        for c in self.map.values().filter(|c| !c.exited) {
            let _ = kill(c.pid, Signal::SIGKILL);
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

fn unsafe_view(fd: RawFd) -> File {
    use std::os::fd::FromRawFd;
    // SAFETY: see the caller; the File is forgotten, so it never closes `fd`.
    unsafe { File::from_raw_fd(fd) }
}

/// A borrowed view of a raw fd for `poll`.
///
/// # Safety
/// `fd` must stay open for `'a`.
pub(super) unsafe fn borrow<'a>(fd: RawFd) -> BorrowedFd<'a> {
    // SAFETY: guaranteed by the caller.
    unsafe { BorrowedFd::borrow_raw(fd) }
}
