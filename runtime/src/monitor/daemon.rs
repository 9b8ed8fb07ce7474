//! The monitor process itself. Single-threaded by construction (no async runtime, no
//! thread spawns), which is what makes its `fork` calls safe.
#![allow(unsafe_code)]

use std::{
    fs::{self, File, OpenOptions},
    io::{BufRead, BufReader, Read, Write},
    os::{
        fd::{AsFd, AsRawFd, OwnedFd},
        unix::net::{UnixListener, UnixStream},
    },
    path::Path,
    process::ExitCode,
    time::Duration,
};

use nix::{
    fcntl::OFlag,
    mount::{MntFlags, MsFlags, mount, umount2},
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sched::{CloneFlags, unshare},
    sys::{
        prctl,
        signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask},
        signalfd::{SfdFlags, SignalFd},
        stat::Mode,
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::{ForkResult, Pid, fork, getpid, pipe2, sethostname, setsid},
};

use super::{MonitorPids, MonitorSpec, Reply, Request, StartMessage};
use crate::proc::ProcRef;

/// Connections answered in one loop turn before output gets its turn again.
const CONNECTIONS_PER_TURN: usize = 16;

/// Loop turns in a row that serve only connections; the next one drains output and
/// attachers even with connections waiting. Exits are reaped in every turn.
const CONNECTION_TURNS_IN_A_ROW: u32 = 4;

/// Environment variable carrying the PID of the crustd that started the monitor.
pub const PARENT_ENV: &str = "CRUST_MONITOR_PARENT";

/// Entry point of the `crust-monitor` binary.
pub fn main() -> ExitCode {
    // Nothing we inherited beyond stdio may reach a container, an exec or runc
    // (CVE-2024-21626 class), nor be held open for the pod's lifetime (a copy of
    // another session's pty or pipe). crustd passes us none on purpose and marks its
    // own inherited ones, but we may be started by anything. Nothing of ours is open
    // yet; everything we open later is close-on-exec.
    crate::fds::close_from(3);
    // Our files (pins, CRI logs, exit records) get 0755/0644 whatever umask crustd
    // had: under 000 the pins directory was world-writable, and a symlink planted
    // there would have been followed by the pin's create.
    nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("exec") {
        return super::exec::main(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some("keep") {
        // A systemd scope's anchor (see `cgroup::systemd`): it only waits, until the
        // scope is stopped. The unit name after `keep` is for `ps`.
        loop {
            nix::unistd::pause();
        }
    }
    let spec_path = match args.as_slice() {
        [_, flag, path] if flag == "--spec" => path.clone(),
        _ => {
            eprintln!("usage: crust-monitor --spec FILE");
            return ExitCode::from(2);
        }
    };
    let spec: MonitorSpec = match fs::read(&spec_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(e) => {
            return report_and_exit(&StartMessage::Error(format!("read spec {spec_path}: {e}")));
        }
    };
    // Leave crustd's cgroup first, so no pod or daemon limit ever applies to us.
    for dir in &spec.monitor_cgroup_dirs {
        let procs = dir.join("cgroup.procs");
        if let Err(e) = fs::write(&procs, getpid().to_string()) {
            return report_and_exit(&StartMessage::Error(format!(
                "join monitor cgroup {}: {e}",
                procs.display()
            )));
        }
    }

    // If crustd dies while we set up, so do we: recovery then rolls the pod back, and
    // a monitor finishing setup afterwards would leak what it made. crustd passes its
    // PID so a launch that outlived it (we were reparented) can tell.
    let _ = prctl::set_pdeathsig(Signal::SIGKILL);
    if let Ok(parent) = std::env::var(PARENT_ENV)
        && parent != nix::unistd::getppid().to_string()
    {
        return report_and_exit(&StartMessage::Error(format!(
            "crustd (pid {parent}) exited before the monitor started"
        )));
    }
    let launcher = getpid();

    let (read_end, write_end) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return report_and_exit(&StartMessage::Error(format!("pipe: {e}"))),
    };
    // SAFETY: this process is single-threaded here (nothing has spawned a thread), so
    // the child may run arbitrary code after fork.
    match unsafe { fork() } {
        Err(e) => report_and_exit(&StartMessage::Error(format!("fork: {e}"))),
        Ok(ForkResult::Parent { .. }) => {
            drop(write_end);
            // The daemon half writes exactly one message, then closes its end.
            let mut line = String::new();
            let _ = File::from(read_end).read_to_string(&mut line);
            let message = serde_json::from_str(line.trim()).unwrap_or_else(|_| {
                StartMessage::Error(format!("monitor died during setup (said {line:?})"))
            });
            report_and_exit(&message)
        }
        Ok(ForkResult::Child) => {
            drop(read_end);
            // Until we report ready, the launcher's death (and so crustd's) ends us too.
            let _ = prctl::set_pdeathsig(Signal::SIGKILL);
            if nix::unistd::getppid() != launcher {
                return ExitCode::FAILURE;
            }
            daemon(spec, write_end)
        }
    }
}

fn report_and_exit(message: &StartMessage) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string(message).expect("message serializes")
    );
    let _ = out.flush();
    match message {
        StartMessage::Ready(_) => ExitCode::SUCCESS,
        StartMessage::Error(_) => ExitCode::FAILURE,
    }
}

