//! Container verbs, as crictl has them: create, start, run, stop, rm, ps, inspect, logs,
//! update, checkpoint.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::Subcommand;
use crust_ctl::{
    cri_log::{LogLine, LogReader, Stream},
    output::{self, Format},
};
use crust_proto::runtime::v1::{
    CheckpointContainerRequest, ContainerConfig, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, LinuxContainerResources, ListContainersRequest, RemoveContainerRequest,
    RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    UpdateContainerResourcesRequest,
};
use serde_json::Value;
use tonic::transport::Channel;

#[derive(Subcommand)]
pub enum ContainerCommand {
    /// Create a container in a pod from a container config file (JSON or YAML).
    Create {
        pod_id: String,
        container_config: PathBuf,
        pod_config: PathBuf,
        /// Pull the container's image first (as crictl's --with-pull).
        #[arg(long)]
        with_pull: bool,
    },
    /// Start created containers.
    Start {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Run a pod and a container in it in one step; prints the container id.
    Run {
        container_config: PathBuf,
        pod_config: PathBuf,
        /// Runtime handler for the pod.
        #[arg(long)]
        runtime: Option<String>,
        /// Pull the container's image first (as crictl's --with-pull).
        #[arg(long)]
        with_pull: bool,
    },
    /// Stop running containers.
    Stop {
        #[arg(required = true)]
        ids: Vec<String>,
        /// Seconds to wait after the stop signal before SIGKILL.
        #[arg(short, long, default_value_t = 10)]
        timeout: i64,
    },
    /// Checkpoint running containers into tar archives (CheckpointContainer): the
    /// runtime writes the archive at the `--export` path on its node.
    Checkpoint {
        #[arg(required = true)]
        ids: Vec<String>,
        /// The tar archive to write (an absolute path on the runtime's node), as
        /// crictl's `--export`.
        #[arg(short, long, required = true)]
        export: String,
    },
    /// Remove containers.
    Rm {
        ids: Vec<String>,
        /// Stop running containers first.
        #[arg(short, long)]
        force: bool,
        /// Remove every container.
        #[arg(short, long)]
        all: bool,
    },
    /// List containers.
    Ps(crate::ps_cmd::PsArgs),
    /// Show containers' status.
    Inspect {
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(short, long, value_enum, default_value = "json")]
        output: Format,
    },
    /// Show containers' resource usage (a table: CONTAINER NAME CPU % MEM DISK INODES).
    Stats(crate::stats_cmd::StatsArgs),
    /// Show pods' resource usage (a table: POD POD ID CPU % MEM).
    Statsp(crate::stats_cmd::StatspArgs),
    /// Change running containers' resource limits (crictl update's flags); limits not
    /// given are sent as 0, which CRI reads as "leave as is".
    Update {
        #[arg(required = true)]
        ids: Vec<String>,
        /// Memory limit in bytes.
        #[arg(long)]
        memory: Option<i64>,
        /// CFS quota in microseconds per period.
        #[arg(long)]
        cpu_quota: Option<i64>,
        /// CFS period in microseconds.
        #[arg(long)]
        cpu_period: Option<i64>,
        /// CPU shares (relative weight).
        #[arg(long)]
        cpu_shares: Option<i64>,
    },
    /// Print a container's logs (from its CRI log file).
    Logs {
        id: String,
        /// Keep printing new output until the container exits.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        /// Prefix each line with its timestamp.
        #[arg(short, long)]
        timestamps: bool,
        /// Only lines since a time (RFC 3339, e.g. 2026-12-06T13:23:37Z) or for a
        /// duration back (e.g. 42m, 10s).
        #[arg(long, value_parser = parse_since)]
        since: Option<std::time::SystemTime>,
        /// The previous attempt's log (the container kubelet restarted this one from).
        #[arg(short, long)]
        previous: bool,
    },
}

