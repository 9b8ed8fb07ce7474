//! RemoveContainer: stop it if needed, then delete its files, cgroup and record.

use std::{fs, io::ErrorKind, time::Duration};

use tracing::Instrument;

use super::Container;
use crate::{error::RuntimeError, sandbox::SandboxManager};

impl SandboxManager {
    /// Idempotent: removing a missing container succeeds (CRI contract).
    pub async fn remove_container(&self, id_or_prefix: &str) -> Result<(), RuntimeError> {
        let Some(id) = self.resolve_container_if_present(id_or_prefix)? else {
            return Ok(());
        };
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let mut c = self.container_snapshot(&id)?;
        self.kill_container(&mut c, Duration::ZERO).await?;
        self.remove_container_files(&c).await?;
        let _span = crate::step_span!("ctr.forget").entered();
        self.forget_container(&c)?;
        tracing::info!(container_id = %id, "container removed");
        Ok(())
    }

    /// Deletes what a container has on disk and its cgroup. Best-effort and
    /// idempotent. The built-in launcher's rootfs overlay lives in the container's
    /// mount namespace; an OCI runtime's is on the host at `<dir>/rootfs`, which the
    /// monitor unmounts, and which is unmounted here too in case the monitor is gone
    /// (before the directory is emptied: removing through the overlay would write
    /// whiteouts, not free the layer).
    pub(crate) async fn remove_container_files(&self, c: &Container) -> Result<(), RuntimeError> {
        let mut errors = Vec::new();
        // The monitor forgets it too (closes its pipes and log). A dead monitor has
        // nothing to forget, so a failure here is not an error.
        if let Some(sandbox) = self.snapshot(&c.pod_id)
            && sandbox.monitor.is_some_and(|m| m.monitor.is_alive())
        {
            let req = crate::monitor::Request::RemoveContainer { id: c.id.clone() };
            let _ = crate::monitor::request(
                &sandbox.monitor_socket(),
                &req,
                crate::sandbox::MONITOR_TIMEOUT,
            )
            .instrument(crate::step_span!("ctr.monitor_forget"))
            .await;
        }
        let unmount_span = crate::step_span!("ctr.unmount").entered();
        errors.extend(super::image_mounts::unmount_image_volumes(&c.dir));
        let rootfs = c.dir.join("rootfs");
        match nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => errors.push(format!("unmount {}: {e}", rootfs.display())),
        }
        errors.extend(super::userns_rootfs::remove(&self.config.state_dir, &c.id));
        drop(unmount_span);
        self.forget_exec_cgroups(&c.id);
        if let Err(e) = self
            .remove_cgroup(&c.cgroup)
            .instrument(crate::step_span!("ctr.remove_cgroup"))
            .await
        {
            errors.push(e.to_string());
        }
        let _span = crate::step_span!("ctr.remove_dirs").entered();
        // An OCI runtime's state of the container, if its monitor could not delete it.
        let runtime_state = self.config.state_dir.join("runc").join(&c.id);
        for dir in [&c.dir, &c.bundle, &runtime_state] {
            match fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => errors.push(format!("remove {}: {e}", dir.display())),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(RuntimeError::Teardown {
                kind: "container",
                id: c.id.clone(),
                errors,
            })
        }
    }
}
