//! The CRI ImageService: pull, list, inspect and remove images.

use std::{pin::Pin, sync::Arc};

use crust_proto::runtime::v1::{
    ImageFsInfoRequest, ImageFsInfoResponse, ImageStatusRequest, ImageStatusResponse,
    ListImagesRequest, ListImagesResponse, PullImageRequest, PullImageResponse, RemoveImageRequest,
    RemoveImageResponse, StreamImagesRequest, StreamImagesResponse,
    image_service_server::ImageService,
};
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::{daemon::Daemon, rpc_span};

/// A server-streaming response.
type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The `runtime.v1.ImageService` gRPC service. Every method goes through
/// [`Daemon::handle`]; the work is in `crate::rpc::<rpc name>`.
pub struct ImageApi {
    pub daemon: Arc<Daemon>,
}

#[tonic::async_trait]
impl ImageService for ImageApi {
    type StreamImagesStream = ResponseStream<StreamImagesResponse>;

    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let d = &*self.daemon;
        d.handle(
            "ListImages",
            rpc_span!("ListImages"),
            crate::rpc::list_images::list_images(d, request.into_inner()),
        )
        .await
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let d = &*self.daemon;
        d.handle(
            "ImageStatus",
            rpc_span!("ImageStatus"),
            crate::rpc::image_status::image_status(d, request.into_inner()),
        )
        .await
    }

    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let d = &*self.daemon;
        d.handle(
            "PullImage",
            rpc_span!("PullImage"),
            crate::rpc::pull_image::pull_image(d, request.into_inner()),
        )
        .await
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let d = &*self.daemon;
        d.handle(
            "RemoveImage",
            rpc_span!("RemoveImage"),
            crate::rpc::remove_image::remove_image(d, request.into_inner()),
        )
        .await
    }

    async fn image_fs_info(
        &self,
        request: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        let d = &*self.daemon;
        d.handle(
            "ImageFsInfo",
            rpc_span!("ImageFsInfo"),
            crate::rpc::image_fs_info::image_fs_info(d, request.into_inner()),
        )
        .await
    }

    async fn stream_images(
        &self,
        request: Request<StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        let d = &*self.daemon;
        let batches = d
            .handle(
                "StreamImages",
                rpc_span!("StreamImages"),
                crate::rpc::stream_images::stream_images(d, request.into_inner()),
            )
            .await?
            .into_inner();
        let stream: Self::StreamImagesStream =
            Box::pin(futures::stream::iter(batches.into_iter().map(Ok)));
        Ok(Response::new(stream))
    }
}
