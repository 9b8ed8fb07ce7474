//! The CRI RuntimeService: pods, containers, streaming, stats, runtime status.

use std::{pin::Pin, sync::Arc};

use crust_proto::runtime::v1::{
    AttachRequest, AttachResponse, CheckpointContainerRequest, CheckpointContainerResponse,
    ContainerEventResponse, ContainerStatsRequest, ContainerStatsResponse, ContainerStatusRequest,
    ContainerStatusResponse, CreateContainerRequest, CreateContainerResponse, ExecRequest,
    ExecResponse, ExecSyncRequest, ExecSyncResponse, GetEventsRequest, ListContainerStatsRequest,
    ListContainerStatsResponse, ListContainersRequest, ListContainersResponse,
    ListMetricDescriptorsRequest, ListMetricDescriptorsResponse, ListPodSandboxMetricsRequest,
    ListPodSandboxMetricsResponse, ListPodSandboxRequest, ListPodSandboxResponse,
    ListPodSandboxStatsRequest, ListPodSandboxStatsResponse, PodSandboxStatsRequest,
    PodSandboxStatsResponse, PodSandboxStatusRequest, PodSandboxStatusResponse, PortForwardRequest,
    PortForwardResponse, RemoveContainerRequest, RemoveContainerResponse, RemovePodSandboxRequest,
    RemovePodSandboxResponse, ReopenContainerLogRequest, ReopenContainerLogResponse,
    RunPodSandboxRequest, RunPodSandboxResponse, RuntimeConfigRequest, RuntimeConfigResponse,
    StartContainerRequest, StartContainerResponse, StatusRequest, StatusResponse,
    StopContainerRequest, StopContainerResponse, StopPodSandboxRequest, StopPodSandboxResponse,
    StreamContainerStatsRequest, StreamContainerStatsResponse, StreamContainersRequest,
    StreamContainersResponse, StreamPodSandboxMetricsRequest, StreamPodSandboxMetricsResponse,
    StreamPodSandboxStatsRequest, StreamPodSandboxStatsResponse, StreamPodSandboxesRequest,
    StreamPodSandboxesResponse, UpdateContainerResourcesRequest, UpdateContainerResourcesResponse,
    UpdatePodSandboxResourcesRequest, UpdatePodSandboxResourcesResponse,
    UpdateRuntimeConfigRequest, UpdateRuntimeConfigResponse, VersionRequest, VersionResponse,
    runtime_service_server::RuntimeService,
};
use futures::Stream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::{daemon::Daemon, error::ApiError, rpc_span};

/// A server-streaming response.
type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The `runtime.v1.RuntimeService` gRPC service. Every method goes through
/// [`Daemon::handle`]; methods without an implementation yet answer UNIMPLEMENTED
/// with the RPC's name (their issue replaces the arm).
pub struct RuntimeApi {
    pub daemon: Arc<Daemon>,
}

#[tonic::async_trait]
impl RuntimeService for RuntimeApi {
    type GetContainerEventsStream = ResponseStream<ContainerEventResponse>;
    type StreamPodSandboxesStream = ResponseStream<StreamPodSandboxesResponse>;
    type StreamContainersStream = ResponseStream<StreamContainersResponse>;
    type StreamContainerStatsStream = ResponseStream<StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = ResponseStream<StreamPodSandboxStatsResponse>;
    type StreamPodSandboxMetricsStream = ResponseStream<StreamPodSandboxMetricsResponse>;