/// `--with-pull`: pulls the image `config` names, in the pod's context (kubelet passes
/// the pod config so a runtime can pick per-pod settings), before the container is
/// created. A config without an image is left for CreateContainer to refuse.
async fn pull_first(
    channel: &Channel,
    config: &ContainerConfig,
    pod: &crust_proto::runtime::v1::PodSandboxConfig,
) -> anyhow::Result<()> {
    // An absolute path is a checkpoint archive on the node to restore from, not an
    // image: there is nothing to pull (the image it was made from must be there).
    let Some(image) = config
        .image
        .clone()
        .filter(|i| !i.image.is_empty() && !i.image.starts_with('/'))
    else {
        return Ok(());
    };
    // With crust, progress on stderr as `pull` shows it; stdout keeps only the id.
    crate::pull_progress::pull(
        channel.clone(),
        crust_proto::runtime::v1::PullImageRequest {
            image: Some(image),
            auth: None,
            sandbox_config: Some(pod.clone()),
        },
        crate::pull_progress::ProgressMode::Auto,
        None,
    )
    .await?;
    Ok(())
}

/// `--since`: an RFC 3339 time or a duration back from now, as crictl takes it.
fn parse_since(s: &str) -> Result<std::time::SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    let back = humantime::parse_duration(s)
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a duration like 42m"))?;
    Ok(std::time::SystemTime::now() - back)
}

/// The log of the attempt before the one at `path` (`<dir>/<attempt>.log`, kubelet's
/// layout), as crictl finds it for `logs --previous`.
fn previous_log(path: &str, attempt: u32) -> anyhow::Result<String> {
    let Some(before) = attempt.checked_sub(1) else {
        anyhow::bail!("container is its first attempt (0): there is no previous log");
    };
    let (dir, file) = path.rsplit_once('/').unwrap_or(("", path));
    let ext = file.rsplit_once('.').map_or("", |(_, e)| e);
    anyhow::ensure!(
        !ext.is_empty(),
        "log path {path:?} is not <dir>/<attempt>.log: cannot find the previous attempt's"
    );
    Ok(format!("{dir}/{before}.{ext}"))
}

/// Whether `line` was written at or after `since` (lines with an unreadable time are
/// kept: dropping output silently is worse).
fn after(line: &LogLine, since: Option<std::time::SystemTime>) -> bool {
    since.is_none_or(|since| {
        humantime::parse_rfc3339_weak(&line.timestamp).map_or(true, |t| t >= since)
    })
}

