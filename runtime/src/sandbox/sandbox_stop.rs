//! StopPodSandbox: stop every process of the pod and release its namespaces. The pod
//! stays listed (NOTREADY) until removed. Idempotent; a missing pod is not an error
//! (CRI: kubelet may call it again after a crash).

use super::{Sandbox, SandboxManager, SandboxState};
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
        crate::step_span!("pod.record").in_scope(|| self.begin_stop(&mut sandbox))?;
        self.teardown(&sandbox, false).await?;
        tracing::info!(pod_id = %id, "pod sandbox stopped");
        Ok(())
    }

    /// Persists "stopping, network torn down" before the first teardown step (Stop and
    /// Remove): the pod is NotReady and has no IP from here on, so a crustd killed at
    /// any later step comes back reporting what is true, never READY with the IP of a
    /// veth and lease CNI DEL already released. The record is cleared before DEL, not
    /// after: a crash between the two leaves DEL to the retried Stop, which runs it
    /// again (DEL is idempotent, also with the cached result gone).
    pub(super) fn begin_stop(&self, sandbox: &mut Sandbox) -> Result<(), RuntimeError> {
        if sandbox.state == SandboxState::NotReady && sandbox.network.is_none() {
            return Ok(());
        }
        let from = sandbox.state;
        sandbox.state = SandboxState::NotReady;
        sandbox.network = None;
        self.commit(sandbox, Some(from))
    }
}
