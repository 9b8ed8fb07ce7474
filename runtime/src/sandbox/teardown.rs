//! Releasing what a pod holds. Shared by rollback, StopPodSandbox, RemovePodSandbox and
//! recovery, so it must cope with any partial state: idempotent and best-effort (it
//! goes on past failures, reports them all, and treats "already gone" as success).

use std::{fs, io::ErrorKind, time::Duration};

use nix::{
    errno::Errno,
    mount::{MntFlags, umount2},
};

use tracing::Instrument;

use super::{MONITOR_TIMEOUT, Sandbox, SandboxManager};
use crate::{
    error::RuntimeError,
    monitor::{self, MonitorPids, Request},
};

/// How long a monitor that accepted Shutdown gets to exit before it is killed.
const MONITOR_EXIT_TIMEOUT: Duration = Duration::from_secs(2);

/// Namespace pins a pod may have.
pub(super) const PINS: [&str; 5] = ["net", "ipc", "uts", "pid", "user"];

impl SandboxManager {
    /// Stops the monitor and every pod process, unpins namespaces and unmounts shm.
    /// With `full`, also deletes the pod's files, pins directory and cgroups.
    pub(super) async fn teardown(&self, sandbox: &Sandbox, full: bool) -> Result<(), RuntimeError> {
        let mut errors: Vec<String> = Vec::new();

        // The pod network, while its namespace is still pinned (CNI DEL needs it; after
        // a reboot it is gone, which plugins tolerate).
        if sandbox.spec.namespaces.network != super::NsMode::Node
            && let Some(network) = self.network.as_ref()
            && let Err(e) = network
                .teardown(&sandbox.id, &sandbox.pin("net"))
                .instrument(crate::step_span!("pod.network_teardown"))
                .await
        {
            errors.push(format!("network teardown: {e}"));
        }

        // The pod's containers are ended by crust from here on: what the OOM killer did
        // before is kept, so these kills are not reported as its work.
        let live: Vec<crate::container::Container> = self
            .containers
            .read()
            .expect("containers poisoned")
            .values()
            .filter(|c| c.pod_id == sandbox.id)
            .cloned()
            .collect();
        for mut c in live {
            self.note_oom_baseline(&mut c);
        }

        // The monitor, from the record or (after a crash mid-create) its pid file.
        let pids: Option<MonitorPids> = sandbox.monitor.or_else(|| {
            fs::read(sandbox.pod_dir.join("monitor.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
        });
        // The monitor kills the pod init (and with it the pod's PID namespace) and
        // exits; its exit is waited for on a pidfd, not by polling.
        async {
            let Some(pids) = pids else { return };
            if pids.monitor.is_alive() {
                let asked = monitor::request(
                    &sandbox.monitor_socket(),
                    &Request::Shutdown,
                    MONITOR_TIMEOUT,
                )
                .await;
                if let Err(error) = &asked {
                    tracing::warn!(pod_id = %sandbox.id, %error, "monitor did not accept shutdown; killing it");
                }
                if asked.is_ok() {
                    pids.monitor.wait_gone(MONITOR_EXIT_TIMEOUT).await;
                }
                pids.monitor.kill();
            }
            if let Some(init) = pids.init {
                init.kill();
            }
        }
        .instrument(crate::step_span!("pod.monitor_stop"))
        .await;

        // Every container of the pod, by cgroup: whatever state the monitor was in (dead,
        // hung, or a hostPID container whose children are not in a pod PID namespace),
        // nothing of the pod may keep running once it is stopped (CRI: "force-kill").
        let containers: Vec<String> = self
            .containers
            .read()
            .expect("containers poisoned")
            .values()
            .filter(|c| c.pod_id == sandbox.id)
            .map(|c| c.cgroup.clone())
            .collect();
        let init_cgroup = sandbox.init_cgroup.clone();
        let killed = self
            .cgroup_blocking(move |cgroups| {
                containers
                    .iter()
                    .chain(init_cgroup.iter())
                    .filter_map(|cg| cgroups.kill_all(cg).err())
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
            })
            .instrument(crate::step_span!("pod.kill_cgroups"))
            .await;
        errors.extend(killed.unwrap_or_default());
        // Under systemd each monitor has a scope of its own, done with once the
        // monitor is (the cgroupfs driver's monitor cgroup is shared and stays).
        if self.systemd_driver()
            && let Err(e) = self
                .remove_cgroup(&self.monitor_cgroup_path(&sandbox.id))
                .await
        {
            errors.push(e.to_string());
        }

        let unpin_span = crate::step_span!("pod.unpin").entered();
        for ns in PINS {
            let pin = sandbox.pin(ns);
            let before = errors.len();
            unmount(&pin, &mut errors);
            // An unmounted pin is an empty file; remove it so nothing mistakes it for a
            // live namespace.
            if errors.len() == before
                && let Err(e) = fs::remove_file(&pin)
                && e.kind() != ErrorKind::NotFound
            {
                errors.push(format!("remove {}: {e}", pin.display()));
            }
        }
        unmount(&sandbox.shm_dir(), &mut errors);
        drop(unpin_span);

        if full {
            // The pod's files and its cgroups are independent: removed side by side
            // (under load a directory removal waits for the journal, a cgroup removal
            // for the kernel to free the cgroup).
            let (socket, dirs) = (
                sandbox.socket.clone(),
                [sandbox.pins_dir.clone(), sandbox.pod_dir.clone()],
            );
            let files = tokio::task::spawn_blocking(move || {
                let mut errors = Vec::new();
                match fs::remove_file(&socket) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => errors.push(format!("remove {}: {e}", socket.display())),
                }
                for dir in &dirs {
                    match fs::remove_dir_all(dir) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => errors.push(format!("remove {}: {e}", dir.display())),
                    }
                }
                errors
            })
            .instrument(crate::step_span!("pod.remove_files"));
            let mut owned: Vec<String> = Vec::new();
            if self.systemd_driver() {
                // The container scopes before their slice: a slice with other pods'
                // scopes in it is not stopped (see `remove_cgroup`).
                owned.extend(
                    self.containers
                        .read()
                        .expect("containers poisoned")
                        .values()
                        .filter(|c| c.pod_id == sandbox.id)
                        .map(|c| c.cgroup.clone()),
                );
            }
            owned.extend(sandbox.init_cgroup.iter().cloned());
            if sandbox.cgroup_created {
                owned.push(sandbox.cgroup.clone());
            }
            let cgroups = async {
                let mut errors = Vec::new();
                for cg in owned {
                    if let Err(e) = self
                        .remove_cgroup(&cg)
                        .instrument(crate::step_span!("pod.remove_cgroups"))
                        .await
                    {
                        errors.push(e.to_string());
                    }
                }
                errors
            };
            let (files, cgroups) = tokio::join!(files, cgroups);
            match files {
                Ok(file_errors) => errors.extend(file_errors),
                Err(e) => errors.push(format!("remove the pod's files: {e}")),
            }
            errors.extend(cgroups);
        }

        if errors.is_empty() {
            Ok(())
        } else {
            Err(RuntimeError::Teardown {
                kind: "pod sandbox",
                id: sandbox.id.clone(),
                errors,
            })
        }
    }
}

/// Lazily unmounts `path`; not mounted or not there is fine.
fn unmount(path: &std::path::Path, errors: &mut Vec<String>) {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
        Err(e) => errors.push(format!("unmount {}: {e}", path.display())),
    }
}
