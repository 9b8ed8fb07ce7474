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
        let record = crate::step_span!("pod.record").in_scope(|| self.begin_stop(&mut sandbox))?;
        // The record's fsyncs overlap the teardown (CNI DEL is most of it); Stop
        // answers only once both are done, so a Stop that succeeded is durable.
        let (torn_down, synced) = tokio::join!(self.teardown(&sandbox, false), record.sync());
        torn_down?;
        synced?;
        tracing::info!(pod_id = %id, "pod sandbox stopped");
        Ok(())
    }

    /// Persists "stopping, network torn down" before the first teardown step (Stop and
    /// Remove): the pod is NotReady and has no IP from here on, so a crustd killed at
    /// any later step comes back reporting what is true, never READY with the IP of a
    /// veth and lease CNI DEL already released. The record is cleared before DEL, not
    /// after: a crash between the two leaves DEL to the retried Stop, which runs it
    /// again (DEL is idempotent, also with the cached result gone).
    ///
    /// The record is renamed into place here (every process, a restarted crustd
    /// included, sees it from now on) and made durable by the returned sync, which the
    /// caller overlaps with the teardown. A power loss before that sync may bring the
    /// pre-Stop record back; after a reboot that pod reads NotReady anyway (its monitor
    /// is gone), and the Stop kubelet then repeats redoes the DEL.
    pub(super) fn begin_stop(&self, sandbox: &mut Sandbox) -> Result<RecordSync, RuntimeError> {
        if sandbox.state == SandboxState::NotReady && sandbox.network.is_none() {
            return Ok(RecordSync::done(&sandbox.id));
        }
        let from = sandbox.state;
        sandbox.state = SandboxState::NotReady;
        sandbox.network = None;
        self.commit_visible(sandbox, Some(from))
            .map(|pending| RecordSync::pending(&sandbox.id, pending))
    }
}

/// A record write still to be made durable, if any.
#[must_use = "the record is not durable until synced"]
pub(super) struct RecordSync {
    id: String,
    pending: Option<crust_state::PendingSync>,
}

impl RecordSync {
    pub(super) fn pending(id: &str, pending: crust_state::PendingSync) -> RecordSync {
        RecordSync {
            id: id.to_string(),
            pending: Some(pending),
        }
    }

    /// Nothing was written, so nothing to sync.
    pub(super) fn done(id: &str) -> RecordSync {
        RecordSync {
            id: id.to_string(),
            pending: None,
        }
    }

    /// Runs the fsyncs on the blocking pool.
    pub(super) async fn sync(self) -> Result<(), RuntimeError> {
        let Some(pending) = self.pending else {
            return Ok(());
        };
        let synced = tokio::task::spawn_blocking(move || pending.sync()).await;
        match synced {
            Ok(result) => result.map_err(RuntimeError::from),
            // Only a runtime shutting down cancels it (fsync does not panic).
            Err(e) => Err(RuntimeError::Io {
                kind: "pod sandbox",
                id: self.id,
                op: "sync the record",
                path: Default::default(),
                source: std::io::Error::other(e),
            }),
        }
    }
}
