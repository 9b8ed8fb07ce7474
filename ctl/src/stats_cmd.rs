//! `stats` and `statsp`: resource usage of containers and pods, as crictl prints it
//! (a table by default; `-o json|yaml` for the CRI objects).

use std::{collections::HashMap, time::Duration};

use anyhow::Context;
use clap::Args;
use crust_ctl::output::{self, Format};
use crust_proto::runtime::v1::{
    ContainerStats, ContainerStatsFilter, ContainerStatsRequest, CpuUsage,
    ListContainerStatsRequest, ListPodSandboxStatsRequest, PodSandboxStats, PodSandboxStatsFilter,
    runtime_service_client::RuntimeServiceClient,
};
use serde_json::json;
use tonic::transport::Channel;

#[derive(Args)]
pub struct StatsArgs {
    /// Containers (ids or unique prefixes); all of them when none are named.
    ids: Vec<String>,
    /// Only containers of this pod.
    #[arg(short, long)]
    pod: Option<String>,
    /// Only containers with this label (key=value); may repeat.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Also show containers using no CPU and no memory.
    #[arg(short, long)]
    all: bool,
    #[arg(short, long, value_enum, default_value = "table")]
    output: Format,
}

#[derive(Args)]
pub struct StatspArgs {
    /// Only the pod with this id (or id prefix).
    #[arg(long)]
    id: Option<String>,
    /// Only pods with this label (key=value); may repeat.
    #[arg(long = "label")]
    labels: Vec<String>,
    #[arg(short, long, value_enum, default_value = "table")]
    output: Format,
}

fn label_selector(labels: &[String]) -> anyhow::Result<HashMap<String, String>> {
    labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("label {l:?} is not key=value"))
        })
        .collect()
}

/// How long to wait between two samples when the runtime gives no CPU rate itself,
/// as crictl does.
const SAMPLE_GAP: Duration = Duration::from_secs(1);

pub async fn stats(
    args: StatsArgs,
    mut client: RuntimeServiceClient<Channel>,
) -> anyhow::Result<String> {
    let label_selector = label_selector(&args.labels)?;
    let sample = async |client: &mut RuntimeServiceClient<Channel>| -> anyhow::Result<_> {
        if args.ids.is_empty() {
            let filter = ContainerStatsFilter {
                pod_sandbox_id: args.pod.clone().unwrap_or_default(),
                label_selector: label_selector.clone(),
                ..Default::default()
            };
            return Ok(client
                .list_container_stats(ListContainerStatsRequest {
                    filter: Some(filter),
                })
                .await
                .context("ListContainerStats")?
                .into_inner()
                .stats);
        }
        let mut all = Vec::new();
        for id in &args.ids {
            all.extend(
                client
                    .container_stats(ContainerStatsRequest {
                        container_id: id.clone(),
                    })
                    .await
                    .with_context(|| format!("stats of {id}"))?
                    .into_inner()
                    .stats,
            );
        }
        Ok(all)
    };
    let now = sample(&mut client).await?;
    if args.output != Format::Table {
        return output::render(
            &json!({ "stats": serde_json::to_value(&now)? }),
            args.output,
        );
    }
    let (before, now) = if now
        .iter()
        .any(|s| s.cpu.as_ref().is_none_or(|c| c.usage_nano_cores.is_none()))
    {
        tokio::time::sleep(SAMPLE_GAP).await;
        let later = sample(&mut client).await?;
        (now, later)
    } else {
        (Vec::new(), now)
    };
    Ok(stats_table(&now, &before, args.all))
}

fn id_of(s: &ContainerStats) -> &str {
    s.attributes.as_ref().map(|a| a.id.as_str()).unwrap_or("")
}

/// CPU use in percent of one core: the runtime's rate, else the rate between two
/// samples.
fn cpu_percent(now: Option<&CpuUsage>, before: Option<&CpuUsage>) -> f64 {
    let Some(now) = now else { return 0.0 };
    if let Some(rate) = &now.usage_nano_cores {
        return rate.value as f64 / 1e7;
    }
    let (Some(before), Some(used)) = (before, &now.usage_core_nano_seconds) else {
        return 0.0;
    };
    let used_before = before
        .usage_core_nano_seconds
        .as_ref()
        .map_or(0, |v| v.value);
    let elapsed = now.timestamp - before.timestamp;
    if elapsed <= 0 {
        return 0.0;
    }
    used.value.saturating_sub(used_before) as f64 / elapsed as f64 * 100.0
}

