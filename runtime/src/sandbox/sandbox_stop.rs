//! StopPodSandbox: stop every process of the pod and release its namespaces. The pod
//! stays listed (NOTREADY) until removed. Idempotent; a missing pod is not an error
//! (CRI: kubelet may call it again after a crash).

use super::{SandboxManager, SandboxState};
use crate::error::RuntimeError;

impl SandboxManager {
    pub async fn stop(&self, id_or_prefix: &str) -> Result<(), RuntimeError> {
        let Some(id) = self.resolve_if_present(id_or_prefix)? else {
            return Ok(());
        };
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let Some(mut sandbox) = self.snapshot(&id) else {
            return Ok(());
        };
        self.teardown(&sandbox, false).await?;
        let from = sandbox.state;
        if from != SandboxState::NotReady {
            sandbox.state = SandboxState::NotReady;
            self.commit(&sandbox, Some(from))?;
        }
        tracing::info!(pod_id = %id, "pod sandbox stopped");
        Ok(())
    }
}
