//! The CRI ImageService: pull, list, inspect and remove images.

use std::{pin::Pin, sync::Arc};

use crust_proto::runtime::v1::{
    image_service_server::ImageService,
    ImageFsInfoRequest,
    ImageFsInfoResponse,
    ImageStatusRequest,
    ImageStatusResponse,
    ListImagesRequest,
    ListImagesResponse,
    PullImageRequest,
    PullImageResponse,
    RemoveImageRequest,
    RemoveImageResponse,
    StreamImagesRequest,
    StreamImagesResponse,
};
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::{daemon::Daemon, error::ApiError, rpc_span};

/// A server-streaming response.
type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The `runtime.v1.ImageService` gRPC service. Every method goes through
/// [`Daemon::handle`]; methods without an implementation yet answer UNIMPLEMENTED
/// with the RPC's name (their issue replaces the arm).
pub struct ImageApi {
    pub daemon: Arc<Daemon>,
}

impl ImageApi {
    async fn unimplemented<T>(&self, rpc: &'static str) -> Result<Response<T>, Status> {
        self.daemon.handle(rpc, rpc_span!(rpc), async { Err(ApiError::Unimplemented { rpc }) }).await
    }
}

#[tonic::async_trait]
impl ImageService for ImageApi {
    type StreamImagesStream = ResponseStream<StreamImagesResponse>;

    async fn list_images(&self, _request: Request<ListImagesRequest>) -> Result<Response<ListImagesResponse>, Status> {
        self.unimplemented("ListImages").await
    }

    async fn image_status(&self, _request: Request<ImageStatusRequest>) -> Result<Response<ImageStatusResponse>, Status> {
        self.unimplemented("ImageStatus").await
    }

    async fn pull_image(&self, _request: Request<PullImageRequest>) -> Result<Response<PullImageResponse>, Status> {
        self.unimplemented("PullImage").await
    }

    async fn remove_image(&self, _request: Request<RemoveImageRequest>) -> Result<Response<RemoveImageResponse>, Status> {
        self.unimplemented("RemoveImage").await
    }

    async fn image_fs_info(&self, _request: Request<ImageFsInfoRequest>) -> Result<Response<ImageFsInfoResponse>, Status> {
        self.unimplemented("ImageFsInfo").await
    }

    async fn stream_images(&self, _request: Request<StreamImagesRequest>) -> Result<Response<Self::StreamImagesStream>, Status> {
        self.unimplemented("StreamImages").await
    }
}
