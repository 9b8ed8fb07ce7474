//! The cgroups ExecSync runs its command in, kept for the next exec.
//!
//! Each exec gets a cgroup of its own below the container's, so that whatever the
//! command leaves behind (`sh -c 'sleep 100 &'`) is killed when it ends, not left in
//! the container. Made and removed per call that cost a `mkdir` and an `rmdir` in
//! every v1 hierarchy (about 1.3 ms of a 4 ms ExecSync here). An exec cgroup is empty
//! again once its exec has ended (everything in it was killed), so it is kept as a
//! spare for the container's next exec instead, up to [`SPARES`] per container; the
//! container's own removal takes its spares with it (a cgroup is removed children
//! first).

use super::Container;
use crate::{error::RuntimeError, ids, sandbox::SandboxManager};

/// Spare exec cgroups kept per container: as many execs as run at once in the usual
/// case (a probe or two).
const SPARES: usize = 2;

impl SandboxManager {
    /// An empty exec cgroup below `c`'s: a spare, or a new one.
    pub(crate) fn take_exec_cgroup(&self, c: &Container) -> Result<String, RuntimeError> {
        let cgroups = self.cgroups()?;
        let spare = self
            .exec_spares
            .lock()
            .expect("exec spares poisoned")
            .get_mut(&c.id)
            .and_then(Vec::pop);
        if let Some(spare) = spare.filter(|cg| cgroups.exists(cg)) {
            return Ok(spare);
        }
        let exec_cgroup = format!("{}/exec-{}", c.cgroup, &ids::new_id()[..12]);
        cgroups
            .create(&exec_cgroup)
            .map_err(|source| RuntimeError::Cgroup {
                kind: "container",
                id: c.id.clone(),
                source,
            })?;
        Ok(exec_cgroup)
    }

    /// Takes back `exec_cgroup` of container `id` once everything in it was killed:
    /// kept as a spare while the container is known and has room, removed otherwise.
    pub(crate) async fn return_exec_cgroup(&self, id: &str, exec_cgroup: String) {
        let known = self
            .containers
            .read()
            .expect("containers poisoned")
            .contains_key(id);
        if known {
            let mut spares = self.exec_spares.lock().expect("exec spares poisoned");
            let list = spares.entry(id.to_string()).or_default();
            if list.len() < SPARES {
                list.push(exec_cgroup);
                return;
            }
        }
        let _ = self
            .cgroup_blocking(move |cgroups| cgroups.remove(&exec_cgroup))
            .await;
    }

    /// Forgets container `id`'s spares (their directories go with its cgroup).
    pub(crate) fn forget_exec_cgroups(&self, id: &str) {
        self.exec_spares
            .lock()
            .expect("exec spares poisoned")
            .remove(id);
    }
}