/// What the running monitor tracks.
struct Monitor {
    spec: MonitorSpec,
    init: Option<ProcRef>,
    init_exited: bool,
    containers: super::containers::Containers,
    attach: super::attach::Attachers,
    /// Connections refused by the peer check so far.
    refused: u64,
}

fn daemon(spec: MonitorSpec, ready: OwnedFd) -> ExitCode {
    // Our own session: no terminal, no signals from crustd's process group. stdin and
    // stdout go to /dev/null so crustd's pipe closes; stderr stays (the monitor log).
    let _ = setsid();
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(null.as_fd());
        let _ = nix::unistd::dup2_stdout(null.as_fd());
    }
    let mut ready = File::from(ready);
    match setup(&spec, &ready) {
        Ok((listener, init)) => {
            let pids = MonitorPids {
                monitor: ProcRef::of(getpid().as_raw()).expect("own /proc entry"),
                init,
            };
            let _ = write_pid_file(&spec, &pids);
            // From now on we outlive crustd and the launcher, by design.
            let _ = prctl::set_pdeathsig(None);
            let _ = writeln!(
                ready,
                "{}",
                serde_json::to_string(&StartMessage::Ready(pids)).expect("serializes")
            );
            drop(ready);
            let mut monitor = Monitor {
                spec,
                init,
                init_exited: false,
                containers: Default::default(),
                attach: Default::default(),
                refused: 0,
            };
            monitor.serve(listener);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crust-monitor {}: setup failed: {e}", spec.pod_id);
            let _ = writeln!(
                ready,
                "{}",
                serde_json::to_string(&StartMessage::Error(e)).expect("serializes")
            );
            ExitCode::FAILURE
        }
    }
}

fn write_pid_file(spec: &MonitorSpec, pids: &MonitorPids) -> std::io::Result<()> {
    let dir = spec.pid_file.parent().expect("pid file has a directory");
    let name = spec
        .pid_file
        .file_name()
        .expect("pid file has a name")
        .to_string_lossy();
    // Atomic but not fsync'd: the file is under crustd's volatile state directory
    // (`/run`) and means nothing after a reboot; a crustd that crashed and restarts
    // reads it from the page cache.
    crust_state::replace_atomic(dir, &name, &serde_json::to_vec(pids).expect("serializes"))
}

