//! CheckpointContainer: a running container of an `oci` handler, dumped by its OCI
//! runtime (runc/crun driving CRIU) while it keeps running, into a tar archive in the
//! layout CRI-O and containerd write (what checkpointctl reads and their restore
//! takes): `checkpoint/` (CRIU's images), `config.dump` (who was checkpointed, from
//! which image, when), `spec.dump` (the OCI spec it ran with), `rootfs-diff.tar` (the
//! writable layer) and CRIU's `stats-dump`.
//!
//! The built-in launcher has no CRIU integration: its containers are refused. Restore
//! (CreateContainer from such an archive) is [`super::container_restore`].

use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use super::{Container, ContainerState};
use crate::{error::RuntimeError, sandbox::SandboxManager};

/// `config.dump`: checkpointctl's `metadata.ContainerConfig` (the field names are
/// what CRI-O and containerd write and read back at restore).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigDump<'a> {
    id: &'a str,
    name: &'a str,
    rootfs_image: &'a str,
    rootfs_image_ref: &'a str,
    rootfs_image_name: &'a str,
    #[serde(rename = "runtime")]
    oci_runtime: String,
    created_time: String,
    checkpointed_time: String,
}

impl SandboxManager {
    /// Checkpoints running container `id` into a tar archive at `location` (absolute,
    /// in an existing directory; the server checked), within `timeout`. The archive
    /// appears whole or not at all (written next to it, then renamed); the scratch
    /// directory is removed either way. The container keeps running.
    pub async fn checkpoint_container(
        &self,
        id: &str,
        location: &Path,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        let id = self.resolve_container(id)?;
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let c = self.container_status(&id)?;
        if c.state != ContainerState::Running {
            return Err(RuntimeError::ContainerState {
                id,
                state: c.state,
                wanted: "running",
            });
        }
        let sandbox = self.status(&c.pod_id)?.sandbox;
        let Some(binary) = self.config.oci_runtimes.get(&sandbox.spec.runtime_handler) else {
            return Err(RuntimeError::Unsupported {
                what: "CheckpointContainer of a built-in launcher container",
                reason: format!(
                    "checkpoint needs an `oci` runtime handler (runc or crun with CRIU); \
                     pod {} runs under handler {:?}, the built-in launcher",
                    c.pod_id, sandbox.spec.runtime_handler
                ),
            });
        };
        let root = self.config.state_dir.join("runc");
        let parent = location.parent().unwrap_or(Path::new("/"));
        let name = location
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let scratch = parent.join(format!(
            ".{name}.crust-checkpoint-{}-{nonce}",
            std::process::id()
        ));
        let io = |op: &'static str, path: &Path, source| RuntimeError::Io {
            kind: "container",
            id: id.clone(),
            op,
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir(&scratch).map_err(|e| io("create", &scratch, e))?;
        let result = async {
            dump(binary, &root, &c, &scratch, timeout).await?;
            let c2 = c.clone();
            let runtime = binary.display().to_string();
            let scratch2 = scratch.clone();
            let location = location.to_path_buf();
            tokio::task::spawn_blocking(move || write_archive(&c2, &runtime, &scratch2, &location))
                .await
                .map_err(|e| RuntimeError::Checkpoint {
                    id: id.clone(),
                    message: format!("archive task: {e}"),
                })?
                .map_err(|(op, path, source)| io(op, &path, source))
        }
        .await;
        if let Err(e) = fs::remove_dir_all(&scratch) {
            tracing::warn!(path = %scratch.display(), error = %e, "remove checkpoint scratch directory");
        }
        result
    }
}

