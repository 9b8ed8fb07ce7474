//! `events` (GetContainerEvents: the runtime's container and pod lifecycle events as
//! they happen) and `metricdescs` (ListMetricDescriptors).

use anyhow::Context;
use crust_ctl::output::{self, Format};
use crust_proto::runtime::v1::{
    ContainerEventResponse, ContainerEventType, GetEventsRequest, ListMetricDescriptorsRequest,
    runtime_service_client::RuntimeServiceClient,
};
use futures::StreamExt;
use serde_json::json;
use tonic::transport::Channel;

/// Prints each event as it comes until the stream ends (the runtime shuts down) or
/// crustctl is interrupted: one JSON object a line (`-o json`), YAML documents, the
/// `--template` text of each, or (crust's own, crictl has no table for events) a table
/// row each under one header: TIME TYPE CONTAINER POD.
pub async fn events(
    format: Format,
    mut client: RuntimeServiceClient<Channel>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stream = client
        .get_container_events(GetEventsRequest {})
        .await
        .context("GetContainerEvents")?
        .into_inner();
    let mut stdout = std::io::stdout();
    if format == Format::Table {
        print!("{}", table_row(&TABLE_HEADER));
        stdout.flush()?;
    }
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(event) = event else { return Ok(()) };
        let event = event.context("GetContainerEvents")?;
        match format {
            Format::Yaml => print!(
                "---\n{}",
                output::render(&serde_json::to_value(&event)?, Format::Yaml)?
            ),
            Format::Json => println!("{}", serde_json::to_value(&event)?),
            Format::GoTemplate => print!(
                "{}",
                output::render(&serde_json::to_value(&event)?, Format::GoTemplate)?
            ),
            Format::Table => print!("{}", table_row(&event_cells(&event))),
        }
        // Each event shows when it happens, also into a pipe.
        stdout.flush()?;
    }
}

const TABLE_HEADER: [&str; 4] = ["TIME", "TYPE", "CONTAINER", "POD"];

/// A row of the events table. The stream has no end to measure columns at, so they are
/// fixed: an RFC 3339 time with nanoseconds, the longest event type, a cut id.
fn table_row<S: AsRef<str>>(cells: &[S; 4]) -> String {
    format!(
        "{:<33}{:<27}{:<16}{}\n",
        cells[0].as_ref(),
        cells[1].as_ref(),
        cells[2].as_ref(),
        cells[3].as_ref()
    )
}

fn event_cells(e: &ContainerEventResponse) -> [String; 4] {
    let kind = ContainerEventType::try_from(e.container_event_type)
        .map(|t| {
            t.as_str_name()
                .trim_end_matches("_EVENT")
                .trim_start_matches("CONTAINER_")
                .to_string()
        })
        .unwrap_or_else(|_| e.container_event_type.to_string());
    let pod = e
        .pod_sandbox_status
        .as_ref()
        .and_then(|p| p.metadata.as_ref())
        .map(|m| format!("{}/{}", m.namespace, m.name))
        .unwrap_or_default();
    [
        output::rfc3339(e.created_at),
        kind,
        e.container_id.chars().take(13).collect(),
        pod,
    ]
}

pub async fn metric_descriptors(
    format: Format,
    mut client: RuntimeServiceClient<Channel>,
) -> anyhow::Result<String> {
    let descriptors = client
        .list_metric_descriptors(ListMetricDescriptorsRequest {})
        .await
        .context("ListMetricDescriptors")?
        .into_inner()
        .descriptors;
    output::render(
        &json!({ "descriptors": serde_json::to_value(&descriptors)? }),
        format,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_proto::runtime::v1::{PodSandboxMetadata, PodSandboxStatus};

    #[test]
    fn event_rows() {
        let e = ContainerEventResponse {
            container_id: "0123456789abcdef".into(),
            container_event_type: ContainerEventType::ContainerStoppedEvent.into(),
            created_at: 1_700_000_000_000_000_000,
            pod_sandbox_status: Some(PodSandboxStatus {
                metadata: Some(PodSandboxMetadata {
                    name: "web".into(),
                    namespace: "prod".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            containers_statuses: vec![],
        };
        assert_eq!(
            table_row(&TABLE_HEADER),
            format!("{:<33}{:<27}{:<16}POD\n", "TIME", "TYPE", "CONTAINER")
        );
        let row = table_row(&event_cells(&e));
        assert_eq!(
            row,
            format!(
                "{:<33}{:<27}{:<16}prod/web\n",
                "2023-11-14T22:13:20Z", "STOPPED", "0123456789abc"
            )
        );
        let mut odd = e.clone();
        odd.container_event_type = 99;
        odd.pod_sandbox_status = None;
        assert!(table_row(&event_cells(&odd)).contains(" 99 "));
    }
}
