//! StartContainer: release the created process into its exec; and learning from the
//! monitor what a start crustd did not hear the end of really did.

use super::{Container, ContainerState, container_create::now};
use crate::{
    error::RuntimeError,
    monitor::{ProcessState, Request},
    sandbox::{MONITOR_TIMEOUT, SandboxManager},
};

impl SandboxManager {
    /// Starts a Created container. A container that runs already (or ran) is refused
    /// with FAILED_PRECONDITION, also when the start that made it run was one crustd
    /// was killed in the middle of: the retried call did not start it, and the CRI
    /// caller (kubelet) learns the state from ContainerStatus, as after any second
    /// start (containerd refuses it too: "container is in running state").
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
        // A container created from a checkpoint is restored by the monitor instead
        // (`<runtime> restore`): it comes back running, with its new pid.
        let restore = c.spec.restore.is_some();
        let start = if restore {
            self.monitor_create_request(
                &c,
                &sandbox,
                Some(super::container_restore::restore_images(&c)),
            )?
        } else {
            Request::StartContainer { id: id.clone() }
        };
        let reply = self
            .ask_monitor(
                &sandbox.monitor_socket(),
                &id,
                &start,
                crate::sandbox::CONTAINER_TIMEOUT,
            )
            .await?;
        if !reply.ok {
            // "Already started": a start crustd was killed in the middle of ran, and
            // recovery could not learn it then. Never take the running process for a
            // failed one.
            if let Some((ProcessState::Running | ProcessState::Exited, Some(started_at))) =
                self.monitor_process(&c).await
            {
                self.adopt_start(&mut c, started_at)?;
                return Err(RuntimeError::ContainerState {
                    id,
                    state: c.state,
                    wanted: "created",
                });
            }
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
        if restore {
            c.pid = reply.pid;
        }
        self.commit_container(&c, Some(ContainerState::Created))?;
        tracing::info!(container_id = %id, restored = restore, "container started");
        if restore {
            super::container_restore::drop_restore_images(&c).await;
        }
        // A process that exited at once has its exit record already, and the exit
        // watcher left it to us (it skips Created containers).
        if let Err(error) = self.refresh_container(&mut c) {
            tracing::warn!(container_id = %id, %error, "could not record the container's exit");
        }
        Ok(())
    }

    /// Brings a container recorded Created up to date with its monitor (crustd start):
    /// a start that ran while crustd died before recording it becomes Running with the
    /// monitor's start time (then Exited, if its exit file is there); a start that
    /// failed becomes Exited (StartError). A monitor that is gone or does not know the
    /// container changes nothing here (exit files and dead processes are read by
    /// [`SandboxManager::refresh_container`]).
    pub(crate) async fn reconcile_created(&self, c: &mut Container) -> Result<(), RuntimeError> {
        if c.state != ContainerState::Created {
            return Ok(());
        }
        match self.monitor_process(c).await {
            Some((ProcessState::Running | ProcessState::Exited, Some(started_at))) => {
                tracing::warn!(container_id = %c.id, "container was started by an interrupted StartContainer; recording it running");
                self.adopt_start(c, started_at)
            }
            Some((ProcessState::StartFailed, _)) => {
                c.state = ContainerState::Exited;
                c.finished_at = now();
                c.exit_code = 128;
                c.reason = "StartError".into();
                c.message = "the start failed while crustd was down".into();
                self.commit_container(c, Some(ContainerState::Created))
            }
            _ => self.refresh_container(c),
        }
    }

    /// What the pod's monitor says of `c`'s process and its start time; `None` when
    /// the monitor is gone, does not answer, or does not know the container.
    async fn monitor_process(&self, c: &Container) -> Option<(ProcessState, Option<i64>)> {
        let sandbox = self.snapshot(&c.pod_id)?;
        if !sandbox.monitor.is_some_and(|m| m.monitor.is_alive()) {
            return None;
        }
        let req = Request::ContainerStatus { id: c.id.clone() };
        let reply = self
            .ask_monitor(&sandbox.monitor_socket(), &c.id, &req, MONITOR_TIMEOUT)
            .await
            .inspect_err(|error| tracing::warn!(container_id = %c.id, %error, "monitor did not say how the container is"))
            .ok()?;
        if !reply.ok {
            return None;
        }
        Some((reply.process?, reply.started_at))
    }

    /// Records a start the monitor made: Created -> Running at `started_at`, then the
    /// exit if it is recorded already.
    fn adopt_start(&self, c: &mut Container, started_at: i64) -> Result<(), RuntimeError> {
        let mut running = c.clone();
        running.state = ContainerState::Running;
        running.started_at = started_at;
        self.commit_container(&running, Some(ContainerState::Created))?;
        *c = running;
        self.refresh_container(c)
    }
}
