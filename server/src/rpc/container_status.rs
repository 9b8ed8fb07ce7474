//! `ContainerStatus`, `ListContainers` and `StreamContainers`.

use std::collections::HashMap;

use crust_proto::runtime::v1::{
    Container, ContainerFilter, ContainerStatusRequest, ContainerStatusResponse,
    ListContainersRequest, ListContainersResponse, StreamContainersRequest,
};
use serde_json::json;

use crate::{convert_container, daemon::Daemon, error::ApiError};

/// Containers per `StreamContainersResponse`.
pub const STREAM_BATCH: usize = 256;

pub async fn container_status(
    daemon: &Daemon,
    req: ContainerStatusRequest,
) -> Result<ContainerStatusResponse, ApiError> {
    tracing::Span::current().record(
        "container_id",
        crust_runtime::excerpt(&req.container_id).as_ref(),
    );
    let c = daemon.sandboxes.container_status(&req.container_id)?;
    let mut info = HashMap::new();
    if req.verbose {
        let spec: serde_json::Value = std::fs::read(c.spec_file())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        let mut details = json!({
            "pid": c.pid.map(|p| p.pid),
            "sandboxID": c.pod_id,
            "cgroup": c.cgroup,
            "mounts": spec["mounts"].clone(),
            "runtimeSpec": spec,
            "recordedState": c.state,
        });
        // A score crust could not give (lowering it needs CAP_SYS_RESOURCE) is raised
        // to crustd's own rather than failing the container: say so here.
        let clamped = &details["runtimeSpec"]["annotations"]
            [crust_runtime::container::OOM_CLAMPED_ANNOTATION];
        if let Some(requested) = clamped.as_str().and_then(|s| s.parse::<i64>().ok()) {
            details["oomScoreAdj"] = json!({
                "requested": requested,
                "applied": details["runtimeSpec"]["process"]["oomScoreAdj"].clone(),
                "reason": "raised to crustd's own oom_score_adj: \
                           crustd lacks CAP_SYS_RESOURCE, which lowering it needs",
            });
        }
        info.insert("info".to_string(), details.to_string());
    }
    Ok(ContainerStatusResponse {
        status: Some(convert_container::container_status(&c)),
        info,
    })
}

pub async fn list_containers(
    daemon: &Daemon,
    req: ListContainersRequest,
) -> Result<ListContainersResponse, ApiError> {
    Ok(ListContainersResponse {
        containers: list(daemon, req.filter),
    })
}

/// Batches for `StreamContainers`; the list is taken at once, so no container appears
/// twice.
pub async fn stream_containers(
    daemon: &Daemon,
    req: StreamContainersRequest,
) -> Result<Vec<Vec<Container>>, ApiError> {
    Ok(list(daemon, req.filter)
        .chunks(STREAM_BATCH)
        .map(<[Container]>::to_vec)
        .collect())
}

fn list(daemon: &Daemon, filter: Option<ContainerFilter>) -> Vec<Container> {
    daemon
        .sandboxes
        .list_containers(&convert_container::filter(filter))
        .iter()
        .map(convert_container::container)
        .collect()
}
