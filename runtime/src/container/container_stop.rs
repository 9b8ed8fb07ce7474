//! StopContainer, and learning exits from the monitor's exit files.

use std::{fs, time::Duration};

use tracing::Instrument;

use super::{Container, ContainerState, container_create::now, stop_signal};
use crate::{
    error::RuntimeError,
    monitor::{self, ExitRecord, Request},
    sandbox::{MONITOR_TIMEOUT, SandboxManager},
};

impl SandboxManager {
    /// Turns a recorded exit into state: Running (or Created) with an exit file becomes
    /// Exited with its code, time and reason: `OOMKilled` when the OOM killer killed
    /// any process of the container's cgroup during its life, whichever process that
    /// was and however the main process then ended (containerd: the cgroup's OOM
    /// events), except kills crust's own stop explains (see
    /// [`SandboxManager::note_oom_baseline`]).
    pub(crate) fn refresh_container(&self, c: &mut Container) -> Result<(), RuntimeError> {
        if !matches!(c.state, ContainerState::Running | ContainerState::Created) {
            return Ok(());
        }
        let Ok(bytes) = fs::read(c.exit_file()) else {
            // A process that vanished without an exit file, and no monitor left to write
            // one (monitor killed, reboot). While the monitor lives, the file is coming.
            let monitor_alive = self
                .snapshot(&c.pod_id)
                .and_then(|s| s.monitor)
                .is_some_and(|m| m.monitor.is_alive());
            if c.pid.is_some_and(|p| !p.is_alive()) && !monitor_alive {
                let message =
                    "the container's process is gone and its exit was not recorded".to_string();
                self.record_exit(c, now(), 255, "Unknown", message)?;
            }
            return Ok(());
        };
        let Ok(exit) = serde_json::from_slice::<ExitRecord>(&bytes) else {
            return Ok(());
        };
        // The baseline from the latest record: `c` may be a copy taken before
        // StopContainer recorded it.
        let baseline = self
            .containers
            .read()
            .expect("containers poisoned")
            .get(&c.id)
            .and_then(|now| now.oom_kills_before_kill)
            .or(c.oom_kills_before_kill)
            .unwrap_or(0);
        // The count the monitor saw at the exit, or (older monitors) what the cgroup
        // says now, if it is still there.
        let kills = exit
            .oom_kills
            .unwrap_or(0)
            .max(self.oom_kill_count(&c.cgroup));
        let oom = kills > baseline;
        let reason = if oom {
            "OOMKilled"
        } else if exit.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        self.record_exit(c, exit.finished_at, exit.exit_code, reason, String::new())
    }

