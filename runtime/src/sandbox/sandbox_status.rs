//! PodSandboxStatus: the recorded pod plus its live readiness.

use serde_json::json;

use super::{Sandbox, SandboxManager, SandboxState, teardown::PINS};
use crate::error::RuntimeError;

/// A pod as reported: the record plus whether it is ready right now.
#[derive(Debug, Clone)]
pub struct SandboxView {
    pub sandbox: Sandbox,
    pub ready: bool,
}

impl SandboxManager {
    /// Status of the pod with this id or unique id prefix.
    pub fn status(&self, id_or_prefix: &str) -> Result<SandboxView, RuntimeError> {
        let id = self.resolve(id_or_prefix)?;
        let sandbox = self.snapshot(&id).ok_or(RuntimeError::NotFound {
            kind: "pod sandbox",
            id,
        })?;
        Ok(self.view(sandbox))
    }

    /// The pod `sandbox` (a record, possibly an older copy) as reported now.
    pub fn view(&self, sandbox: Sandbox) -> SandboxView {
        let ready = is_ready(&sandbox);
        SandboxView { sandbox, ready }
    }

    /// Debug information for `verbose` status: processes, pins, cgroups, paths.
    pub fn verbose_info(&self, view: &SandboxView) -> serde_json::Value {
        let s = &view.sandbox;
        let pins: serde_json::Map<String, serde_json::Value> = PINS
            .iter()
            .filter(|ns| s.pin(ns).exists())
            .map(|ns| (ns.to_string(), json!(s.pin(ns))))
            .collect();
        json!({
            "id": s.id,
            "recordedState": s.state,
            "ready": view.ready,
            "monitor": s.monitor.map(|m| json!({
                "pid": m.monitor.pid,
                "alive": m.monitor.is_alive(),
                "socket": s.monitor_socket(),
            })),
            "init": s.monitor.and_then(|m| m.init).map(|i| json!({"pid": i.pid, "alive": i.is_alive()})),
            "pins": pins,
            "cgroup": {"pod": s.cgroup, "init": s.init_cgroup, "createdByCrust": s.cgroup_created},
            "podDir": s.pod_dir,
            "runtimeHandler": s.spec.runtime_handler,
            "namespaces": s.spec.namespaces,
        })
    }
}

/// Ready only while what makes the pod exists: the recorded state says so, the monitor
/// runs, and the pod init (PID namespace holder) runs if the pod has one.
fn is_ready(s: &Sandbox) -> bool {
    if s.state != SandboxState::Ready {
        return false;
    }
    match s.monitor {
        Some(m) => m.monitor.is_alive() && m.init.is_none_or(|i| i.is_alive()),
        None => false,
    }
}