/// Creates and pins the namespaces, applies sysctls, starts the pod init and binds the
/// control socket. Partial work is undone by crustd's rollback (it owns the pins and
/// cgroups), so errors just return.
fn setup(spec: &MonitorSpec, ready: &File) -> Result<(UnixListener, Option<ProcRef>), String> {
    prctl::set_child_subreaper(true).map_err(|e| format!("become child subreaper: {e}"))?;
    let mut flags = CloneFlags::empty();
    if spec.new_net {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if spec.new_ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if spec.new_uts {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    // With a pod user namespace and a shared PID namespace, the init is started
    // while the namespaces are made (see `userns`); its setup is watched below.
    let mut userns_init = None;
    if let Some((uid_map, gid_map)) = &spec.userns {
        let plan = if spec.new_pid {
            let name = spec.pins_dir.file_name().ok_or("pins dir has no name")?;
            Some(super::pod_init::plan(Path::new(name))?)
        } else {
            None
        };
        let (plan, watch) = match plan {
            Some((plan, watch)) => (Some((plan, ready.as_raw_fd())), Some(watch)),
            None => (None, None),
        };
        let pid = super::userns::make_pod_namespaces(spec, flags, (uid_map, gid_map), pin, plan)?;
        userns_init = pid.zip(watch);
    } else {
        if let Some(netns) = &spec.join_net {
            let ns = File::open(netns).map_err(|e| format!("open {}: {e}", netns.display()))?;
            nix::sched::setns(ns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("join the pod network namespace {}: {e}", netns.display()))?;
        }
        unshare(flags).map_err(|e| format!("unshare namespaces: {e}"))?;
        if spec.new_net {
            loopback_up().map_err(|e| format!("bring up lo in the pod network namespace: {e}"))?;
        }
        if spec.new_uts {
            sethostname(&spec.hostname)
                .map_err(|e| format!("set hostname {:?}: {e}", spec.hostname))?;
        }
        // /proc/sys/net and the IPC sysctls resolve to the namespaces of the process
        // that opens them, so these writes land in the pod's new namespaces.
        for (name, value) in &spec.sysctls {
            let path = Path::new("/proc/sys").join(sysctl_path(name));
            fs::write(&path, value).map_err(|e| format!("sysctl {name}={value}: {e}"))?;
        }
        fs::create_dir_all(&spec.pins_dir)
            .map_err(|e| format!("create {}: {e}", spec.pins_dir.display()))?;
        for (wanted, ns) in [
            (spec.new_net, "net"),
            (spec.new_ipc, "ipc"),
            (spec.new_uts, "uts"),
        ] {
            if wanted {
                pin(&format!("/proc/self/ns/{ns}"), &spec.pins_dir.join(ns))?;
            }
        }
    }

    let mut init = None;
    if spec.new_pid {
        let child = match userns_init {
            Some((child, watch)) => {
                watch.wait()?;
                child
            }
            None => {
                unshare(CloneFlags::CLONE_NEWPID)
                    .map_err(|e| format!("unshare pid namespace: {e}"))?;
                // The init's empty root is mounted over the pins directory, in its
                // own mount namespace only.
                let (plan, watch) = super::pod_init::plan(&spec.pins_dir)?;
                // SAFETY: still single-threaded, so the child is a complete copy of a
                // process with no other threads and no held locks; it never returns
                // into our code.
                match unsafe { fork() }.map_err(|e| format!("fork pod init: {e}"))? {
                    ForkResult::Child => super::pod_init::run(plan, ready.as_raw_fd()),
                    ForkResult::Parent { child } => {
                        drop(plan);
                        watch.wait()?;
                        child
                    }
                }
            }
        };
        let proc_ref = ProcRef::of(child.as_raw()).ok_or("pod init vanished")?;
        init = Some(proc_ref);
        for dir in &spec.pod_cgroup_dirs {
            let procs = dir.join("cgroup.procs");
            fs::write(&procs, child.to_string())
                .map_err(|e| format!("place pod init in {}: {e}", procs.display()))?;
        }
        pin(&format!("/proc/{child}/ns/pid"), &spec.pins_dir.join("pid"))?;
    }

    let _ = fs::remove_file(&spec.socket);
    // 0600 whatever umask crustd was started with: whoever may connect can signal
    // the pod's containers or have one created from a spec path (a bind under umask
    // 000 made it 0777). Single-threaded, so the umask change races with nothing.
    let umask = nix::sys::stat::umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(&spec.socket);
    nix::sys::stat::umask(umask);
    let listener = bound.map_err(|e| format!("bind {}: {e}", spec.socket.display()))?;
    Ok((listener, init))
}

/// Sets `lo` up in our (new) network namespace, as every pod expects 127.0.0.1 to work.
/// The `SIOCGIFFLAGS`/`SIOCSIFFLAGS` ioctls need no netlink machinery.
pub(crate) fn loopback_up() -> Result<(), nix::Error> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the socket is open and `req` is a valid ifreq naming "lo"; the kernel
    // writes only within it.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: reading and writing the flags member of the union the kernel just filled.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// `net.ipv4.ip_forward` -> `net/ipv4/ip_forward`. Names already using `/` (allowed by
/// Kubernetes) are taken as they are.
pub fn sysctl_path(name: &str) -> String {
    if name.contains('/') {
        name.to_string()
    } else {
        name.replace('.', "/")
    }
}

/// Keeps a namespace alive without a process by bind-mounting its nsfs file.
fn pin(source: &str, target: &Path) -> Result<(), String> {
    File::create(target).map_err(|e| format!("create pin {}: {e}", target.display()))?;
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("pin {source} at {}: {e}", target.display()))
}

impl Monitor {
    fn serve(&mut self, listener: UnixListener) {
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
        ] {
            mask.add(s);
        }
        let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None);
        let signals =
            match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
                Ok(fd) => fd,
                Err(e) => {
                    eprintln!("crust-monitor {}: signalfd: {e}", self.spec.pod_id);
                    return;
                }
            };
        let _ = listener.set_nonblocking(true);
        let stack = super::stack_trim::StackTrim::main_thread();
        let mut connection_turns = 0u32;
        loop {
            let outputs = self.containers.output_fds();
            let mut fds = vec![
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            ];
            let inputs = self.containers.stdin_fds();
            let attachers = self.attach.interests(&self.containers);
            let watched = outputs
                .iter()
                .map(|(_, _, fd)| (*fd, PollFlags::POLLIN))
                .chain(inputs.iter().map(|(_, fd)| (*fd, PollFlags::POLLOUT)))
                .chain(attachers.iter().map(|a| {
                    let mut flags = PollFlags::empty();
                    flags.set(PollFlags::POLLIN, a.read);
                    flags.set(PollFlags::POLLOUT, a.write);
                    (a.fd, flags)
                }));
            for (fd, flags) in watched {
                // SAFETY: the container map and the attachers own these fds and are
                // not touched until the poll set is dropped below.
                fds.push(PollFd::new(unsafe { super::containers::borrow(fd) }, flags));
            }
            if poll(&mut fds, PollTimeout::NONE).is_err() {
                continue;
            }
            let ready = |f: &PollFd| {
                f.revents().is_some_and(|r| {
                    r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                })
            };
            let signal_ready = ready(&fds[1]);
            let conn_ready = ready(&fds[0]);
            let readable: Vec<usize> = (0..outputs.len()).filter(|i| ready(&fds[i + 2])).collect();
            let base = 2 + outputs.len();
            let writable = |f: &PollFd| {
                f.revents().is_some_and(|r| {
                    r.intersects(PollFlags::POLLOUT | PollFlags::POLLHUP | PollFlags::POLLERR)
                })
            };
            let stdin_ready: Vec<usize> = (0..inputs.len())
                .filter(|i| writable(&fds[base + i]))
                .collect();
            let base = base + inputs.len();
            let attach_ready: Vec<(usize, bool, bool)> = (0..attachers.len())
                .map(|i| (i, ready(&fds[base + i]), writable(&fds[base + i])))
                .filter(|(_, r, w)| *r || *w)
                .collect();
            drop(fds);
            // Exits first, in every turn: a StopContainer or RemoveContainer waits for
            // the exit record, and under constant connection traffic (probes, stats,
            // kubelet's status polls) a turn that served connections and skipped this
            // left containers unreaped ("still running after SIGKILL").
            if signal_ready && self.drain_signals(&signals) {
                return self.shutdown();
            }
            // Then the control socket: crustd's requests (create, stop, reopen the
            // log) must not wait behind output, whatever its rate. A request may add or
            // remove containers and attachers, so a turn that served one polls afresh;
            // after a few such turns in a row, output and attachers get one turn.
            if conn_ready && connection_turns < CONNECTION_TURNS_IN_A_ROW {
                connection_turns += 1;
                for _ in 0..CONNECTIONS_PER_TURN {
                    let Ok((conn, _)) = listener.accept() else {
                        break;
                    };
                    if !self.peer_allowed(&conn) {
                        // Closed unread: nothing a stranger sends is parsed.
                        continue;
                    }
                    if self.handle(conn) {
                        return self.shutdown();
                    }
                }
                self.attach.dispatch(&mut self.containers);
                if let Some(stack) = &stack {
                    stack.release_below_here();
                }
                continue;
            }
            connection_turns = 0;
            // Then one bounded chunk per ready stream: a stream that is never empty
            // (`yes`) gets its turn and no more (issue 13, item 8).
            for i in readable {
                let (id, stream, _) = &outputs[i];
                self.containers
                    .on_output(id, *stream, super::containers::OUTPUT_CHUNK);
            }
            for i in stdin_ready {
                self.containers.flush_stdin(&inputs[i].0);
            }
            for (i, r, w) in attach_ready {
                self.attach.on_ready(i, r, w, &mut self.containers);
            }
            // Output and exits reach attachers in the order they happened.
            self.attach.dispatch(&mut self.containers);
        }
    }

    /// Reads every pending signal: SIGCHLD reaps, SIGTERM/SIGINT ask for shutdown
    /// (returns true, as a shutdown request does).
    fn drain_signals(&mut self, signals: &SignalFd) -> bool {
        while let Ok(Some(info)) = signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => self.reap(),
                Ok(Signal::SIGHUP) | Err(_) => {}
                Ok(_) => return true,
            }
        }
        false
    }

    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    if self.containers.on_exit(status) {
                        continue;
                    }
                    if let (Some(pid), Some(init)) = (status.pid(), self.init)
                        && pid.as_raw() == init.pid
                    {
                        eprintln!(
                            "crust-monitor {}: pod init exited: {status:?}",
                            self.spec.pod_id
                        );
                        self.init_exited = true;
                    }
                }
            }
        }
    }

    /// Only root (crustd) and our own user may talk to us: the socket's 0600 mode is
    /// the first fence, but a directory or mode loosened by hand, or a socket reached
    /// through a bind mount, must not open the pod to every local user. The kernel's
    /// SO_PEERCRED records who connected. Refusals are logged sparsely (1st, 2nd, 4th,
    /// ...): a refused peer must not be able to fill the monitor's log.
    fn peer_allowed(&mut self, conn: &UnixStream) -> bool {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        let uid = match getsockopt(conn, PeerCredentials) {
            Ok(cred) => cred.uid(),
            Err(_) => u32::MAX,
        };
        if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
            return true;
        }
        self.refused += 1;
        if self.refused.is_power_of_two() {
            eprintln!(
                "crust-monitor {}: refused a connection from uid {uid} ({} so far)",
                self.spec.pod_id, self.refused
            );
        }
        false
    }

    /// Answers one connection. Returns true when the monitor should shut down.
    fn handle(&mut self, conn: UnixStream) -> bool {
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        let mut reader = BufReader::new(&conn);
        if reader.read_line(&mut line).is_err() {
            return false;
        }
        // An attacher may send frames right after its request line.
        let early = reader.buffer().to_vec();
        drop(reader);
        let init_alive = self.init.map(|_| !self.init_exited);
        let (reply, stop) = match serde_json::from_str::<Request>(line.trim()) {
            Ok(Request::Ping) => (
                Reply {
                    ok: true,
                    error: None,
                    init_alive,
                    pid: None,
                    started_at: None,
                    process: None,
                },
                false,
            ),
            Ok(Request::Shutdown) => (
                Reply {
                    ok: true,
                    error: None,
                    init_alive,
                    pid: None,
                    started_at: None,
                    process: None,
                },
                true,
            ),
            Ok(Request::CreateContainer {
                id,
                spec,
                log_path,
                exit_file,
                cgroup_dirs,
                overlay,
                stdin,
                stdin_once,
                tty,
                oci,
                max_log_line,
                restore,
            }) => (
                self.containers.create(super::containers::NewContainer {
                    max_log_line,
                    restore: restore.as_ref(),
                    id: &id,
                    spec: &spec,
                    log_path: &log_path,
                    exit_file: &exit_file,
                    cgroup_dirs: &cgroup_dirs,
                    overlay: overlay.as_ref(),
                    oci: oci.as_deref(),
                    stdio: super::containers::StdioConfig {
                        stdin,
                        stdin_once,
                        tty,
                    },
                }),
                false,
            ),
            Ok(Request::Attach {
                id,
                stdin,
                stdout,
                stderr,
            }) => {
                let session = (id, stdin, stdout, stderr);
                self.attach.open(&mut self.containers, conn, early, session);
                return false;
            }
            Ok(Request::StartContainer { id }) => (self.containers.start(&id), false),
            Ok(Request::ContainerStatus { id }) => (self.containers.status(&id), false),
            Ok(Request::Signal { id, signal }) => (self.containers.signal(&id, signal), false),
            Ok(Request::ReopenLog { id }) => (self.containers.reopen_log(&id), false),
            Ok(Request::RemoveContainer { id }) => (self.containers.remove(&id), false),
            Err(e) => (
                Reply {
                    ok: false,
                    error: Some(format!("bad request: {e}")),
                    init_alive,
                    pid: None,
                    started_at: None,
                    process: None,
                },
                false,
            ),
        };
        if stop {
            // Kill before answering: when crustd hears "ok", the pod's processes are gone.
            self.kill_pod();
        }
        let mut conn = conn;
        let _ = writeln!(
            conn,
            "{}",
            serde_json::to_string(&reply).expect("reply serializes")
        );
        // Parsing an OCI spec allocates a lot briefly; hand the freed heap back so a
        // long-lived monitor stays small (glibc keeps it otherwise).
        // SAFETY: malloc_trim only releases free memory; no pointers are involved.
        unsafe { libc::malloc_trim(0) };
        stop
    }

    fn kill_pod(&mut self) {
        // Containers first (their exits are recorded), then the PID namespace.
        self.containers.kill_all();
        for pid in self.containers.running() {
            if let Ok(status) = waitpid(pid, None) {
                self.containers.on_exit(status);
            }
        }
        // The OCI runtime's state and the host-side rootfs mounts go with the pod.
        self.containers.delete_oci_all();
        if let Some(init) = self.init
            && !self.init_exited
        {
            // Killing PID 1 of a PID namespace kills every process in it.
            let _ = kill(Pid::from_raw(init.pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(init.pid), None);
            self.init_exited = true;
        }
        self.reap();
    }

    fn shutdown(&mut self) {
        self.kill_pod();
        // Best effort: attachers hear the exits if their sockets take the frames now.
        self.attach.dispatch(&mut self.containers);
        let _ = fs::remove_file(&self.spec.socket);
        // The pins are crustd's to remove (it must do so even when we are dead), but
        // unmounting here too makes a clean stop cheaper; both are idempotent.
        for ns in ["net", "ipc", "uts", "pid", "user"] {
            let _ = umount2(&self.spec.pins_dir.join(ns), MntFlags::MNT_DETACH);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_names_become_paths() {
        assert_eq!(sysctl_path("net.ipv4.ip_forward"), "net/ipv4/ip_forward");
        assert_eq!(
            sysctl_path("kernel.shm_rmid_forced"),
            "kernel/shm_rmid_forced"
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/forwarding"),
            "net/ipv4/conf/eth0.100/forwarding"
        );
    }
}
