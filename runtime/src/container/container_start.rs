//! StartContainer: release the created process into its exec.

use super::{ContainerState, container_create::now};
use crate::{error::RuntimeError, monitor::Request, sandbox::SandboxManager};

impl SandboxManager {
    pub async fn start_container(&self, id_or_prefix: &str) -> Result<(), RuntimeError> {
        let id = self.resolve_container(id_or_prefix)?;
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let mut c = self.container_snapshot(&id)?;
        if c.state != ContainerState::Created {
            return Err(RuntimeError::ContainerState {
                id,
                state: c.state,
                wanted: "created",
            });
        }
        let sandbox = self.status(&c.pod_id)?.sandbox;
        let start = Request::StartContainer { id: id.clone() };
        let reply = self
            .ask_monitor(
                &sandbox.monitor_socket(),
                &id,
                &start,
                crate::sandbox::CONTAINER_TIMEOUT,
            )
            .await?;
        if !reply.ok {
            // The exec failed: the process is gone; record it as exited with the reason.
            c.state = ContainerState::Exited;
            c.finished_at = now();
            c.exit_code = 128;
            c.reason = "StartError".into();
            c.message = reply.error.clone().unwrap_or_default();
            self.commit_container(&c, Some(ContainerState::Created))?;
            return Err(RuntimeError::Launch {
                id,
                message: reply.error.unwrap_or_default(),
            });
        }
        c.state = ContainerState::Running;
        c.started_at = reply.started_at.unwrap_or_else(now);
        self.commit_container(&c, Some(ContainerState::Created))?;
        tracing::info!(container_id = %id, "container started");
        Ok(())
    }
}