/// `<runtime> --root R checkpoint --leave-running`: CRIU freezes the container's
/// processes, writes their images to `<scratch>/checkpoint` and lets them go on.
async fn dump(
    binary: &Path,
    root: &Path,
    c: &Container,
    scratch: &Path,
    timeout: Duration,
) -> Result<(), RuntimeError> {
    let images = scratch.join("checkpoint");
    let work = scratch.join("work");
    for d in [&images, &work] {
        fs::create_dir(d).map_err(|source| RuntimeError::Io {
            kind: "container",
            id: c.id.clone(),
            op: "create",
            path: d.clone(),
            source,
        })?;
    }
    let mut cmd = tokio::process::Command::new(binary);
    cmd.arg("--root")
        .arg(root)
        .arg("checkpoint")
        .arg("--leave-running")
        .arg("--image-path")
        .arg(&images)
        .arg("--work-path")
        .arg(&work)
        .arg(&c.id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| RuntimeError::Checkpoint {
        id: c.id.clone(),
        message: format!("run {} checkpoint: {e}", binary.display()),
    })?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => out.map_err(|e| RuntimeError::Checkpoint {
            id: c.id.clone(),
            message: format!("wait for {} checkpoint: {e}", binary.display()),
        })?,
        // Dropping the future kills the runtime (kill_on_drop). runc drives criu in swrk
        // mode over a socket pair; criu is expected to unfreeze the tasks when its peer
        // goes (not tested here: no dump ran past its timeout in the guest).
        Err(_) => {
            return Err(RuntimeError::DeadlineExceeded {
                id: c.id.clone(),
                what: "checkpoint".into(),
                after: timeout,
            });
        }
    };
    if out.status.success() {
        return Ok(());
    }
    // runc names CRIU's log; its tail says what CRIU could not dump.
    let log = fs::read_to_string(work.join("dump.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    Err(RuntimeError::Checkpoint {
        id: c.id.clone(),
        message: format!(
            "{} checkpoint: {}: {}{}{}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            if tail.is_empty() {
                ""
            } else {
                "; CRIU's dump.log ends:\n"
            },
            tail
        ),
    })
}

type IoFail = (&'static str, PathBuf, std::io::Error);

/// Writes the archive next to `location` and renames it into place.
fn write_archive(
    c: &Container,
    runtime: &str,
    scratch: &Path,
    location: &Path,
) -> Result<(), IoFail> {
    let now = SystemTime::now();
    let created = UNIX_EPOCH + Duration::from_nanos(c.created_at.max(0) as u64);
    let config = ConfigDump {
        id: &c.id,
        name: &c.spec.metadata.name,
        rootfs_image: &c.image.reference,
        rootfs_image_ref: &c.image.id,
        rootfs_image_name: &c.image.reference,
        oci_runtime: runtime.to_string(),
        created_time: humantime::format_rfc3339_nanos(created).to_string(),
        checkpointed_time: humantime::format_rfc3339_nanos(now).to_string(),
    };
    let config_path = scratch.join("config.dump");
    let json = serde_json::to_vec_pretty(&config).expect("plain struct serializes");
    fs::write(&config_path, json).map_err(|e| ("write", config_path.clone(), e))?;

    // The writable layer as it is now (overlayfs whiteouts stay 0:0 device nodes).
    let diff = scratch.join("rootfs-diff.tar");
    let upper = c.dir.join("upper");
    {
        let file = File::create(&diff).map_err(|e| ("create", diff.clone(), e))?;
        let mut tar = tar::Builder::new(file);
        tar.follow_symlinks(false);
        tar.append_dir_all(".", &upper)
            .map_err(|e| ("archive", upper.clone(), e))?;
        tar.into_inner()
            .and_then(|mut f| f.flush())
            .map_err(|e| ("write", diff.clone(), e))?;
    }

    let tmp = scratch.parent().unwrap_or(Path::new("/")).join(format!(
        "{}.tmp",
        scratch.file_name().unwrap_or_default().to_string_lossy()
    ));
    let built = (|| {
        let file = File::create(&tmp).map_err(|e| ("create", tmp.clone(), e))?;
        let mut tar = tar::Builder::new(file);
        tar.follow_symlinks(false);
        let images = scratch.join("checkpoint");
        tar.append_dir_all("checkpoint", &images)
            .map_err(|e| ("archive", images.clone(), e))?;
        let spec = c.spec_file();
        tar.append_path_with_name(&spec, "spec.dump")
            .map_err(|e| ("archive", spec.clone(), e))?;
        tar.append_path_with_name(&config_path, "config.dump")
            .map_err(|e| ("archive", config_path.clone(), e))?;
        tar.append_path_with_name(&diff, "rootfs-diff.tar")
            .map_err(|e| ("archive", diff.clone(), e))?;
        // CRIU writes its statistics into the work directory.
        let stats = scratch.join("work/stats-dump");
        if stats.exists() {
            tar.append_path_with_name(&stats, "stats-dump")
                .map_err(|e| ("archive", stats.clone(), e))?;
        }
        let file = tar.into_inner().map_err(|e| ("write", tmp.clone(), e))?;
        file.sync_all().map_err(|e| ("sync", tmp.clone(), e))?;
        fs::rename(&tmp, location).map_err(|e| ("rename", location.to_path_buf(), e))
    })();
    if built.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    built
}
