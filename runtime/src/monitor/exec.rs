//! `crust-monitor exec`: runs a command inside a running container (ExecSync). crustd
//! starts it with `Command`; it is a fresh single-threaded process, so it may join the
//! container's namespaces (`setns`) and fork into its PID namespace safely.
#![allow(unsafe_code)]

use std::{ffi::CString, fs::File, process::ExitCode};

use nix::{
    sched::{CloneFlags, setns},
    sys::wait::{WaitStatus, waitpid},
    unistd::{ForkResult, chdir, execvpe, fork, getpid},
};

/// Usage: `crust-monitor exec --spec FILE --pid PID [--start-time T] [--tty 1]
/// [--cgroup DIR]... -- CMD [ARG]...`. With `--tty 1` stdin is a unix socket: inside
/// the container the command's process opens a pty from the container's own devpts
/// (its `/dev/ptmx`), sends the master to crustd over the socket and makes the slave
/// its stdio and controlling terminal, as runc's console socket does for `runc exec`.
/// A slave from crustd's (the host's) devpts would not resolve inside the container:
/// `tty` would print "not a tty".
pub fn main(args: &[String]) -> ExitCode {
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("crust exec: {e}");
            ExitCode::from(126)
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let mut spec_path = None;
    let mut pid = None;
    let mut start_time = None;
    let mut cgroups = Vec::new();
    let mut tty = false;
    let mut i = 0;
    let command: Vec<String> = loop {
        match args.get(i).map(String::as_str) {
            Some("--spec") => spec_path = args.get(i + 1).cloned(),
            Some("--pid") => pid = args.get(i + 1).and_then(|p| p.parse::<i32>().ok()),
            Some("--start-time") => {
                start_time = args.get(i + 1).and_then(|p| p.parse::<u64>().ok())
            }
            Some("--cgroup") => cgroups.extend(args.get(i + 1).cloned()),
            Some("--tty") => tty = args.get(i + 1).map(String::as_str) == Some("1"),
            Some("--") => break args[i + 1..].to_vec(),
            _ => return Err(
                "usage: crust-monitor exec --spec FILE --pid PID [--cgroup DIR]... -- CMD [ARG]..."
                    .into(),
            ),
        }
        i += 2;
    };
    let spec_path = spec_path.ok_or("--spec is required")?;
    let pid = pid.ok_or("--pid is required")?;
    if command.is_empty() {
        return Err("no command".into());
    }
    let spec: oci_spec::runtime::Spec = std::fs::read(&spec_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("read spec {spec_path}: {e}"))?;
    let process = spec.process().clone().ok_or("spec has no process")?;
    let seccomp = spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().clone())
        .map(|p| super::seccomp::compile(&p))
        .transpose()?;

    // The exec's own cgroup (below the container's), so crustd can kill its whole tree.
    for dir in &cgroups {
        std::fs::write(format!("{dir}/cgroup.procs"), getpid().to_string())
            .map_err(|e| format!("join cgroup {dir}: {e}"))?;
    }
    // Open every namespace first: after joining the mount namespace, /proc/<pid> of
    // the host is out of reach. The mount namespace comes last.
    let kinds = [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        // The container's own cgroup namespace where it has one (cgroup v2), else the
        // one it shares with the host: joining that is a no-op.
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let mut files = Vec::new();
    for (name, flag) in kinds {
        let path = format!("/proc/{pid}/ns/{name}");
        files.push((
            File::open(&path).map_err(|e| format!("open {path}: {e}"))?,
            flag,
            path,
        ));
    }
    // The namespace files were opened from a process that still had the container's
    // start time, so they are the container's even if its PID is reused right after.
    if let Some(expected) = start_time
        && crate::proc::start_time(pid) != Some(expected)
    {
        return Err(format!("container process {pid} is gone"));
    }
    // The container's user namespace (the pod's, or the host's: then joining is a
    // no-op) is joined last, in the child, as the launcher does: after the mount and
    // PID namespaces (owned by the host's user namespace) and the rlimits.
    let userns_path = format!("/proc/{pid}/ns/user");
    let userns = File::open(&userns_path).map_err(|e| format!("open {userns_path}: {e}"))?;
    for (file, flag, path) in files {
        setns(file, flag).map_err(|e| format!("join {path}: {e}"))?;
    }
    let uid_maps = spec.linux().as_ref().and_then(|l| l.uid_mappings().clone());

    let env: Vec<CString> = process
        .env()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| CString::new(e).ok())
        .collect();
    let argv: Vec<CString> = command
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| "argument contains NUL"))
        .collect::<Result<_, _>>()?;
    // The exec joins the container's AppArmor profile / SELinux label (runc's
    // `setns_init`). Written by the child: the request belongs to the task that execs.
    let lsm = super::lsm::exec_attrs(&process)?;
    // A PID namespace joined with setns applies to children only: fork into it.
    // SAFETY: this process is single-threaded (nothing spawned threads).
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            let result = (|| -> Result<(), String> {
                if tty {
                    // Before the LSM profile and seccomp, as runc's setns init sets up
                    // its console first. A session of its own with the pty as
                    // controlling terminal: the shell gets job control, ^C, SIGWINCH.
                    let uid = super::launch::host_id(uid_maps.as_ref(), process.user().uid());
                    super::launch::setup_terminal(0, uid)?;
                }
                // Only stdio reaches the command (CVE-2024-21626): our own start marked
                // what we inherited, this also covers anything opened since. Before
                // seccomp, which may not allow close_range.
                crate::fds::mark_cloexec_from(3);
                // The same confinement as the container's own process, in runc's order.
                // /proc is the container's here: `lsm::apply` writes only to procfs.
                super::lsm::apply(&lsm)?;
                super::process_limits::apply(&process)?;
                super::launch::join_userns(&userns)?;
                let no_new_privs = process.no_new_privileges() == Some(true);
                if let (Some(programs), false) = (&seccomp, no_new_privs) {
                    super::seccomp::apply(programs)?;
                }
                super::launch::apply_identity(&process)?;
                super::launch::reset_signals()?;
                if let (Some(programs), true) = (&seccomp, no_new_privs) {
                    super::seccomp::apply(programs)?;
                }
                chdir(process.cwd().as_path())
                    .map_err(|e| format!("chdir {}: {e}", process.cwd().display()))?;
                if let Some(path) = env
                    .iter()
                    .filter_map(|e| e.to_str().ok())
                    .find_map(|e| e.strip_prefix("PATH="))
                {
                    // SAFETY: single-threaded child; nothing else reads the environment.
                    unsafe { std::env::set_var("PATH", path) };
                }
                let err = execvpe(&argv[0], &argv, &env).unwrap_err();
                Err(format!("exec {:?}: {err}", command[0]))
            })();
            if let Err(e) = result {
                eprintln!("crust exec: {e}");
            }
            // 127: command not found / not runnable, as shells report it.
            std::process::exit(127)
        }
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(ExitCode::from(code as u8)),
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    return Ok(ExitCode::from((128 + sig as i32) as u8));
                }
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("wait: {e}")),
            }
        },
    }
}
