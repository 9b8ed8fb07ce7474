//! Pod verbs, as crictl has them: runp, stopp, rmp, pods, inspectp.

use std::{collections::HashMap, path::PathBuf};

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use crust_ctl::output::{self, Format};
use crust_proto::runtime::v1::{
    ListPodSandboxRequest, PodSandbox, PodSandboxConfig, PodSandboxFilter, PodSandboxState,
    PodSandboxStateValue, PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StopPodSandboxRequest, runtime_service_client::RuntimeServiceClient,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

#[derive(Subcommand)]
pub enum PodCommand {
    /// Run a pod from a pod config file (JSON or YAML, crictl's format); prints its id.
    Runp {
        /// The PodSandboxConfig file.
        config: PathBuf,
        /// Runtime handler (RuntimeClass handler) to run the pod with.
        #[arg(long)]
        runtime: Option<String>,
    },
    /// Stop one or more pods.
    Stopp {
        /// Pod ids or unique prefixes.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove one or more pods (running ones need --force).
    Rmp {
        /// Pod ids or unique prefixes.
        ids: Vec<String>,
        /// Remove every pod.
        #[arg(short, long)]
        all: bool,
        /// Stop and remove pods that are still ready.
        #[arg(short, long)]
        force: bool,
    },
    /// List pods.
    Pods {
        /// Only the pod with this id or id prefix.
        #[arg(long)]
        id: Option<String>,
        /// Only pods whose name contains this text.
        #[arg(long)]
        name: Option<String>,
        /// Only pods in this Kubernetes namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Only pods with this label (key=value); may repeat.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Only pods in this state.
        #[arg(short, long, value_enum)]
        state: Option<StateArg>,
        /// Only print ids.
        #[arg(short, long)]
        quiet: bool,
        /// Show only the most recently created pod.
        #[arg(short, long)]
        latest: bool,
        /// Show the N most recently created pods.
        #[arg(long, default_value_t = 0)]
        last: usize,
        /// Print full ids.
        #[arg(long)]
        no_trunc: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Show one or more pods' status.
    Inspectp {
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(short, long, value_enum, default_value = "json")]
        output: Format,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum StateArg {
    Ready,
    Notready,
}

/// Parses a pod config in crictl's format. crictl reads its files with Go's JSON
/// decoder, so both snake_case (`log_directory`) and protojson camelCase names are
/// accepted, as pbjson does.
pub fn parse_pod_config(path: &std::path::Path) -> anyhow::Result<PodSandboxConfig> {
    crust_ctl::files::parse_cri_file(path, "PodSandboxConfig")
}

fn short(id: &str, no_trunc: bool) -> &str {
    if no_trunc {
        id
    } else {
        &id[..id.len().min(13)]
    }
}

fn state_name(state: i32) -> &'static str {
    match PodSandboxState::try_from(state) {
        Ok(PodSandboxState::SandboxReady) => "Ready",
        _ => "NotReady",
    }
}

fn ago(created_at: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let secs = (now - created_at).max(0) / 1_000_000_000;
    match secs {
        0..60 => format!("{secs} seconds ago"),
        60..3600 => format!("{} minutes ago", secs / 60),
        3600..86400 => format!("{} hours ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    }
}

pub async fn run(
    cmd: PodCommand,
    mut client: RuntimeServiceClient<Channel>,
) -> anyhow::Result<String> {
    match cmd {
        PodCommand::Runp { config, runtime } => {
            let config = parse_pod_config(&config)?;
            let req = RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: runtime.unwrap_or_default(),
            };
            let id = client
                .run_pod_sandbox(req)
                .await
                .context("RunPodSandbox")?
                .into_inner()
                .pod_sandbox_id;
            Ok(format!("{id}\n"))
        }
        PodCommand::Stopp { ids } => {
            let mut out = String::new();
            for id in ids {
                client
                    .stop_pod_sandbox(StopPodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    })
                    .await
                    .with_context(|| format!("stop pod {id}"))?;
                out.push_str(&format!("Stopped sandbox {id}\n"));
            }
            Ok(out)
        }
        PodCommand::Rmp { ids, all, force } => {
            let pods = client
                .list_pod_sandbox(ListPodSandboxRequest::default())
                .await
                .context("ListPodSandbox")?
                .into_inner()
                .items;
            let targets: Vec<PodSandbox> = if all {
                pods
            } else {
                if ids.is_empty() {
                    bail!("name the pods to remove, or use --all");
                }
                crust_ctl::files::by_prefixes(&pods, &ids, |p| &p.id, "pod")?
            };
            let mut out = String::new();
            for pod in targets {
                if pod.state == i32::from(PodSandboxState::SandboxReady) {
                    if !force {
                        bail!("pod {} is ready; stop it first or use --force", pod.id);
                    }
                    client
                        .stop_pod_sandbox(StopPodSandboxRequest {
                            pod_sandbox_id: pod.id.clone(),
                        })
                        .await
                        .context("StopPodSandbox")?;
                }
                client
                    .remove_pod_sandbox(RemovePodSandboxRequest {
                        pod_sandbox_id: pod.id.clone(),
                    })
                    .await
                    .with_context(|| format!("remove pod {}", pod.id))?;
                out.push_str(&format!("Removed sandbox {}\n", pod.id));
            }
            Ok(out)
        }
        PodCommand::Pods {
            id,
            name,
            namespace,
            labels,
            state,
            quiet,
            latest,
            last,
            no_trunc,
            output: format,
        } => {
            let mut label_selector = HashMap::new();
            for label in labels {
                let (k, v) = label
                    .split_once('=')
                    .with_context(|| format!("label {label:?} is not key=value"))?;
                label_selector.insert(k.to_string(), v.to_string());
            }
            let state = state.map(|s| PodSandboxStateValue {
                state: match s {
                    StateArg::Ready => PodSandboxState::SandboxReady,
                    StateArg::Notready => PodSandboxState::SandboxNotready,
                }
                .into(),
            });
            let filter = PodSandboxFilter {
                id: id.unwrap_or_default(),
                state,
                label_selector,
            };
            let mut pods = client
                .list_pod_sandbox(ListPodSandboxRequest {
                    filter: Some(filter),
                })
                .await
                .context("ListPodSandbox")?
                .into_inner()
                .items;
            pods.retain(|p| {
                let m = p.metadata.clone().unwrap_or_default();
                name.as_deref().is_none_or(|n| m.name.contains(n))
                    && namespace.as_deref().is_none_or(|ns| m.namespace == ns)
            });
            // Newest first, as crictl prints them.
            pods.sort_by_key(|p| std::cmp::Reverse(p.created_at));
            let keep = if latest { 1 } else { last };
            if keep > 0 {
                pods.truncate(keep);
            }
            if quiet {
                return Ok(pods.iter().map(|p| format!("{}\n", p.id)).collect());
            }
            match format {
                Format::Table => {
                    let mut out = format!(
                        "{:<13} {:<18} {:<9} {:<24} {:<16} {:<7} {}\n",
                        "POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT", "RUNTIME"
                    );
                    for p in &pods {
                        let m = p.metadata.clone().unwrap_or_default();
                        out.push_str(&format!(
                            "{:<13} {:<18} {:<9} {:<24} {:<16} {:<7} {}\n",
                            short(&p.id, no_trunc),
                            ago(p.created_at),
                            state_name(p.state),
                            m.name,
                            m.namespace,
                            m.attempt,
                            p.runtime_handler
                        ));
                    }
                    Ok(out)
                }
                _ => Ok(output::render(
                    &json!({ "items": serde_json::to_value(&pods)? }),
                    format,
                )),
            }
        }
        PodCommand::Inspectp {
            ids,
            output: format,
        } => {
            let mut out = String::new();
            for id in ids {
                let resp = client
                    .pod_sandbox_status(PodSandboxStatusRequest {
                        pod_sandbox_id: id.clone(),
                        verbose: true,
                    })
                    .await
                    .with_context(|| format!("inspect pod {id}"))?
                    .into_inner();
                let mut doc = serde_json::Map::new();
                doc.insert("status".into(), serde_json::to_value(&resp.status)?);
                for (key, raw) in &resp.info {
                    doc.insert(
                        key.clone(),
                        serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone())),
                    );
                }
                let doc = Value::Object(doc);
                out.push_str(&match format {
                    Format::Table => {
                        let st = resp.status.unwrap_or_default();
                        format!(
                            "ID: {}\nName: {}\nState: {}\n",
                            st.id,
                            st.metadata.unwrap_or_default().name,
                            state_name(st.state)
                        )
                    }
                    _ => output::render(&doc, format),
                });
            }
            Ok(out)
        }
    }
}
