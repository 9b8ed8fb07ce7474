//! RemovePodSandbox: force-stop whatever still runs, then delete the pod's files,
//! cgroups, pins and record. Idempotent; a missing pod is not an error.

use super::SandboxManager;
use crate::error::RuntimeError;

impl SandboxManager {
    pub async fn remove(&self, id_or_prefix: &str) -> Result<(), RuntimeError> {
        let Some(id) = self.resolve_if_present(id_or_prefix)? else {
            return Ok(());
        };
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let Some(mut sandbox) = self.snapshot(&id) else {
            return Ok(());
        };
        // As Stop: NotReady and without its network before anything is torn down.
        let record = crate::step_span!("pod.record").in_scope(|| self.begin_stop(&mut sandbox))?;
        let (torn_down, synced) = tokio::join!(self.teardown(&sandbox, true), record.sync());
        torn_down?;
        synced?;
        // The pod's containers went with its monitor; delete what they left.
        let containers: Vec<_> = self
            .containers
            .read()
            .expect("containers poisoned")
            .values()
            .filter(|c| c.pod_id == id)
            .cloned()
            .collect();
        for mut c in containers {
            // The exits the teardown caused are recorded first (STOPPED before
            // DELETED), not lost with the bundle.
            let _ = self.refresh_container(&mut c);
            self.remove_container_files(&c).await?;
            self.forget_container(&c)?;
        }
        crate::step_span!("pod.forget").in_scope(|| self.forget(&sandbox))?;
        self.locks.lock().expect("locks poisoned").remove(&id);
        tracing::info!(pod_id = %id, "pod sandbox removed");
        Ok(())
    }
}
