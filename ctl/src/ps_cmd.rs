//! `ps`: list containers as crictl does: its filters (`--name` regex, `--image`,
//! `--last`/`--latest`, `--state`, `--pod`, `--label`, `--id`), newest first, and its
//! table (CONTAINER IMAGE CREATED STATE NAME ATTEMPT POD ID POD).

use std::{collections::HashMap, time::SystemTime};

use anyhow::Context;
use clap::{Args, ValueEnum};
use crust_ctl::output::{self, Format};
use crust_proto::runtime::v1::{
    Container, ContainerFilter, ContainerState, ContainerStateValue, ImageSpec, ImageStatusRequest,
    ListContainersRequest, ListPodSandboxRequest,
};
use serde_json::json;
use tonic::transport::Channel;

/// The label kubelet puts the pod's name in; crictl's POD column reads it.
const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";

#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (default: running only).
    #[arg(short, long)]
    all: bool,
    /// Only the container with this id (or id prefix).
    #[arg(long)]
    id: Option<String>,
    /// Only containers whose name matches this regular expression.
    #[arg(long)]
    name: Option<String>,
    /// Only containers of this image (a reference or id, resolved by the runtime).
    #[arg(long)]
    image: Option<String>,
    /// Only containers of this pod.
    #[arg(short, long)]
    pod: Option<String>,
    /// Only containers in this state (case-insensitive).
    #[arg(short, long, value_enum, ignore_case = true)]
    state: Option<StateArg>,
    /// Only containers with this label (key=value); may repeat.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Show the N most recently created containers, in any state (0: all).
    #[arg(short = 'n', long, default_value_t = 0)]
    last: usize,
    /// Show the most recently created container, in any state.
    #[arg(short, long)]
    latest: bool,
    /// Only print ids.
    #[arg(short, long)]
    quiet: bool,
    /// Print full ids.
    #[arg(long)]
    no_trunc: bool,
    #[arg(short, long, value_enum, default_value = "table")]
    output: Format,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum StateArg {
    Created,
    Running,
    Exited,
    Unknown,
}

fn state_name(state: i32) -> &'static str {
    match ContainerState::try_from(state) {
        Ok(ContainerState::ContainerCreated) => "Created",
        Ok(ContainerState::ContainerRunning) => "Running",
        Ok(ContainerState::ContainerExited) => "Exited",
        _ => "Unknown",
    }
}

pub async fn run(args: PsArgs, channel: Channel) -> anyhow::Result<String> {
    let mut runtime = crust_ctl::runtime_client(channel.clone());
    let mut label_selector = HashMap::new();
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("label {l:?} is not key=value"))?;
        label_selector.insert(k.to_string(), v.to_string());
    }
    let name = args
        .name
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .context("--name is not a regular expression")?;
    // --last and --latest look at every state, as crictl's (and docker's) do.
    let any_state = args.all || args.latest || args.last > 0;
    let state = match args.state {
        Some(StateArg::Created) => Some(ContainerState::ContainerCreated),
        Some(StateArg::Running) => Some(ContainerState::ContainerRunning),
        Some(StateArg::Exited) => Some(ContainerState::ContainerExited),
        Some(StateArg::Unknown) => Some(ContainerState::ContainerUnknown),
        None if any_state => None,
        None => Some(ContainerState::ContainerRunning),
    };
    let filter = ContainerFilter {
        id: args.id.clone().unwrap_or_default(),
        pod_sandbox_id: args.pod.clone().unwrap_or_default(),
        state: state.map(|s| ContainerStateValue { state: s.into() }),
        label_selector,
    };
    let mut list = runtime
        .list_containers(ListContainersRequest {
            filter: Some(filter),
        })
        .await
        .context("ListContainers")?
        .into_inner()
        .containers;
    if let Some(name) = &name {
        list.retain(|c| c.metadata.as_ref().is_some_and(|m| name.is_match(&m.name)));
    }
    if let Some(image) = &args.image {
        // As crictl: the same image whatever it was named by, so compare image ids.
        let mut images = crust_ctl::image_client(channel);
        let mut id_of = async |reference: &str| -> Option<String> {
            images
                .image_status(ImageStatusRequest {
                    image: Some(ImageSpec {
                        image: reference.to_string(),
                        ..Default::default()
                    }),
                    verbose: false,
                })
                .await
                .ok()?
                .into_inner()
                .image
                .map(|i| i.id)
        };
        let wanted = id_of(image).await;
        let mut kept = Vec::new();
        for c in list {
            let named = c.image.as_ref().map(|i| i.image.as_str()).unwrap_or("");
            let same = named == image
                || wanted.as_deref().is_some_and(|id| {
                    [c.image_ref.as_str(), c.image_id.as_str(), named].contains(&id)
                });
            let same = same
                || match (&wanted, named.is_empty()) {
                    (Some(id), false) => id_of(named).await.as_deref() == Some(id.as_str()),
                    _ => false,
                };
            if same {
                kept.push(c);
            }
        }
        list = kept;
    }
    list = newest(list, if args.latest { 1 } else { args.last });
    if args.quiet {
        return Ok(list.iter().map(|c| format!("{}\n", c.id)).collect());
    }
    if args.output != Format::Table {
        return output::render(
            &json!({ "containers": serde_json::to_value(&list)? }),
            args.output,
        );
    }
    // The POD column: kubelet's label, else the pod's own name.
    let pods: HashMap<String, String> = runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .context("ListPodSandbox")?
        .into_inner()
        .items
        .into_iter()
        .map(|p| (p.id, p.metadata.map(|m| m.name).unwrap_or_default()))
        .collect();
    Ok(table(&list, &pods, args.no_trunc, SystemTime::now()))
}