/// crictl's `stats` table: CONTAINER NAME CPU % MEM DISK INODES. Containers with no CPU
/// and no memory use are left out unless `all`, as crictl does.
fn stats_table(now: &[ContainerStats], before: &[ContainerStats], all: bool) -> String {
    let mut rows = vec![
        ["CONTAINER", "NAME", "CPU %", "MEM", "DISK", "INODES"]
            .map(String::from)
            .to_vec(),
    ];
    for s in now {
        let id = id_of(s);
        let earlier = before.iter().find(|b| id_of(b) == id);
        let cpu_ns = s
            .cpu
            .as_ref()
            .and_then(|c| c.usage_core_nano_seconds.as_ref())
            .map_or(0, |v| v.value);
        let mem = s
            .memory
            .as_ref()
            .and_then(|m| m.working_set_bytes.as_ref())
            .map_or(0, |v| v.value);
        if !all && cpu_ns == 0 && mem == 0 {
            continue;
        }
        let layer = s.writable_layer.as_ref();
        let disk = layer
            .and_then(|l| l.used_bytes.as_ref())
            .map_or(0, |v| v.value);
        let inodes = layer
            .and_then(|l| l.inodes_used.as_ref())
            .map_or(0, |v| v.value);
        let name = s
            .attributes
            .as_ref()
            .and_then(|a| a.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_default();
        rows.push(vec![
            id.chars().take(13).collect(),
            name,
            format!(
                "{:.2}",
                cpu_percent(s.cpu.as_ref(), earlier.and_then(|b| b.cpu.as_ref()))
            ),
            crate::image_cmds::human_size(mem),
            crate::image_cmds::human_size(disk),
            inodes.to_string(),
        ]);
    }
    output::table(&rows)
}

pub async fn statsp(
    args: StatspArgs,
    mut client: RuntimeServiceClient<Channel>,
) -> anyhow::Result<String> {
    let filter = PodSandboxStatsFilter {
        id: args.id.clone().unwrap_or_default(),
        label_selector: label_selector(&args.labels)?,
    };
    let mut sample = async || -> anyhow::Result<Vec<PodSandboxStats>> {
        Ok(client
            .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
                filter: Some(filter.clone()),
            })
            .await
            .context("ListPodSandboxStats")?
            .into_inner()
            .stats)
    };
    let now = sample().await?;
    if args.output != Format::Table {
        return output::render(
            &json!({ "stats": serde_json::to_value(&now)? }),
            args.output,
        );
    }
    let cpu = |p: &PodSandboxStats| p.linux.as_ref().and_then(|l| l.cpu);
    let (before, now) = if now
        .iter()
        .any(|p| cpu(p).is_none_or(|c| c.usage_nano_cores.is_none()))
    {
        tokio::time::sleep(SAMPLE_GAP).await;
        let later = sample().await?;
        (now, later)
    } else {
        (Vec::new(), now)
    };
    let pod_id = |p: &PodSandboxStats| {
        p.attributes
            .as_ref()
            .map(|a| a.id.clone())
            .unwrap_or_default()
    };
    let mut rows = vec![["POD", "POD ID", "CPU %", "MEM"].map(String::from).to_vec()];
    for p in &now {
        let id = pod_id(p);
        let earlier = before.iter().find(|b| pod_id(b) == id).and_then(cpu);
        let mem = p
            .linux
            .as_ref()
            .and_then(|l| l.memory.as_ref())
            .and_then(|m| m.working_set_bytes.as_ref())
            .map_or(0, |v| v.value);
        let name = p
            .attributes
            .as_ref()
            .and_then(|a| a.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_default();
        rows.push(vec![
            name,
            id.chars().take(13).collect(),
            format!("{:.2}", cpu_percent(cpu(p).as_ref(), earlier.as_ref())),
            crate::image_cmds::human_size(mem),
        ]);
    }
    Ok(output::table(&rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_proto::runtime::v1::{
        ContainerAttributes, ContainerMetadata, FilesystemUsage, MemoryUsage, UInt64Value,
    };

    fn stats(id: &str, cpu_ns: u64, at: i64, rate: Option<u64>, mem: u64) -> ContainerStats {
        let v = |value| Some(UInt64Value { value });
        ContainerStats {
            attributes: Some(ContainerAttributes {
                id: id.repeat(64),
                metadata: Some(ContainerMetadata {
                    name: format!("ctr-{id}"),
                    attempt: 0,
                }),
                ..Default::default()
            }),
            cpu: Some(CpuUsage {
                timestamp: at,
                usage_core_nano_seconds: v(cpu_ns),
                usage_nano_cores: rate.map(|value| UInt64Value { value }),
                ..Default::default()
            }),
            memory: Some(MemoryUsage {
                working_set_bytes: v(mem),
                ..Default::default()
            }),
            writable_layer: Some(FilesystemUsage {
                used_bytes: v(12_288),
                inodes_used: v(3),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn stats_table_like_crictl() {
        let before = [stats("b", 1_000_000_000, 0, None, 1)];
        let now = [
            stats("a", 5, 0, Some(250_000_000), 2_500_000),
            stats("b", 1_500_000_000, 1_000_000_000, None, 1_000),
            stats("c", 0, 0, None, 0),
        ];
        let text = stats_table(&now, &before, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "CONTAINER           NAME                CPU %               MEM                 DISK                INODES"
        );
        assert_eq!(
            lines[1],
            "aaaaaaaaaaaaa       ctr-a               25.00               2.50MB              12.3kB              3",
            "the runtime's rate"
        );
        assert!(
            lines[2].contains("   50.00   "),
            "rate of two samples: {text}"
        );
        assert_eq!(lines.len(), 3, "idle containers only with --all: {text}");
        assert_eq!(stats_table(&now, &before, true).lines().count(), 4);
    }
}
