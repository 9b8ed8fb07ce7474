//! ContainerStatus and ListContainers.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
};

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

/// Answers "does a container use this image?" from the live container records.
#[derive(Clone)]
pub struct ImageUsers(Arc<RwLock<HashMap<String, Container>>>);

impl ImageUsers {
    /// Whether any container, in any state (one being created too), was made from
    /// image `image_id`: such an image's layers must stay (issue 13, item 11). Reads
    /// the live records, so the image store can call it under its own lock and see a
    /// container recorded a moment ago. One pass over the records in memory.
    pub fn uses(&self, image_id: &str) -> bool {
        self.0
            .read()
            .expect("containers poisoned")
            .values()
            .any(|c| {
                c.image.id == image_id
                    || c.spec
                        .mounts
                        .iter()
                        .any(|m| m.image.as_ref().is_some_and(|i| i.id == image_id))
            })
    }
}

impl SandboxManager {
    /// A container by id or unique prefix, with any recorded exit applied.
    pub fn container_status(&self, id_or_prefix: &str) -> Result<Container, RuntimeError> {
        let id = self.resolve_container(id_or_prefix)?;
        let mut c = self.container_snapshot(&id)?;
        self.refresh_container(&mut c)?;
        Ok(c)
    }

    /// Which images containers use, as a handle the image store's callers can keep.
    pub fn image_users(&self) -> ImageUsers {
        ImageUsers(self.containers.clone())
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
