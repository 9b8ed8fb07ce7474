//! The SPDY/3.1 transports (kubelet's `createHTTPStreamStreams` and port-forward
//! `httpStreamHandler`).

use std::{sync::Arc, time::Duration};

use super::Pending;
use crate::daemon::Daemon;

pub async fn serve<IO>(
    _io: IO,
    _protocol: &str,
    _pending: Pending,
    _daemon: Arc<Daemon>,
    _timeouts: (Duration, Duration),
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
}
