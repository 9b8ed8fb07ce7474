//! crust's own `crust.v1.Images` service (not CRI), served on the CRI socket next to
//! the two CRI services: pull progress for crustctl.

use std::sync::Arc;

use crust_proto::{crust::v1::images_server::Images, runtime::v1::PullImageRequest};
use tonic::{Request, Response, Status};

use crate::{
    daemon::Daemon,
    rpc::pull_image_progress::{ProgressStream, pull_image_progress},
};

/// The `crust.v1.Images` gRPC service; the work is in `crate::rpc::pull_image_progress`.
pub struct CrustImagesApi {
    pub daemon: Arc<Daemon>,
}

#[tonic::async_trait]
impl Images for CrustImagesApi {
    type PullImageProgressStream = ProgressStream;

    async fn pull_image_progress(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<Self::PullImageProgressStream>, Status> {
        let deadline = crate::deadline::stream_deadline(request.metadata());
        Ok(Response::new(pull_image_progress(
            self.daemon.clone(),
            request.into_inner(),
            deadline,
        )))
    }
}