pub async fn run(cmd: ContainerCommand, channel: Channel) -> anyhow::Result<String> {
    let mut client = crust_ctl::runtime_client(channel.clone());
    match cmd {
        ContainerCommand::Create {
            pod_id,
            container_config,
            pod_config,
            with_pull,
        } => {
            let config: ContainerConfig =
                crust_ctl::files::parse_cri_file(&container_config, "ContainerConfig")?;
            let pod = crate::pod_cmds::parse_pod_config(&pod_config)?;
            if with_pull {
                pull_first(&channel, &config, &pod).await?;
            }
            let sandbox_config = Some(pod);
            let req = CreateContainerRequest {
                pod_sandbox_id: pod_id,
                config: Some(config),
                sandbox_config,
            };
            Ok(format!(
                "{}\n",
                client
                    .create_container(req)
                    .await
                    .context("CreateContainer")?
                    .into_inner()
                    .container_id
            ))
        }
        ContainerCommand::Start { ids } => {
            let mut out = String::new();
            for id in ids {
                client
                    .start_container(StartContainerRequest {
                        container_id: id.clone(),
                    })
                    .await
                    .with_context(|| format!("start {id}"))?;
                out.push_str(&format!("{id}\n"));
            }
            Ok(out)
        }
        ContainerCommand::Run {
            container_config,
            pod_config,
            runtime,
            with_pull,
        } => {
            let config: ContainerConfig =
                crust_ctl::files::parse_cri_file(&container_config, "ContainerConfig")?;
            let pod = crate::pod_cmds::parse_pod_config(&pod_config)?;
            if with_pull {
                pull_first(&channel, &config, &pod).await?;
            }
            let pod_id = client
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(pod.clone()),
                    runtime_handler: runtime.unwrap_or_default(),
                })
                .await
                .context("RunPodSandbox")?
                .into_inner()
                .pod_sandbox_id;
            let req = CreateContainerRequest {
                pod_sandbox_id: pod_id,
                config: Some(config),
                sandbox_config: Some(pod),
            };
            let id = client
                .create_container(req)
                .await
                .context("CreateContainer")?
                .into_inner()
                .container_id;
            client
                .start_container(StartContainerRequest {
                    container_id: id.clone(),
                })
                .await
                .context("StartContainer")?;
            Ok(format!("{id}\n"))
        }
        ContainerCommand::Update {
            ids,
            memory,
            cpu_quota,
            cpu_period,
            cpu_shares,
        } => {
            let linux = LinuxContainerResources {
                memory_limit_in_bytes: memory.unwrap_or(0),
                cpu_quota: cpu_quota.unwrap_or(0),
                cpu_period: cpu_period.unwrap_or(0),
                cpu_shares: cpu_shares.unwrap_or(0),
                ..Default::default()
            };
            let mut out = String::new();
            for id in ids {
                client
                    .update_container_resources(UpdateContainerResourcesRequest {
                        container_id: id.clone(),
                        linux: Some(linux.clone()),
                        ..Default::default()
                    })
                    .await
                    .with_context(|| format!("update {id}"))?;
                out.push_str(&format!("{id}\n"));
            }
            Ok(out)
        }
        ContainerCommand::Stop { ids, timeout } => {
            let mut out = String::new();
            for id in ids {
                client
                    .stop_container(StopContainerRequest {
                        container_id: id.clone(),
                        timeout,
                    })
                    .await
                    .with_context(|| format!("stop {id}"))?;
                out.push_str(&format!("{id}\n"));
            }
            Ok(out)
        }
        ContainerCommand::Checkpoint { ids, export } => {
            let mut out = String::new();
            for id in ids {
                // crictl passes the path as typed; the runtime resolves it on its node.
                client
                    .checkpoint_container(CheckpointContainerRequest {
                        container_id: id.clone(),
                        location: export.clone(),
                        timeout: 0,
                    })
                    .await
                    .with_context(|| format!("checkpoint {id}"))?;
                out.push_str(&format!("{id}\n"));
            }
            Ok(out)
        }
        ContainerCommand::Rm { ids, force, all } => {
            let list = client
                .list_containers(ListContainersRequest::default())
                .await
                .context("ListContainers")?
                .into_inner()
                .containers;
            let targets: Vec<_> = if all {
                list
            } else {
                if ids.is_empty() {
                    bail!("name the containers to remove, or use --all");
                }
                crust_ctl::files::by_prefixes(&list, &ids, |c| &c.id, "container")?
            };
            let mut out = String::new();
            for c in targets {
                if c.state == i32::from(ContainerState::ContainerRunning) && !force {
                    bail!(
                        "container {} is running; stop it first or use --force",
                        c.id
                    );
                }
                client
                    .remove_container(RemoveContainerRequest {
                        container_id: c.id.clone(),
                    })
                    .await
                    .with_context(|| format!("remove {}", c.id))?;
                out.push_str(&format!("{}\n", c.id));
            }
            Ok(out)
        }
        ContainerCommand::Ps(args) => crate::ps_cmd::run(args, channel).await,
        ContainerCommand::Inspect {
            ids,
            output: format,
        } => {
            let mut out = String::new();
            for id in ids {
                let resp = client
                    .container_status(ContainerStatusRequest {
                        container_id: id.clone(),
                        verbose: true,
                    })
                    .await
                    .with_context(|| format!("inspect {id}"))?
                    .into_inner();
                let mut status = serde_json::to_value(&resp.status)?;
                output::timestamps_rfc3339(&mut status, &["createdAt", "startedAt", "finishedAt"]);
                let mut doc = serde_json::Map::new();
                doc.insert("status".into(), status);
                for (k, raw) in &resp.info {
                    doc.insert(
                        k.clone(),
                        serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone())),
                    );
                }
                out.push_str(&output::render(&Value::Object(doc), format)?);
            }
            Ok(out)
        }
        ContainerCommand::Stats(args) => crate::stats_cmd::stats(args, client).await,
        ContainerCommand::Statsp(args) => crate::stats_cmd::statsp(args, client).await,
        ContainerCommand::Logs {
            id,
            follow,
            tail,
            timestamps,
            since,
            previous,
        } => {
            let status = client
                .container_status(ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: false,
                })
                .await
                .with_context(|| format!("container {id}"))?
                .into_inner()
                .status
                .unwrap_or_default();
            let attempt = status.metadata.as_ref().map_or(0, |m| m.attempt);
            let log_path = if previous {
                previous_log(&status.log_path, attempt)?
            } else {
                status.log_path.clone()
            };
            // The previous attempt has exited: there is nothing to follow.
            let follow = follow && !previous;
            let mut reader = LogReader::new(&log_path);
            let mut lines = reader
                .read_new()
                .with_context(|| format!("read log {log_path}"))?;
            if !follow {
                lines.extend(reader.flush());
            }
            lines.retain(|l| after(l, since));
            let skip = tail.map_or(0, |n| lines.len().saturating_sub(n));
            // stdout records on stdout, stderr records on stderr, as crictl does.
            let mut out = String::new();
            for line in &lines[skip..] {
                match (follow, line.stream) {
                    (_, Stream::Stderr) => eprintln!("{}", log_text(line, timestamps)),
                    (true, Stream::Stdout) => println!("{}", log_text(line, timestamps)),
                    (false, Stream::Stdout) => {
                        out.push_str(&log_text(line, timestamps));
                        out.push('\n');
                    }
                }
            }
            if !follow {
                return Ok(out);
            }
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let exited = client
                    .container_status(ContainerStatusRequest {
                        container_id: id.clone(),
                        verbose: false,
                    })
                    .await
                    .with_context(|| format!("container {id}"))?
                    .into_inner()
                    .status
                    .is_none_or(|s| s.state == i32::from(ContainerState::ContainerExited));
                // Read after the status: an exit seen means its output is in the file.
                let mut lines = reader.read_new().unwrap_or_default();
                if exited {
                    lines.extend(reader.flush());
                }
                for line in &lines {
                    match line.stream {
                        Stream::Stdout => println!("{}", log_text(line, timestamps)),
                        Stream::Stderr => eprintln!("{}", log_text(line, timestamps)),
                    }
                }
                if exited {
                    return Ok(String::new());
                }
            }
        }
    }
}

