//! Connecting to a CRI endpoint over a unix socket.

use std::{path::PathBuf, time::Duration};

use crust_proto::{
    MAX_MESSAGE_SIZE,
    runtime::v1::{
        image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
    },
};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Why the runtime could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("unsupported endpoint {0:?}: use unix:///path/to/socket or an absolute socket path")]
    Endpoint(String),
    #[error("connect to {endpoint}")]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
}

/// The socket path named by `endpoint`: `unix:///path` or a bare absolute path, as
/// crictl accepts them.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, ConnectError> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(ConnectError::Endpoint(endpoint.to_string()))
    }
}

/// Opens a gRPC channel to `endpoint`. `timeout` bounds the connection and every call
/// made on the channel, like crictl's `--timeout`.
pub async fn connect(endpoint: &str, timeout: Duration) -> Result<Channel, ConnectError> {
    connect_with_deadline(endpoint, timeout, timeout).await
}

/// As [`connect`], with each call bounded by `call_timeout` instead. A call's own
/// `grpc-timeout` can only shorten the channel's, so a verb that waits on purpose
/// (`stop -t N`: the runtime waits up to N seconds before SIGKILL) needs a channel
/// with the longer deadline, as crictl adds the stop timeout to its RPC deadline.
pub async fn connect_with_deadline(
    endpoint: &str,
    connect_timeout: Duration,
    call_timeout: Duration,
) -> Result<Channel, ConnectError> {
    let path = socket_path(endpoint)?;
    // The URI is required by tonic but unused: the connector below dials the socket.
    Endpoint::from_static("http://localhost")
        .connect_timeout(connect_timeout)
        .timeout(call_timeout)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|source| ConnectError::Connect {
            endpoint: endpoint.to_string(),
            source,
        })
}

/// A RuntimeService client that accepts kubelet-sized (16 MiB) messages.
pub fn runtime_client(channel: Channel) -> RuntimeServiceClient<Channel> {
    RuntimeServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// An ImageService client that accepts kubelet-sized (16 MiB) messages.
pub fn image_client(channel: Channel) -> ImageServiceClient<Channel> {
    ImageServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///run/crust/crust.sock").unwrap(),
            PathBuf::from("/run/crust/crust.sock")
        );
        assert_eq!(
            socket_path("/run/x.sock").unwrap(),
            PathBuf::from("/run/x.sock")
        );
        for bad in ["tcp://127.0.0.1:1", "relative.sock", "unix://relative", ""] {
            assert!(socket_path(bad).is_err(), "{bad:?}");
        }
    }
}
