//! ListPodSandbox: every visible pod, filtered as CRI `PodSandboxFilter` says.

use std::collections::BTreeMap;

use super::{SandboxManager, SandboxState, SandboxView};

/// CRI `PodSandboxFilter`: all given conditions must hold.
#[derive(Debug, Clone, Default)]
pub struct SandboxFilter {
    /// Full id or prefix.
    pub id: String,
    /// `Some(true)`: only ready pods; `Some(false)`: only not-ready pods.
    pub ready: Option<bool>,
    /// Every label must be present with this value.
    pub labels: BTreeMap<String, String>,
}

impl SandboxManager {
    /// Pods matching `filter`, oldest first. Pods still being created are not listed.
    pub fn list(&self, filter: &SandboxFilter) -> Vec<SandboxView> {
        let records: Vec<_> = self
            .records
            .read()
            .expect("records poisoned")
            .values()
            .filter(|s| s.state != SandboxState::Creating)
            .filter(|s| s.id.starts_with(&filter.id))
            .filter(|s| {
                filter
                    .labels
                    .iter()
                    .all(|(k, v)| s.spec.labels.get(k) == Some(v))
            })
            .cloned()
            .collect();
        let mut views: Vec<_> = records
            .into_iter()
            .map(|s| self.view(s))
            .filter(|v| filter.ready.is_none_or(|ready| v.ready == ready))
            .collect();
        views.sort_by(|a, b| {
            (a.sandbox.created_at, &a.sandbox.id).cmp(&(b.sandbox.created_at, &b.sandbox.id))
        });
        views
    }
}
