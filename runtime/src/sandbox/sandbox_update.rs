//! UpdatePodSandboxResources: kubelet tells the runtime the pod's new resources after
//! it resized the pod cgroups itself (CRI: best effort). crust records them, and where
//! the pod cgroup is crust's own (a pod that named no `cgroup_parent`) applies them
//! there, since nobody else will (under systemd as the slice's unit properties).

use serde::{Deserialize, Serialize};

use super::{SandboxManager, SandboxState};
use crate::{container::ResourcesSpec, error::RuntimeError};

/// Pod-level resources as CRI gives them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodResources {
    /// The pod's overhead (RuntimeClass).
    pub overhead: ResourcesSpec,
    /// The sum of its containers' resources.
    pub resources: ResourcesSpec,
}

impl PodResources {
    /// The limits of the pod as a whole: containers plus overhead.
    fn total(&self) -> ResourcesSpec {
        let (r, o) = (&self.resources, &self.overhead);
        let add = |a: i64, b: i64| if a > 0 { a + b.max(0) } else { 0 };
        ResourcesSpec {
            cpu_period: r.cpu_period,
            cpu_quota: add(r.cpu_quota, o.cpu_quota),
            cpu_shares: add(r.cpu_shares, o.cpu_shares),
            memory_limit_in_bytes: add(r.memory_limit_in_bytes, o.memory_limit_in_bytes),
            cpuset_cpus: r.cpuset_cpus.clone(),
            cpuset_mems: r.cpuset_mems.clone(),
            ..Default::default()
        }
    }
}

impl SandboxManager {
    pub async fn update_pod_resources(
        &self,
        id: &str,
        update: PodResources,
    ) -> Result<(), RuntimeError> {
        let id = self.resolve(id)?;
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let mut sandbox = self.snapshot(&id).ok_or_else(|| RuntimeError::NotFound {
            kind: "pod sandbox",
            id: id.clone(),
        })?;
        if sandbox.cgroup_created && sandbox.state == SandboxState::Ready {
            let linux = crate::container::spec_resources::resources(&update.total(), &self.host)
                .map_err(|e| RuntimeError::InvalidArgument {
                    field: "resources",
                    reason: e.to_string(),
                })?;
            self.update_cgroup(&sandbox.cgroup, &linux)
                .await
                .map_err(|source| RuntimeError::Cgroup {
                    kind: "pod sandbox",
                    id: id.clone(),
                    source,
                })?;
        }
        let from = sandbox.state;
        sandbox.resources = Some(update);
        self.commit(&sandbox, Some(from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_overhead_only_to_set_limits() {
        let p = PodResources {
            overhead: ResourcesSpec {
                memory_limit_in_bytes: 10,
                cpu_shares: 5,
                cpu_quota: 1000,
                ..Default::default()
            },
            resources: ResourcesSpec {
                memory_limit_in_bytes: 100,
                cpu_shares: 0,
                cpu_quota: 50_000,
                cpu_period: 100_000,
                ..Default::default()
            },
        };
        let t = p.total();
        assert_eq!(
            (
                t.memory_limit_in_bytes,
                t.cpu_shares,
                t.cpu_quota,
                t.cpu_period
            ),
            (110, 0, 51_000, 100_000)
        );
    }
}
