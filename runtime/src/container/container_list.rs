//! ContainerStatus and ListContainers.

use std::collections::BTreeMap;

use super::{Container, ContainerState};
use crate::{error::RuntimeError, sandbox::SandboxManager};

/// CRI `ContainerFilter`: every given condition must hold.
#[derive(Debug, Clone, Default)]
pub struct ContainerFilter {
    pub id: String,
    pub state: Option<ContainerState>,
    pub pod_id: String,
    pub labels: BTreeMap<String, String>,
}

impl SandboxManager {
    /// A container by id or unique prefix, with any recorded exit applied.
    pub fn container_status(&self, id_or_prefix: &str) -> Result<Container, RuntimeError> {
        let id = self.resolve_container(id_or_prefix)?;
        let mut c = self.container_snapshot(&id)?;
        self.refresh_container(&mut c)?;
        Ok(c)
    }

    /// Containers matching `filter`, oldest first. Ones still being created are hidden.
    pub fn list_containers(&self, filter: &ContainerFilter) -> Vec<Container> {
        let snapshot: Vec<Container> = self
            .containers
            .read()
            .expect("containers poisoned")
            .values()
            .cloned()
            .collect();
        let mut out: Vec<Container> = snapshot
            .into_iter()
            .filter(|c| c.state != ContainerState::Creating)
            .filter(|c| c.id.starts_with(&filter.id) && c.pod_id.starts_with(&filter.pod_id))
            .filter(|c| {
                filter
                    .labels
                    .iter()
                    .all(|(k, v)| c.spec.labels.get(k) == Some(v))
            })
            .map(|mut c| {
                let _ = self.refresh_container(&mut c);
                c
            })
            .filter(|c| filter.state.is_none_or(|s| s == c.state))
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        out
    }
}
