//! `events` (GetContainerEvents: the runtime's container and pod lifecycle events as
//! they happen) and `metricdescs` (ListMetricDescriptors).

use anyhow::Context;
use crust_ctl::output::{self, Format};
use crust_proto::runtime::v1::{
    GetEventsRequest, ListMetricDescriptorsRequest, runtime_service_client::RuntimeServiceClient,
};
use futures::StreamExt;
use serde_json::json;
use tonic::transport::Channel;

/// Prints each event as it comes until the stream ends (the runtime shuts down) or
/// crustctl is interrupted: one JSON object a line (`-o json`), or YAML documents.
pub async fn events(
    format: Format,
    mut client: RuntimeServiceClient<Channel>,
) -> anyhow::Result<()> {
    let mut stream = client
        .get_container_events(GetEventsRequest {})
        .await
        .context("GetContainerEvents")?
        .into_inner();
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(event) = event else { return Ok(()) };
        let event = serde_json::to_value(event.context("GetContainerEvents")?)?;
        match format {
            Format::Yaml => print!("---\n{}", output::render(&event, Format::Yaml)),
            Format::Json | Format::Table => println!("{event}"),
        }
    }
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
    Ok(output::render(
        &json!({ "descriptors": serde_json::to_value(&descriptors)? }),
        format,
    ))
}
