//! UpdateContainerResources: new limits, written live into the container's cgroup and
//! kept in its record (so ContainerStatus shows them and a restart keeps them).

use super::{ContainerState, ResourcesSpec, spec_resources};
use crate::{error::RuntimeError, sandbox::SandboxManager};

impl SandboxManager {
    pub async fn update_container_resources(
        &self,
        id: &str,
        resources: ResourcesSpec,
    ) -> Result<(), RuntimeError> {
        let id = self.resolve_container(id)?;
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let mut c = self.container_status(&id)?;
        if !matches!(c.state, ContainerState::Created | ContainerState::Running) {
            return Err(RuntimeError::ContainerState {
                id,
                state: c.state,
                wanted: "created or running",
            });
        }
        let linux = spec_resources::resources(&resources, &self.host).map_err(|e| {
            RuntimeError::InvalidArgument {
                field: "linux",
                reason: e.to_string(),
            }
        })?;
        self.update_cgroup(&c.cgroup, &linux)
            .await
            .map_err(|source| RuntimeError::Cgroup {
                kind: "container",
                id: id.clone(),
                source,
            })?;
        c.spec.resources = resources;
        self.update_container_record(&c)
    }
}