/// Newest first; the first `keep` of them (0: all).
fn newest(mut list: Vec<Container>, keep: usize) -> Vec<Container> {
    list.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    if keep > 0 {
        list.truncate(keep);
    }
    list
}

/// crictl's ids: 13 characters (of the hex, for a `sha256:` digest) unless `--no-trunc`.
fn short(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        return id.to_string();
    }
    id.strip_prefix("sha256:")
        .unwrap_or(id)
        .chars()
        .take(13)
        .collect()
}

fn table(
    list: &[Container],
    pod_names: &HashMap<String, String>,
    no_trunc: bool,
    now: SystemTime,
) -> String {
    let mut rows = vec![
        [
            "CONTAINER",
            "IMAGE",
            "CREATED",
            "STATE",
            "NAME",
            "ATTEMPT",
            "POD ID",
            "POD",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for c in list {
        let m = c.metadata.clone().unwrap_or_default();
        let image = c.image.as_ref().map(|i| i.image.as_str()).unwrap_or("");
        // An image named by digest is an id to crictl: truncated like one.
        let image = if image.starts_with("sha256:") {
            short(image, no_trunc)
        } else {
            image.to_string()
        };
        let pod = c
            .labels
            .get(POD_NAME_LABEL)
            .or_else(|| pod_names.get(&c.pod_sandbox_id))
            .filter(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(|| "unknown".into());
        rows.push(vec![
            short(&c.id, no_trunc),
            image,
            output::ago(c.created_at, now),
            state_name(c.state).to_string(),
            m.name,
            m.attempt.to_string(),
            short(&c.pod_sandbox_id, no_trunc),
            pod,
        ]);
    }
    output::table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_proto::runtime::v1::ContainerMetadata;
    use std::time::{Duration, UNIX_EPOCH};

    fn container(id: &str, name: &str, created_s: i64, pod: &str) -> Container {
        Container {
            id: id.repeat(64 / id.len()),
            pod_sandbox_id: pod.repeat(64 / pod.len()),
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 2,
            }),
            image: Some(ImageSpec {
                image: "registry.local/busybox:v1".into(),
                ..Default::default()
            }),
            state: ContainerState::ContainerRunning.into(),
            created_at: created_s * 1_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn newest_first_and_last_n() {
        let list = vec![
            container("a", "old", 10, "p"),
            container("b", "new", 30, "p"),
            container("c", "mid", 20, "p"),
        ];
        let names = |l: Vec<Container>| -> Vec<String> {
            l.into_iter().map(|c| c.metadata.unwrap().name).collect()
        };
        assert_eq!(names(newest(list.clone(), 0)), ["new", "mid", "old"]);
        assert_eq!(names(newest(list.clone(), 2)), ["new", "mid"]);
        assert_eq!(names(newest(list, 1)), ["new"], "--latest");
    }

    #[test]
    fn table_has_crictls_columns() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let mut labelled = container("b", "web", 995, "e");
        labelled
            .labels
            .insert(POD_NAME_LABEL.into(), "from-kubelet".into());
        let mut by_digest = container("c", "digest", 0, "f");
        by_digest.image = Some(ImageSpec {
            image: format!("sha256:{}", "9".repeat(64)),
            ..Default::default()
        });
        by_digest.state = ContainerState::ContainerExited.into();
        let list = vec![container("a", "talker", 930, "d"), labelled, by_digest];
        let pods = HashMap::from([("d".repeat(64), "my-pod".to_string())]);
        let text = table(&list, &pods, false, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "CONTAINER           IMAGE                       CREATED              STATE               NAME                ATTEMPT             POD ID              POD"
        );
        assert_eq!(
            lines[1],
            "aaaaaaaaaaaaa       registry.local/busybox:v1   About a minute ago   Running             talker              2                   ddddddddddddd       my-pod"
        );
        assert!(
            lines[2].contains("5 seconds ago") && lines[2].ends_with("   from-kubelet"),
            "kubelet's pod name label first: {text}"
        );
        assert!(
            lines[3].starts_with("ccccccccccccc       9999999999999 ")
                && lines[3].contains("Exited")
                && lines[3].ends_with("   unknown"),
            "digests truncated; no pod name known: {text}"
        );
        let full = table(&list, &pods, true, now);
        assert!(full.contains(&"a".repeat(64)), "{full}");
    }
}
