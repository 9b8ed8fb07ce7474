//! ExecSync: run a command in a running container and collect its output.
//!
//! crustd starts `crust-monitor exec` (a fresh process: it may setns and fork) in a
//! cgroup of its own below the container's, so a timeout, or a child that keeps the
//! output pipes open after the command exits, is dealt with by killing that cgroup:
//! the whole process tree, whatever it forked.

use std::{process::Stdio, time::Duration};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{io::AsyncReadExt, process::Command};
use tracing::Instrument;

use super::ContainerState;
use crate::{error::RuntimeError, sandbox::SandboxManager};

/// The largest `exec_output_limit` (per stream): both streams together, plus the
/// response's framing, must stay below kubelet's and crustd's 16 MiB gRPC messages.
pub const EXEC_OUTPUT_LIMIT: usize = (16 << 20) / 2 - 64 * 1024;

/// What an exec produced.
#[derive(Debug, Clone, Default)]
pub struct ExecResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

async fn read_capped(mut pipe: impl tokio::io::AsyncRead + Unpin, limit: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut truncated = false;
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, truncated),
            Ok(n) => {
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
}

impl SandboxManager {
    /// Runs `command` in the running container `id`. `timeout` zero means none. A
    /// command still running at the timeout is killed with its whole process tree and
    /// the call fails with [`RuntimeError::DeadlineExceeded`].
    pub async fn exec_sync(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        let prepared = {
            let _span = crate::step_span!("exec.prepare").entered();
            self.exec_command(id, command, false)?
        };
        let (id, exec_cgroup, mut cmd) = prepared;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawned = cmd.spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = self
                    .cgroup_blocking(move |cgroups| cgroups.remove(&exec_cgroup))
                    .await;
                return Err(RuntimeError::Io {
                    kind: "container",
                    id,
                    op: "start exec helper",
                    path: self.config.monitor_bin.clone(),
                    source: e,
                });
            }
        };
        let limit = self.config.exec_output_limit;
        let stdout = tokio::spawn(read_capped(child.stdout.take().expect("piped"), limit));
        let stderr = tokio::spawn(read_capped(child.stderr.take().expect("piped"), limit));
        let waited = async {
            if timeout.is_zero() {
                Ok(child.wait().await)
            } else {
                tokio::time::timeout(timeout, child.wait()).await
            }
        }
        .instrument(crate::step_span!("exec.run"))
        .await;
        if waited.is_err()
            && let Some(helper) = child.id()
        {
            // The command's processes die first and the helper lives on to reap its
            // child: that child is in the container's PID namespace while the helper
            // is not, so once orphaned it went to the host's PID 1 and stayed a zombie
            // the container could see for seconds.
            let doomed = exec_cgroup.clone();
            let _ = self
                .cgroup_blocking(move |cgroups| {
                    for pid in cgroups.procs_below(&doomed).unwrap_or_default() {
                        if u32::try_from(pid).ok() != Some(helper) {
                            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                        }
                    }
                })
                .await;
            let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
        }
        // Whatever the outcome, nothing of this exec may outlive it: this also closes
        // pipes a lingering child still held, so the readers below finish.
        let doomed = exec_cgroup.clone();
        let _ = self
            .cgroup_blocking(move |cgroups| cgroups.kill_all(&doomed))
            .instrument(crate::step_span!("exec.kill_rest"))
            .await;
        let _ = child.kill().await;
        let collect = |task: tokio::task::JoinHandle<(Vec<u8>, bool)>| async move {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        };
        let ((out, out_cut), (mut err, err_cut)) = (collect(stdout).await, collect(stderr).await);
        self.return_exec_cgroup(&id, exec_cgroup)
            .instrument(crate::step_span!("exec.return_cgroup"))
            .await;
        let status = match waited {
            Err(_) => {
                return Err(RuntimeError::DeadlineExceeded {
                    id,
                    what: format!("exec {:?}", command[0]),
                    after: timeout,
                });
            }
            Ok(status) => status.map_err(|e| RuntimeError::Io {
                kind: "container",
                id: id.clone(),
                op: "wait for exec",
                path: self.config.monitor_bin.clone(),
                source: e,
            })?,
        };
        if out_cut || err_cut {
            err.extend_from_slice(
                format!("\n[crust: exec output truncated at {limit} bytes per stream]\n")
                    .as_bytes(),
            );
        }
        Ok(ExecResult {
            stdout: out,
            stderr: err,
            exit_code: status.code().unwrap_or(255),
        })
    }

    /// Prepares `crust-monitor exec` for `command` in the running container `id`: its
    /// own cgroup below the container's (created here; the caller removes it) and the
    /// helper's command line. `tty`: the helper's stdin is a unix socket it sends the
    /// master of a pty from the container's devpts over (see `monitor::exec`).
    /// Returns the full container id, the exec cgroup and the command.
    pub(crate) fn exec_command(
        &self,
        id: &str,
        command: &[String],
        tty: bool,
    ) -> Result<(String, String, Command), RuntimeError> {
        let c = self.running_container(id)?;
        let id = c.id.clone();
        if command.is_empty() {
            return Err(RuntimeError::InvalidArgument {
                field: "cmd",
                reason: "is empty".into(),
            });
        }
        let pid = c.pid.ok_or_else(|| RuntimeError::ContainerState {
            id: id.clone(),
            state: c.state,
            wanted: "running",
        })?;
        let cgroups = self.cgroups()?;
        let exec_cgroup = self.take_exec_cgroup(&c)?;
        let mut cmd = Command::new(&self.config.monitor_bin);
        cmd.arg("exec")
            .arg("--spec")
            .arg(c.spec_file())
            .arg("--pid")
            .arg(pid.pid.to_string())
            .arg("--start-time")
            .arg(pid.start_time.to_string());
        if tty {
            cmd.arg("--tty").arg("1");
        }
        for dir in cgroups.dirs(&exec_cgroup) {
            cmd.arg("--cgroup").arg(dir);
        }
        cmd.arg("--").args(command);
        Ok((id, exec_cgroup, cmd))
    }

    /// The container `id` (or unique prefix), which must be running.
    pub(crate) fn running_container(&self, id: &str) -> Result<super::Container, RuntimeError> {
        let c = self.container_status(id)?;
        if c.state != ContainerState::Running {
            return Err(RuntimeError::ContainerState {
                id: c.id,
                state: c.state,
                wanted: "running",
            });
        }
        Ok(c)
    }

    /// ReopenContainerLog: the monitor reopens the log file (kubelet rotated it).
    pub async fn reopen_container_log(&self, id: &str) -> Result<(), RuntimeError> {
        let c = self.running_container(id)?;
        let id = c.id.clone();
        let socket =
            self.snapshot(&c.pod_id)
                .map(|s| s.monitor_socket())
                .ok_or(RuntimeError::NotReady {
                    id: c.pod_id.clone(),
                })?;
        let reopen = crate::monitor::Request::ReopenLog { id: id.clone() };
        self.order_monitor(&socket, &id, &reopen, crate::sandbox::MONITOR_TIMEOUT)
            .await?;
        Ok(())
    }
}
