//! The streaming server behind Exec, Attach and PortForward.
//!
//! The RPCs validate the request, park it here under a single-use random token and
//! return `http://<address>/<exec|attach|portforward>/<token>`. kubelet (or crictl)
//! then connects there and upgrades the connection to SPDY/3.1 or WebSocket, speaking
//! the protocols of kubelet's own streaming server (`k8s.io/kubelet/pkg/cri/streaming`):
//! `v1`–`v5.channel.k8s.io` for exec/attach and `portforward.k8s.io` (SPDY) or
//! `v4.channel.k8s.io` (WebSocket) for port forwarding.

mod bridge;
mod http;
mod portforward;
mod remotecommand;
mod spdy;
mod tokens;
mod ws;

use std::{net::SocketAddr, sync::Arc, time::Duration};

pub use http::serve;
pub use tokens::Tokens;

/// What a token stands for: the RPC request, as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    Exec {
        container_id: String,
        cmd: Vec<String>,
        streams: crust_runtime::container::StdioRequest,
    },
    Attach {
        container_id: String,
        streams: crust_runtime::container::StdioRequest,
    },
    PortForward {
        pod_id: String,
        /// Ports named in the request (may be empty: the client names them later).
        ports: Vec<u16>,
    },
}

impl Pending {
    fn path(&self) -> &'static str {
        match self {
            Pending::Exec { .. } => "exec",
            Pending::Attach { .. } => "attach",
            Pending::PortForward { .. } => "portforward",
        }
    }
}

/// Tokens and the address URLs point at.
pub struct Streaming {
    pub tokens: Tokens,
    /// `http://host:port`, as clients reach the bound listener.
    base_url: String,
    pub idle_timeout: Duration,
    /// How long a client may take to open the streams it announced (kubelet: 30 s).
    pub stream_creation_timeout: Duration,
}

impl Streaming {
    pub fn new(bound: SocketAddr, token_timeout: Duration, idle_timeout: Duration) -> Streaming {
        // A wildcard address is not one a client can connect to; kubelet reaches us on
        // the same node, so loopback is right then.
        let host = match bound.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
            ip if ip.is_unspecified() => "[::1]".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        Streaming {
            tokens: Tokens::new(token_timeout),
            base_url: format!("http://{host}:{}", bound.port()),
            idle_timeout,
            stream_creation_timeout: Duration::from_secs(30),
        }
    }

    /// Where the server is reached, `http://host:port`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Parks `pending` and returns the URL that redeems it.
    pub fn url_for(&self, pending: Pending) -> String {
        let path = pending.path();
        let token = self.tokens.insert(pending);
        format!("{}/{path}/{token}", self.base_url)
    }
}

/// Shared handle the RPCs and the HTTP server use.
pub type StreamingHandle = Arc<Streaming>;
