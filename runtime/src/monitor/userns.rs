//! The pod's user namespace (KEP-127, CRI `userns_options` mode POD), made before its
//! net/IPC/UTS namespaces so that it owns them: the pod's root then has
//! CAP_NET_ADMIN over its own network (and sysfs can be mounted for it) but nothing
//! over the host's. CRI-O orders it the same way (user namespace first, the others
//! created inside it); containerd 2.x has runc create the sandbox's namespaces from
//! inside the new user namespace, to the same effect.
//!
//! The monitor itself must stay in the host's user namespace (it mounts rootfs
//! overlays, writes cgroups and pins namespaces for the pod), so a short-lived child
//! does the unsharing: it enters a new user namespace, the monitor writes its
//! `uid_map`/`gid_map` (as host root, so `setgroups` stays allowed: containers need it
//! for their supplemental groups), the child becomes the namespace's root and
//! unshares net/IPC/UTS (and PID, for a shared PID namespace) from there, sets `lo`
//! up, the hostname and the sysctls, and the monitor pins all four from
//! `/proc/<child>/ns/` and then joins net/IPC/UTS itself (as host root it may), and
//! has its children born in the new PID namespace (the pod init first, as its PID 1),
//! so everything after this behaves as without a user namespace.
#![allow(unsafe_code)]

use std::{
    fs::{self, File},
    io::{Read, Write},
    os::fd::RawFd,
    path::Path,
};

use nix::{
    fcntl::OFlag,
    sched::{CloneFlags, setns, unshare},
    sys::wait::waitpid,
    unistd::{ForkResult, Gid, Pid, Uid, fork, pipe2, sethostname, setresgid, setresuid},
};

use super::{MonitorSpec, pod_init::Plan};

