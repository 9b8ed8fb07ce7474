//! Choosing the PID namespace the monitor's next children are born in.
//!
//! A process's own (active) PID namespace never changes; `setns(CLONE_NEWPID)` only
//! changes `pid_for_children`, and only to the active namespace or one of its
//! descendants (pid_namespaces(7)). The monitor of a pod with a shared PID namespace
//! has unshared one, so by default its children are born in the pod's namespace.
//! Three cases want something else:
//! - a container with its own PID namespace in such a pod: `clone(CLONE_NEWPID)` fails
//!   with EINVAL while `pid_for_children` differs from the active namespace (the
//!   kernel's `copy_pid_ns`), so the clone must happen from the monitor's own;
//! - `pid: TARGET`: the child must be born in the target container's namespace (a
//!   descendant of the monitor's own, as the monitor made it);
//! - an OCI runtime binary, which must see its children with the pids the monitor
//!   reaps, so it runs in the monitor's own namespace and joins the pod's itself.
use std::{
    fs::{self, File},
    os::unix::fs::MetadataExt,
    path::Path,
};

use nix::sched::{CloneFlags, setns};

/// Where the next children should be born.
#[derive(Debug, Clone, Copy)]
pub(super) enum ChildPidNs<'a> {
    /// The monitor's own (active) namespace.
    Own,
    /// The namespace behind this nsfs path (`/proc/<pid>/ns/pid` or a pin).
    At(&'a Path),
}

fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    fs::metadata(path).map(|m| (m.dev(), m.ino()))
}

/// Runs `f` with the monitor's children born in `wanted`, then restores the namespace
/// children were born in before. When `wanted` already is that namespace, `f` just
/// runs. Failing to restore is reported on stderr (the monitor's log): later children
/// would otherwise land in the wrong namespace silently.
pub(super) fn with_children_in<T, E: From<std::io::Error>>(
    wanted: ChildPidNs<'_>,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let current = Path::new("/proc/self/ns/pid_for_children");
    let target = match wanted {
        ChildPidNs::Own => Path::new("/proc/self/ns/pid"),
        ChildPidNs::At(path) => path,
    };
    if identity(target)? == identity(current)? {
        return f();
    }
    let previous = File::open(current)?;
    let next = File::open(target)?;
    setns(next, CloneFlags::CLONE_NEWPID).map_err(std::io::Error::from)?;
    let result = f();
    if let Err(e) = setns(previous, CloneFlags::CLONE_NEWPID) {
        eprintln!("crust-monitor: restore the PID namespace for children: {e}");
    }
    result
}
