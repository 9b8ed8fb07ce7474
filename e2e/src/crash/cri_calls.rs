//! The CRI calls the injector makes, and the one RPC sent while crustd is killed.

use crust_proto::runtime::v1::{
    self as cri, ImageSpec, ImageStatusRequest, ListContainersRequest, ListPodSandboxRequest,
    PodSandboxConfig, PullImageRequest, RemoveContainerRequest, RemoveImageRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    StopPodSandboxRequest,
};
use serde_json::Value;
use tonic::Status;

use super::*;

impl Injector {
    pub(super) async fn rt(
        &self,
    ) -> cri::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel> {
        match self.w.d.runtime().await {
            Ok(client) => client,
            Err(e) => panic!("connect: {e:#}\n--- crustd log\n{}", self.w.d.logs()),
        }
    }

    pub(super) async fn im(
        &self,
    ) -> cri::image_service_client::ImageServiceClient<tonic::transport::Channel> {
        match self.w.d.image().await {
            Ok(client) => client,
            Err(e) => panic!("connect: {e:#}\n--- crustd log\n{}", self.w.d.logs()),
        }
    }

    pub(super) async fn pods(&self) -> Vec<cri::PodSandbox> {
        self.rt()
            .await
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .map(|r| r.into_inner().items)
            .unwrap_or_default()
    }

    pub(super) async fn pods_named(&self, name: &str) -> Vec<String> {
        self.pods()
            .await
            .into_iter()
            .filter(|p| p.metadata.as_ref().is_some_and(|m| m.name == name))
            .map(|p| p.id)
            .collect()
    }

    pub(super) async fn containers(&self) -> Vec<cri::Container> {
        self.rt()
            .await
            .list_containers(ListContainersRequest::default())
            .await
            .map(|r| r.into_inner().containers)
            .unwrap_or_default()
    }

    pub(super) async fn pod_status(
        &self,
        id: &str,
    ) -> Result<(cri::PodSandboxStatus, Value), Status> {
        let r = self
            .rt()
            .await
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            })
            .await?
            .into_inner();
        Ok((r.status.unwrap_or_default(), verbose_info(&r.info)))
    }

    pub(super) async fn container_status(
        &self,
        id: &str,
    ) -> Result<(cri::ContainerStatus, Value), Status> {
        let r = self
            .rt()
            .await
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await?
            .into_inner();
        Ok((r.status.unwrap_or_default(), verbose_info(&r.info)))
    }

    pub(super) async fn stop_pod(&self, id: &str) -> Result<(), Status> {
        self.rt()
            .await
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    pub(super) async fn remove_pod(&self, id: &str) -> Result<(), Status> {
        self.rt()
            .await
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    pub(super) async fn image_present(&self) -> Result<bool, Status> {
        Ok(self
            .im()
            .await
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: self.w.image.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await?
            .into_inner()
            .image
            .is_some())
    }

    pub(super) async fn pull(&self) -> Result<(), Status> {
        Request::Pull(self.w.image.clone())
            .send(self.rt().await, self.im().await)
            .await
    }

    pub(super) async fn remove_image(&self) -> Result<(), Status> {
        Request::RemoveImage(self.w.image.clone())
            .send(self.rt().await, self.im().await)
            .await
    }
}

/// One RPC, owned, so it can run on a task of its own while crustd is killed.
pub(super) enum Request {
    Run(Box<PodSandboxConfig>),
    StopPod(String),
    RemovePod(String),
    Create(String, Box<cri::ContainerConfig>),
    Start(String),
    Stop(String),
    Remove(String),
    Pull(String),
    RemoveImage(String),
}

impl Request {
    pub(super) async fn send(
        self,
        mut rt: cri::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
        mut im: cri::image_service_client::ImageServiceClient<tonic::transport::Channel>,
    ) -> Result<(), Status> {
        let image = |image: String| {
            Some(ImageSpec {
                image,
                ..Default::default()
            })
        };
        match self {
            Request::Run(config) => rt
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(*config),
                    runtime_handler: String::new(),
                })
                .await
                .map(|_| ()),
            Request::StopPod(id) => rt
                .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id })
                .await
                .map(|_| ()),
            Request::RemovePod(id) => rt
                .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                .await
                .map(|_| ()),
            Request::Create(pod, config) => rt
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod,
                    config: Some(*config),
                    sandbox_config: None,
                })
                .await
                .map(|_| ()),
            Request::Start(id) => rt
                .start_container(StartContainerRequest { container_id: id })
                .await
                .map(|_| ()),
            Request::Stop(id) => rt
                .stop_container(StopContainerRequest {
                    container_id: id,
                    timeout: 2,
                })
                .await
                .map(|_| ()),
            Request::Remove(id) => rt
                .remove_container(RemoveContainerRequest { container_id: id })
                .await
                .map(|_| ()),
            Request::Pull(reference) => im
                .pull_image(PullImageRequest {
                    image: image(reference),
                    auth: None,
                    sandbox_config: None,
                })
                .await
                .map(|_| ()),
            Request::RemoveImage(reference) => im
                .remove_image(RemoveImageRequest {
                    image: image(reference),
                })
                .await
                .map(|_| ()),
        }
    }
}

/// The JSON a verbose status carries under "info" (Null when absent or not JSON).
fn verbose_info(info: &std::collections::HashMap<String, String>) -> Value {
    info.get("info")
        .and_then(|i| serde_json::from_str(i).ok())
        .unwrap_or(Value::Null)
}
