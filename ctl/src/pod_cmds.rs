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
        /// Only pods whose name matches this regular expression.
        #[arg(long)]
        name: Option<String>,
        /// Only pods whose Kubernetes namespace matches this regular expression.
        #[arg(long)]
        namespace: Option<String>,
        /// Only pods with this label (key=value); may repeat.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Only pods in this state.
        #[arg(short, long, value_enum, ignore_case = true)]
        state: Option<StateArg>,
        /// Only print ids.
        #[arg(short, long)]
        quiet: bool,
        /// Show only the most recently created pod.
        #[arg(short, long)]
        latest: bool,
        /// Show the N most recently created pods (0: all).
        #[arg(short = 'n', long, default_value_t = 0)]
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
    #[value(alias = "not-ready")]
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

/// crictl's `pods` table.
fn pods_table(pods: &[PodSandbox], no_trunc: bool, now: std::time::SystemTime) -> String {
    let mut rows = vec![
        [
            "POD ID",
            "CREATED",
            "STATE",
            "NAME",
            "NAMESPACE",
            "ATTEMPT",
            "RUNTIME",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for p in pods {
        let m = p.metadata.clone().unwrap_or_default();
        let runtime = if p.runtime_handler.is_empty() {
            "(default)".to_string()
        } else {
            p.runtime_handler.clone()
        };
        rows.push(vec![
            short(&p.id, no_trunc).to_string(),
            output::ago(p.created_at, now),
            state_name(p.state).to_string(),
            m.name,
            m.namespace,
            m.attempt.to_string(),
            runtime,
        ]);
    }
    output::table(&rows)
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
            let regex = |r: Option<String>, flag: &str| {
                r.map(|r| regex::Regex::new(&r))
                    .transpose()
                    .with_context(|| format!("{flag} is not a regular expression"))
            };
            let (name, namespace) = (regex(name, "--name")?, regex(namespace, "--namespace")?);
            pods.retain(|p| {
                let m = p.metadata.clone().unwrap_or_default();
                name.as_ref().is_none_or(|n| n.is_match(&m.name))
                    && namespace
                        .as_ref()
                        .is_none_or(|ns| ns.is_match(&m.namespace))
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
                Format::Table => Ok(pods_table(&pods, no_trunc, std::time::SystemTime::now())),
                _ => Ok(output::render(
                    &json!({ "items": serde_json::to_value(&pods)? }),
                    format,
                )?),
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
                let mut status = serde_json::to_value(&resp.status)?;
                output::timestamps_rfc3339(&mut status, &["createdAt"]);
                let mut doc = serde_json::Map::new();
                doc.insert("status".into(), status);
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
                    _ => output::render(&doc, format)?,
                });
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_proto::runtime::v1::PodSandboxMetadata;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn pods_table_has_crictls_columns() {
        let pod = |id: &str, handler: &str, state: PodSandboxState| PodSandbox {
            id: id.repeat(64),
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                namespace: "default".into(),
                attempt: 1,
                uid: "u".into(),
            }),
            state: state.into(),
            created_at: 7_200 * 1_000_000_000,
            runtime_handler: handler.into(),
            ..Default::default()
        };
        let now = UNIX_EPOCH + Duration::from_secs(3 * 3600);
        let text = pods_table(
            &[
                pod("a", "", PodSandboxState::SandboxReady),
                pod("b", "runc", PodSandboxState::SandboxNotready),
            ],
            false,
            now,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "POD ID              CREATED             STATE               NAME                NAMESPACE           ATTEMPT             RUNTIME"
        );
        assert_eq!(
            lines[1],
            "aaaaaaaaaaaaa       About an hour ago   Ready               web                 default             1                   (default)"
        );
        assert!(
            lines[2].contains("NotReady") && lines[2].ends_with("   runc"),
            "{text}"
        );
    }
}
