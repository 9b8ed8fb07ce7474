//! A process's `oom_score_adj` and rlimits from its OCI `process`: what the container's
//! own process gets, and (as with runc exec, which copies the container's process
//! settings) every exec into it.

use oci_spec::runtime::{PosixRlimitType, Process};

/// Applies `process.oomScoreAdj` and `process.rlimits` to the calling process. Runs
/// in a freshly forked or cloned child before exec; `/proc/self` must resolve to it.
pub(crate) fn apply(process: &Process) -> Result<(), String> {
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| format!("oom_score_adj {adj}: {e}"))?;
    }
    for rlimit in process.rlimits().clone().unwrap_or_default() {
        let resource = resource(rlimit.typ())
            .ok_or_else(|| format!("rlimit {:?} is not supported", rlimit.typ()))?;
        nix::sys::resource::setrlimit(resource, rlimit.soft(), rlimit.hard())
            .map_err(|e| format!("setrlimit {:?}: {e}", rlimit.typ()))?;
    }
    Ok(())
}

fn resource(kind: PosixRlimitType) -> Option<nix::sys::resource::Resource> {
    use PosixRlimitType as T;
    use nix::sys::resource::Resource as R;
    Some(match kind {
        T::RlimitCpu => R::RLIMIT_CPU,
        T::RlimitFsize => R::RLIMIT_FSIZE,
        T::RlimitData => R::RLIMIT_DATA,
        T::RlimitStack => R::RLIMIT_STACK,
        T::RlimitCore => R::RLIMIT_CORE,
        T::RlimitRss => R::RLIMIT_RSS,
        T::RlimitNproc => R::RLIMIT_NPROC,
        T::RlimitNofile => R::RLIMIT_NOFILE,
        T::RlimitMemlock => R::RLIMIT_MEMLOCK,
        T::RlimitAs => R::RLIMIT_AS,
        T::RlimitLocks => R::RLIMIT_LOCKS,
        T::RlimitSigpending => R::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => R::RLIMIT_MSGQUEUE,
        T::RlimitNice => R::RLIMIT_NICE,
        T::RlimitRtprio => R::RLIMIT_RTPRIO,
        T::RlimitRttime => R::RLIMIT_RTTIME,
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}
