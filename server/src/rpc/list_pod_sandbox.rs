//! `ListPodSandbox` and its streaming twin `StreamPodSandboxes`.

use crust_proto::runtime::v1::{
    ListPodSandboxRequest, ListPodSandboxResponse, PodSandbox, StreamPodSandboxesRequest,
};

use crate::{convert_sandbox, daemon::Daemon, error::ApiError};

/// Pods per `StreamPodSandboxesResponse`: far below the 16 MiB message limit even with
/// large labels, and few enough messages for thousands of pods.
pub const STREAM_BATCH: usize = 256;

pub async fn list_pod_sandbox(
    daemon: &Daemon,
    req: ListPodSandboxRequest,
) -> Result<ListPodSandboxResponse, ApiError> {
    Ok(ListPodSandboxResponse {
        items: list(daemon, req.filter),
    })
}

/// The pods a `StreamPodSandboxes` call sends, in batches. The list is taken at once,
/// so every pod appears exactly once (KEP-5825: no duplicates across messages).
pub async fn stream_pod_sandboxes(
    daemon: &Daemon,
    req: StreamPodSandboxesRequest,
) -> Result<Vec<Vec<PodSandbox>>, ApiError> {
    Ok(list(daemon, req.filter)
        .chunks(STREAM_BATCH)
        .map(<[PodSandbox]>::to_vec)
        .collect())
}

fn list(
    daemon: &Daemon,
    filter: Option<crust_proto::runtime::v1::PodSandboxFilter>,
) -> Vec<PodSandbox> {
    daemon
        .sandboxes
        .list(&convert_sandbox::filter(filter))
        .iter()
        .map(convert_sandbox::pod_sandbox)
        .collect()
}