    /// Moves the current record (not `c`, which may be a stale copy) to Exited, and
    /// refreshes `c` from it. Losing a race to another transition or a removal is fine:
    /// `c` then shows whatever won.
    fn record_exit(
        &self,
        c: &mut Container,
        finished_at: i64,
        exit_code: i32,
        reason: &str,
        message: String,
    ) -> Result<(), RuntimeError> {
        let Ok(mut current) = self.container_snapshot(&c.id) else {
            return Ok(());
        };
        if !matches!(
            current.state,
            ContainerState::Running | ContainerState::Created
        ) {
            *c = current;
            return Ok(());
        }
        let from = current.state;
        current.state = ContainerState::Exited;
        current.finished_at = finished_at;
        current.exit_code = exit_code;
        current.reason = reason.into();
        current.message = message;
        match self.commit_container(&current, Some(from)) {
            Ok(()) => {
                *c = current;
                Ok(())
            }
            Err(RuntimeError::ContainerState { .. }) => {
                if let Ok(now) = self.container_snapshot(&c.id) {
                    *c = now;
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Remembers what the OOM killer had done in the container's cgroup when crust
    /// began ending it (StopContainer, RemoveContainer, the pod's stop): the exit that
    /// follows is crust's doing, and counts as OOMKilled only if the OOM killer acted
    /// after this point. Once per container; a failure to keep it is logged, not fatal.
    pub(crate) fn note_oom_baseline(&self, c: &mut Container) {
        if c.oom_kills_before_kill.is_some()
            || !matches!(c.state, ContainerState::Running | ContainerState::Created)
        {
            return;
        }
        c.oom_kills_before_kill = Some(self.oom_kill_count(&c.cgroup));
        if let Err(e) = self.update_container_record(c) {
            tracing::debug!(container_id = %c.id, error = %e, "OOM baseline not kept");
        }
    }

    /// How many processes the OOM killer has killed in the container's cgroup.
    fn oom_kill_count(&self, cgroup: &str) -> u64 {
        let Ok(cgroups) = self.cgroups() else {
            return 0;
        };
        crate::cgroup::oom_kills(&cgroups.dirs(cgroup))
    }

    /// Stops a container: its stop signal, then after `timeout` SIGKILL to every process
    /// in its cgroup (the whole tree). A missing or stopped container is fine.
    pub async fn stop_container(
        &self,
        id_or_prefix: &str,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        let Some(id) = self.resolve_container_if_present(id_or_prefix)? else {
            return Ok(());
        };
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let mut c = self.container_snapshot(&id)?;
        self.kill_container(&mut c, timeout).await
    }

    pub(crate) async fn kill_container(
        &self,
        c: &mut Container,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        self.refresh_container(c)?;
        if !matches!(c.state, ContainerState::Running | ContainerState::Created) {
            return Ok(());
        }
        if c.state == ContainerState::Created && c.spec.restore.is_some() && c.pid.is_none() {
            // Created from a checkpoint and not restored yet: no process exists, so
            // no exit file will come. It ends here, as a created container killed.
            let message = "stopped before StartContainer restored it".to_string();
            return self.record_exit(c, now(), 137, "Error", message);
        }
        let socket = self.snapshot(&c.pod_id).map(|s| s.monitor_socket());
        self.note_oom_baseline(c);
        if c.state == ContainerState::Running && !timeout.is_zero() {
            let name = stop_signal(&c.spec, &c.image.config);
            let signal = signal_number(&name).unwrap_or(15);
            if let Some(socket) = &socket {
                let _ = monitor::request(
                    socket,
                    &Request::Signal {
                        id: c.id.clone(),
                        signal,
                    },
                    MONITOR_TIMEOUT,
                )
                .await;
            }
            self.wait_exit_file(c, tokio::time::Instant::now() + timeout)
                .await;
        }
        if !c.exit_file().exists() {
            self.kill_and_wait(c, socket.as_deref())
                .instrument(crate::step_span!("ctr.kill"))
                .await;
        }
        let _span = crate::step_span!("ctr.record").entered();
        self.refresh_container(c)?;
        if matches!(c.state, ContainerState::Running | ContainerState::Created) {
            return Err(RuntimeError::Teardown {
                kind: "container",
                id: c.id.clone(),
                errors: vec!["container still running after SIGKILL".into()],
            });
        }
        tracing::info!(container_id = %c.id, exit_code = c.exit_code, "container stopped");
        Ok(())
    }
}

impl SandboxManager {
    /// SIGKILL for everything in the container's cgroup and (through its monitor) its
    /// main process, then the wait for the monitor's exit record.
    async fn kill_and_wait(&self, c: &Container, socket: Option<&std::path::Path>) {
        let cgroup = c.cgroup.clone();
        let _ = self
            .cgroup_blocking(move |cgroups| cgroups.kill_all(&cgroup))
            .await;
        if let Some(socket) = socket {
            let _ = monitor::request(
                socket,
                &Request::Signal {
                    id: c.id.clone(),
                    signal: 9,
                },
                MONITOR_TIMEOUT,
            )
            .await;
        }
        // The exit file is the answer; a vanished pid only means it is near: the
        // monitor reaps, then writes the file, and under load that gap has been
        // seen to outlast a single poll (RemoveContainer then failed "still
        // running"). A monitor that is gone never writes it: one second of grace.
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let step = tokio::time::Instant::now() + Duration::from_millis(100);
            if self.wait_exit_file(c, step.min(until)).await || tokio::time::Instant::now() >= until
            {
                break;
            }
            if c.pid.is_some_and(|p| !p.is_alive()) {
                // Gone without a record yet: one second more, then give up.
                let grace = tokio::time::Instant::now() + Duration::from_secs(1);
                self.wait_exit_file(c, grace.min(until)).await;
                break;
            }
        }
    }
}

/// `SIGTERM`, `TERM` or `15` -> 15.
pub(crate) fn signal_number(name: &str) -> Option<i32> {
    if let Ok(n) = name.parse::<i32>() {
        return Some(n);
    }
    let upper = name.to_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        for (name, want) in [
            ("SIGTERM", Some(15)),
            ("TERM", Some(15)),
            ("sigquit", Some(3)),
            ("9", Some(9)),
            ("SIGNOPE", None),
        ] {
            assert_eq!(signal_number(name), want, "{name}");
        }
    }
}