/// Makes the pod's user namespace and, inside it, the namespaces `flags` names;
/// pins them all under `spec.pins_dir` and joins the non-user ones. `pin` bind-mounts
/// an nsfs file. With `init` (a shared PID namespace: the init's plan, made with a
/// root relative to `spec.pins_dir`'s parent, and the monitor's ready pipe), the PID
/// namespace is made in the user namespace too, its PID 1 is the pod init (our child,
/// whose pid is returned) and our next children are born in it. Partial work (pins)
/// is undone by crustd's rollback.
pub(super) fn make_pod_namespaces(
    spec: &MonitorSpec,
    flags: CloneFlags,
    (uid_map, gid_map): (&str, &str),
    pin: impl Fn(&str, &Path) -> Result<(), String>,
    init: Option<(Plan, RawFd)>,
) -> Result<Option<Pid>, String> {
    fs::create_dir_all(&spec.pins_dir)
        .map_err(|e| format!("create {}: {e}", spec.pins_dir.display()))?;
    let (to_child_r, to_child_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (from_child_r, from_child_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let with_init = init.is_some();
    // SAFETY: the monitor is single-threaded, so the child is a complete copy with no
    // other threads and no held locks; it only runs `child` and exits.
    let child = match unsafe { fork() }.map_err(|e| format!("fork userns child: {e}"))? {
        ForkResult::Child => {
            drop((to_child_w, from_child_r));
            let mut report = File::from(from_child_w);
            let mut wait = File::from(to_child_r);
            let code = match child(spec, flags, &mut report, &mut wait, init) {
                Ok(()) => 0,
                Err(e) => {
                    let _ = report.write_all(format!("E{e}").as_bytes());
                    1
                }
            };
            std::process::exit(code)
        }
        ForkResult::Parent { child } => child,
    };
    // Our copy of the init's status pipe: its reader waits for EOF.
    drop(init);
    drop((to_child_r, from_child_w));
    let mut go = File::from(to_child_w);
    let mut reports = File::from(from_child_r);
    let result = parent(
        spec,
        child,
        (uid_map, gid_map),
        &pin,
        &mut go,
        &mut reports,
        with_init,
    );
    if result.is_err() {
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
    }
    drop(go);
    let _ = waitpid(child, None);
    result
}

fn parent(
    spec: &MonitorSpec,
    child: Pid,
    (uid_map, gid_map): (&str, &str),
    pin: &impl Fn(&str, &Path) -> Result<(), String>,
    go: &mut File,
    reports: &mut File,
    with_init: bool,
) -> Result<Option<Pid>, String> {
    expect(reports, b'U')?;
    for (file, map) in [("uid_map", uid_map), ("gid_map", gid_map)] {
        let path = format!("/proc/{child}/{file}");
        // One write: the kernel takes the whole map at once, and only once.
        fs::write(&path, map).map_err(|e| format!("write {path} ({map:?}): {e}"))?;
    }
    go.write_all(b"G")
        .map_err(|e| format!("wake userns child: {e}"))?;
    expect(reports, b'N')?;
    let init = if with_init {
        let mut pid = [0u8; 4];
        reports
            .read_exact(&mut pid)
            .map_err(|e| format!("read the pod init's pid from the userns child: {e}"))?;
        Some(Pid::from_raw(i32::from_le_bytes(pid)))
    } else {
        None
    };
    let mut joined = Vec::new();
    for (wanted, ns, flag) in [
        (true, "user", CloneFlags::CLONE_NEWUSER),
        (spec.new_net, "net", CloneFlags::CLONE_NEWNET),
        (spec.new_ipc, "ipc", CloneFlags::CLONE_NEWIPC),
        (spec.new_uts, "uts", CloneFlags::CLONE_NEWUTS),
    ] {
        if wanted {
            let target = spec.pins_dir.join(ns);
            pin(&format!("/proc/{child}/ns/{ns}"), &target)?;
            if flag != CloneFlags::CLONE_NEWUSER {
                joined.push((target, flag));
            }
        }
    }
    // Joined from the pins, not /proc/<child>: the pins are what containers join.
    for (target, flag) in joined {
        let file = File::open(&target).map_err(|e| format!("open {}: {e}", target.display()))?;
        setns(file, flag).map_err(|e| format!("join {}: {e}", target.display()))?;
    }
    if let Some(init) = init {
        // Our next children (containers, execs) are born in the pod's PID namespace,
        // as after an unshare of our own.
        let path = format!("/proc/{init}/ns/pid");
        let file = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
        setns(file, CloneFlags::CLONE_NEWPID).map_err(|e| format!("join {path}: {e}"))?;
    }
    Ok(init)
}

/// The child: new user namespace, wait for its maps, become its root, then the pod's
/// other namespaces owned by it.
fn child(
    spec: &MonitorSpec,
    flags: CloneFlags,
    report: &mut File,
    wait: &mut File,
    init: Option<(Plan, RawFd)>,
) -> Result<(), String> {
    if init.is_some() {
        // The init's plan names its root relative to here: it finds it without
        // searching the directories above, which the pod's root may not.
        let parent = spec.pins_dir.parent().unwrap_or(Path::new("/"));
        nix::unistd::chdir(parent).map_err(|e| format!("chdir {}: {e}", parent.display()))?;
    }
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| format!("unshare user namespace: {e}"))?;
    report.write_all(b"U").map_err(|e| e.to_string())?;
    expect(wait, b'G')?;
    // uid/gid 0 of the new namespace: the sysctl files of its net/IPC namespaces are
    // owned by that root. Gid first, while we may still set it.
    setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(|e| format!("become gid 0 in the pod user namespace: {e}"))?;
    setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(|e| format!("become uid 0 in the pod user namespace: {e}"))?;
    // The PID namespace too: one the pod's root owns, so an OCI runtime that joins
    // the user namespace first may still join it (runc's nsexec does: EPERM on one
    // the host's user namespace owns). Only children enter it; the monitor does.
    let flags = if spec.new_pid {
        flags | CloneFlags::CLONE_NEWPID
    } else {
        flags
    };
    unshare(flags).map_err(|e| format!("unshare namespaces in the pod user namespace: {e}"))?;
    if spec.new_net {
        super::daemon::loopback_up()
            .map_err(|e| format!("bring up lo in the pod network namespace: {e}"))?;
    }
    if spec.new_uts {
        sethostname(&spec.hostname)
            .map_err(|e| format!("set hostname {:?}: {e}", spec.hostname))?;
    }
    for (name, value) in &spec.sysctls {
        let path = Path::new("/proc/sys").join(super::daemon::sysctl_path(name));
        fs::write(&path, value).map_err(|e| format!("sysctl {name}={value}: {e}"))?;
    }
    let mut ready = b"N".to_vec();
    if let Some((plan, ready_fd)) = init {
        // The pod init, PID 1 of the PID namespace just made (our children are born
        // in it) and, with CLONE_PARENT, the monitor's child as without a user
        // namespace: the monitor reaps it, and its parent-death signal follows the
        // monitor, not us (we exit in a moment).
        // SAFETY: a fork-like clone (no new stack: the child runs on a copy of ours)
        // of a single-threaded process; the child only runs the pod init, which never
        // returns.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_long,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        match pid {
            0 => super::pod_init::run(plan, ready_fd),
            pid if pid < 0 => {
                return Err(format!(
                    "clone the pod init: {}",
                    std::io::Error::last_os_error()
                ));
            }
            pid => {
                drop(plan);
                ready.extend_from_slice(&(pid as i32).to_le_bytes());
            }
        }
    }
    report.write_all(&ready).map_err(|e| e.to_string())?;
    // Stay until the monitor has pinned our namespaces (it closes its end then).
    let mut byte = [0u8; 1];
    let _ = wait.read(&mut byte);
    Ok(())
}

/// Reads one byte and checks it is `want`; an `E...` report is the other side's error.
fn expect(from: &mut File, want: u8) -> Result<(), String> {
    let mut byte = [0u8; 1];
    match from.read(&mut byte) {
        Ok(1) if byte[0] == want => Ok(()),
        Ok(1) if byte[0] == b'E' => {
            let mut rest = String::new();
            let _ = from.read_to_string(&mut rest);
            Err(rest)
        }
        Ok(1) => Err(format!(
            "unexpected byte {:?} from the userns child",
            byte[0] as char
        )),
        _ => Err("the userns child exited during setup".into()),
    }
}
