//! The cgroup v2 device filter. v2 has no `devices.allow`: the kernel asks eBPF
//! programs of type `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the cgroup (and its
//! ancestors) whether a process may mknod, read or write a device node. crust builds
//! one from the same OCI rules v1 gets (default deny, then the spec's allow-list), so a
//! node made in the container (it has CAP_MKNOD) cannot reach a host device on v2
//! either.
//!
//! Split as STYLE asks: [`rules`] (v1 semantics) and [`program`] (instructions) are
//! pure and unit tested, with a tiny interpreter in the tests; [`loader`] is the bpf(2)
//! calls.
//!
//! ```no_run
//! use oci_spec::runtime::LinuxDeviceCgroupBuilder;
//! let deny_all = LinuxDeviceCgroupBuilder::default().allow(false).build().unwrap();
//! crust_runtime::cgroup::devices_bpf::apply(
//!     std::path::Path::new("/sys/fs/cgroup/pods/c1"),
//!     &[deny_all],
//! )
//! .unwrap();
//! ```

mod loader;
pub mod program;
pub mod rules;
#[cfg(test)]
mod tests;

use std::{io, path::Path, path::PathBuf};

pub use loader::attached_ids;
use oci_spec::runtime::LinuxDeviceCgroup;
pub use rules::RuleError;

/// Loading or attaching the filter failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceFilterError {
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("load cgroup device eBPF program: {0}")]
    Load(io::Error),
    #[error("attach device eBPF program to {path}: {source}")]
    Attach { path: PathBuf, source: io::Error },
}

/// Builds the filter for `rules` (OCI order, as in `linux.resources.devices`) and
/// attaches it to the cgroup v2 directory `dir`, replacing the filter crust (or runc)
/// attached before. Idempotent: applying the same rules again leaves one program.
pub fn apply(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), DeviceFilterError> {
    let set = rules::resolve(rules)?;
    let insns = program::build(&set);
    let prog = loader::load(&insns).map_err(DeviceFilterError::Load)?;
    loader::attach_replacing(dir, &prog).map_err(|source| DeviceFilterError::Attach {
        path: dir.to_path_buf(),
        source,
    })
}

/// Whether this kernel and our privileges can load a device program (CONFIG_CGROUP_BPF,
/// CAP_SYS_ADMIN or CAP_BPF): loads the deny-all program and drops it.
pub fn supported() -> bool {
    let deny_all = rules::RuleSet {
        default_allow: false,
        exceptions: Vec::new(),
    };
    match loader::load(&program::build(&deny_all)) {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot load a cgroup device eBPF program");
            false
        }
    }
}
