//! Loading pods at crustd start. Running pods keep running across a restart: their
//! records are loaded and readiness is read from the live monitors. A pod caught in
//! `Creating` by a crash is rolled back completely. Containers recorded Created are
//! checked with their monitor, which may have started them.

use crust_state::Quarantined;

use super::{Sandbox, SandboxManager, SandboxState};
use crate::error::RuntimeError;

impl SandboxManager {
    /// Loads every pod record; returns the files that had to be quarantined.
    pub async fn recover(&self) -> Result<Vec<Quarantined>, RuntimeError> {
        let loaded = self.store.load_all::<Sandbox>()?;
        for sandbox in loaded.records {
            if sandbox.state == SandboxState::Creating {
                tracing::warn!(pod_id = %sandbox.id, "rolling back pod interrupted while being created");
                match self.teardown(&sandbox, true).await {
                    Ok(()) => self.store.remove::<Sandbox>(&sandbox.id)?,
                    // Keep the record so the next start tries again; hide it meanwhile.
                    Err(error) => {
                        tracing::error!(pod_id = %sandbox.id, %error, "rollback incomplete")
                    }
                }
                continue;
            }
            self.names
                .lock()
                .expect("names poisoned")
                .insert(sandbox.spec.metadata.key(), sandbox.id.clone());
            let view = self.view(sandbox.clone());
            tracing::info!(pod_id = %sandbox.id, ready = view.ready, "restored pod sandbox");
            self.records
                .write()
                .expect("records poisoned")
                .insert(sandbox.id.clone(), sandbox);
        }
        let mut quarantined = loaded.quarantined;
        let containers = self.store.load_all::<crate::container::Container>()?;
        quarantined.extend(containers.quarantined);
        for c in containers.records {
            let orphan = !self
                .records
                .read()
                .expect("records poisoned")
                .contains_key(&c.pod_id);
            if c.state == crate::container::ContainerState::Creating || orphan {
                tracing::warn!(container_id = %c.id, "rolling back container interrupted while being created");
                if self.remove_container_files(&c).await.is_ok() {
                    self.store.remove::<crate::container::Container>(&c.id)?;
                }
                continue;
            }
            self.container_names
                .lock()
                .expect("names poisoned")
                .insert(c.name_key(), c.id.clone());
            self.containers
                .write()
                .expect("containers poisoned")
                .insert(c.id.clone(), c);
        }
        // A container recorded Created may have been started by a StartContainer that
        // crustd was killed in the middle of: ask its monitor what really runs before
        // answering anyone (a retried start must not take it for a failed one).
        let created: Vec<crate::container::Container> = self
            .containers
            .read()
            .expect("containers poisoned")
            .values()
            .filter(|c| c.state == crate::container::ContainerState::Created)
            .cloned()
            .collect();
        for mut c in created {
            if let Err(error) = self.reconcile_created(&mut c).await {
                tracing::error!(container_id = %c.id, %error, "could not reconcile the container with its monitor");
            }
        }
        // Exits from now on are learnt as they are recorded; ones recorded while
        // crustd was down are applied by the watch loop right away (STOPPED events
        // for kubelet once it subscribes).
        self.track_all_exits();
        Ok(quarantined)
    }
}