    async fn version(
        &self,
        request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "Version",
            rpc_span!("Version"),
            crate::rpc::version::version(req),
        )
        .await
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        let d = &*self.daemon;
        let daemon = self.daemon.clone();
        let req = request.into_inner();
        // Creation runs as a task of its own: if the client gives up (kubelet's
        // deadline), dropping this future must not cut creation or its rollback short
        // halfway, leaving a half-made object behind.
        d.handle("RunPodSandbox", rpc_span!("RunPodSandbox"), async move {
            let work =
                async move { crate::rpc::run_pod_sandbox::run_pod_sandbox(&daemon, req).await }
                    .instrument(tracing::Span::current());
            tokio::spawn(work).await.map_err(|_| ApiError::TaskFailed {
                rpc: "RunPodSandbox",
            })?
        })
        .await
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "StopPodSandbox",
            rpc_span!("StopPodSandbox"),
            crate::rpc::stop_pod_sandbox::stop_pod_sandbox(d, req),
        )
        .await
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "RemovePodSandbox",
            rpc_span!("RemovePodSandbox"),
            crate::rpc::remove_pod_sandbox::remove_pod_sandbox(d, req),
        )
        .await
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "PodSandboxStatus",
            rpc_span!("PodSandboxStatus"),
            crate::rpc::pod_sandbox_status::pod_sandbox_status(d, req),
        )
        .await
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "ListPodSandbox",
            rpc_span!("ListPodSandbox"),
            crate::rpc::list_pod_sandbox::list_pod_sandbox(d, req),
        )
        .await
    }

    async fn create_container(
        &self,
        request: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let d = &*self.daemon;
        let daemon = self.daemon.clone();
        let req = request.into_inner();
        // Creation runs as a task of its own: if the client gives up (kubelet's
        // deadline), dropping this future must not cut creation or its rollback short
        // halfway, leaving a half-made object behind.
        d.handle(
            "CreateContainer",
            rpc_span!("CreateContainer"),
            async move {
                let work = async move {
                    crate::rpc::create_container::create_container(&daemon, req).await
                }
                .instrument(tracing::Span::current());
                tokio::spawn(work).await.map_err(|_| ApiError::TaskFailed {
                    rpc: "CreateContainer",
                })?
            },
        )
        .await
    }

    async fn start_container(
        &self,
        request: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "StartContainer",
            rpc_span!("StartContainer"),
            crate::rpc::start_container::start_container(d, req),
        )
        .await
    }

    async fn stop_container(
        &self,
        request: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "StopContainer",
            rpc_span!("StopContainer"),
            crate::rpc::stop_container::stop_container(d, req),
        )
        .await
    }

    async fn remove_container(
        &self,
        request: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "RemoveContainer",
            rpc_span!("RemoveContainer"),
            crate::rpc::remove_container::remove_container(d, req),
        )
        .await
    }

    async fn list_containers(
        &self,
        request: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "ListContainers",
            rpc_span!("ListContainers"),
            crate::rpc::container_status::list_containers(d, req),
        )
        .await
    }

    async fn container_status(
        &self,
        request: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "ContainerStatus",
            rpc_span!("ContainerStatus"),
            crate::rpc::container_status::container_status(d, req),
        )
        .await
    }

    async fn update_container_resources(
        &self,
        request: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "UpdateContainerResources",
            rpc_span!("UpdateContainerResources"),
            crate::rpc::exec_sync::update_container_resources(d, req),
        )
        .await
    }

    async fn reopen_container_log(
        &self,
        request: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "ReopenContainerLog",
            rpc_span!("ReopenContainerLog"),
            crate::rpc::exec_sync::reopen_container_log(d, req),
        )
        .await
    }

    async fn exec_sync(
        &self,
        request: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "ExecSync",
            rpc_span!("ExecSync"),
            crate::rpc::exec_sync::exec_sync(d, req),
        )
        .await
    }

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "Exec",
            rpc_span!("Exec"),
            crate::rpc::streaming::exec(d, req),
        )
        .await
    }

    async fn attach(
        &self,
        request: Request<AttachRequest>,
    ) -> Result<Response<AttachResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "Attach",
            rpc_span!("Attach"),
            crate::rpc::streaming::attach(d, req),
        )
        .await
    }

    async fn port_forward(
        &self,
        request: Request<PortForwardRequest>,
    ) -> Result<Response<PortForwardResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "PortForward",
            rpc_span!("PortForward"),
            crate::rpc::streaming::port_forward(d, req),
        )
        .await
    }

    async fn container_stats(
        &self,
        request: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "ContainerStats",
            rpc_span!("ContainerStats"),
            crate::rpc::stats::container_stats_one(self.daemon.clone(), req),
        )
        .await
    }

    async fn list_container_stats(
        &self,
        request: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "ListContainerStats",
            rpc_span!("ListContainerStats"),
            crate::rpc::stats::list_container_stats(self.daemon.clone(), req),
        )
        .await
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "PodSandboxStats",
            rpc_span!("PodSandboxStats"),
            crate::rpc::stats::pod_sandbox_stats(self.daemon.clone(), req),
        )
        .await
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "ListPodSandboxStats",
            rpc_span!("ListPodSandboxStats"),
            crate::rpc::stats::list_pod_sandbox_stats(self.daemon.clone(), req),
        )
        .await
    }

    async fn update_runtime_config(
        &self,
        request: Request<UpdateRuntimeConfigRequest>,
    ) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "UpdateRuntimeConfig",
            rpc_span!("UpdateRuntimeConfig"),
            crate::rpc::update_runtime_config::update_runtime_config(d, req),
        )
        .await
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "Status",
            rpc_span!("Status"),
            crate::rpc::status::status(d, req),
        )
        .await
    }

    async fn checkpoint_container(
        &self,
        request: Request<CheckpointContainerRequest>,
    ) -> Result<Response<CheckpointContainerResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "CheckpointContainer",
            rpc_span!("CheckpointContainer"),
            crate::rpc::checkpoint_container::checkpoint_container(d, req),
        )
        .await
    }

    async fn get_container_events(
        &self,
        request: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        let subscription = d
            .handle(
                "GetContainerEvents",
                rpc_span!("GetContainerEvents"),
                crate::rpc::get_container_events::subscribe(d, req),
            )
            .await?
            .into_inner();
        Ok(Response::new(Box::pin(
            crate::rpc::get_container_events::stream(subscription),
        )))
    }

    async fn list_metric_descriptors(
        &self,
        request: Request<ListMetricDescriptorsRequest>,
    ) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "ListMetricDescriptors",
            rpc_span!("ListMetricDescriptors"),
            crate::rpc::metric_descriptors::list_metric_descriptors(req),
        )
        .await
    }

    async fn list_pod_sandbox_metrics(
        &self,
        request: Request<ListPodSandboxMetricsRequest>,
    ) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "ListPodSandboxMetrics",
            rpc_span!("ListPodSandboxMetrics"),
            crate::rpc::list_pod_sandbox_metrics::list_pod_sandbox_metrics(
                self.daemon.clone(),
                req,
            ),
        )
        .await
    }

    async fn runtime_config(
        &self,
        request: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "RuntimeConfig",
            rpc_span!("RuntimeConfig"),
            crate::rpc::runtime_config::runtime_config(d, req),
        )
        .await
    }

    async fn update_pod_sandbox_resources(
        &self,
        request: Request<UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<UpdatePodSandboxResourcesResponse>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        d.handle(
            "UpdatePodSandboxResources",
            rpc_span!("UpdatePodSandboxResources"),
            crate::rpc::exec_sync::update_pod_sandbox_resources(d, req),
        )
        .await
    }

    async fn stream_pod_sandboxes(
        &self,
        request: Request<StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        let batches = d
            .handle(
                "StreamPodSandboxes",
                rpc_span!("StreamPodSandboxes"),
                crate::rpc::list_pod_sandbox::stream_pod_sandboxes(d, req),
            )
            .await?
            .into_inner();
        let messages = batches
            .into_iter()
            .map(|pod_sandboxes| Ok(StreamPodSandboxesResponse { pod_sandboxes }));
        Ok(Response::new(Box::pin(futures::stream::iter(messages))))
    }

    async fn stream_containers(
        &self,
        request: Request<StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        let batches = d
            .handle(
                "StreamContainers",
                rpc_span!("StreamContainers"),
                crate::rpc::container_status::stream_containers(d, req),
            )
            .await?
            .into_inner();
        let messages = batches
            .into_iter()
            .map(|containers| Ok(StreamContainersResponse { containers }));
        Ok(Response::new(Box::pin(futures::stream::iter(messages))))
    }

    async fn stream_container_stats(
        &self,
        request: Request<StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        let batches = d
            .handle(
                "StreamContainerStats",
                rpc_span!("StreamContainerStats"),
                crate::rpc::stats::stream_container_stats(self.daemon.clone(), req),
            )
            .await?
            .into_inner();
        let messages = batches
            .into_iter()
            .map(|container_stats| Ok(StreamContainerStatsResponse { container_stats }));
        Ok(Response::new(Box::pin(futures::stream::iter(messages))))
    }

    async fn stream_pod_sandbox_stats(
        &self,
        request: Request<StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        let batches = d
            .handle(
                "StreamPodSandboxStats",
                rpc_span!("StreamPodSandboxStats"),
                crate::rpc::stats::stream_pod_sandbox_stats(self.daemon.clone(), req),
            )
            .await?
            .into_inner();
        let messages = batches
            .into_iter()
            .map(|pod_sandbox_stats| Ok(StreamPodSandboxStatsResponse { pod_sandbox_stats }));
        Ok(Response::new(Box::pin(futures::stream::iter(messages))))
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        request: Request<StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        let d = &*self.daemon;
        let req = request.into_inner();
        let batches = d
            .handle(
                "StreamPodSandboxMetrics",
                rpc_span!("StreamPodSandboxMetrics"),
                crate::rpc::list_pod_sandbox_metrics::stream_pod_sandbox_metrics(
                    self.daemon.clone(),
                    req,
                ),
            )
            .await?
            .into_inner();
        let messages = batches.into_iter().map(|pod_sandbox_metrics| {
            Ok(StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            })
        });
        Ok(Response::new(Box::pin(futures::stream::iter(messages))))
    }
}