fn log_text(line: &LogLine, timestamps: bool) -> String {
    if timestamps {
        format!("{} {}", line.timestamp, line.text)
    } else {
        line.text.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use crust_ctl::cri_log::Stream;

    use super::*;

    fn line(timestamp: &str) -> LogLine {
        LogLine {
            stream: Stream::Stdout,
            timestamp: timestamp.into(),
            text: "x".into(),
        }
    }

    #[test]
    fn since_takes_a_time_or_a_duration_back() {
        let t = parse_since("2026-12-06T13:23:37Z").unwrap();
        assert_eq!(t, humantime::parse_rfc3339("2026-12-06T13:23:37Z").unwrap());
        let back = parse_since("42m").unwrap();
        let age = SystemTime::now().duration_since(back).unwrap();
        assert!(age >= Duration::from_secs(42 * 60) && age < Duration::from_secs(43 * 60));
        assert!(parse_since("yesterday").unwrap_err().contains("yesterday"));

        let since = Some(parse_since("2026-12-06T13:00:00Z").unwrap());
        assert!(after(&line("2026-12-06T13:00:00.000000001Z"), since));
        assert!(!after(&line("2026-12-06T12:59:59.999999999Z"), since));
        assert!(after(&line("not a time"), since), "kept");
        assert!(after(&line("2000-01-01T00:00:00Z"), None));
    }

    #[test]
    fn previous_is_the_attempt_before() {
        assert_eq!(
            previous_log("/var/log/pods/ns_p_uid/app/3.log", 3).unwrap(),
            "/var/log/pods/ns_p_uid/app/2.log"
        );
        let first = previous_log("/var/log/pods/ns_p_uid/app/0.log", 0).unwrap_err();
        assert!(first.to_string().contains("first attempt"), "{first}");
        assert!(previous_log("/logs/app", 2).is_err());
    }
}
