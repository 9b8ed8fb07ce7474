//! The client side of CRI streaming: what `crustctl exec`, `attach` and `port-forward`
//! (and the end-to-end tests) do with the URL an `Exec`, `Attach` or `PortForward` RPC
//! answers. The runtime serves that URL as kubelet's streaming server does
//! (`k8s.io/kubelet/pkg/cri/streaming`); this module speaks both of its transports:
//!
//! - SPDY/3.1 ([`Transport::Spdy`], crictl's and kubectl's long-time default): an HTTP/1.1
//!   upgrade, then one SPDY stream per channel, typed by its `streamType` header.
//! - WebSocket ([`Transport::WebSocket`]): one connection whose binary messages start
//!   with their channel number (`k8s.io/apimachinery/pkg/util/httpstream/wsstream`).
//!
//! ```no_run
//! # async fn demo(url: &str) -> Result<(), crust_ctl::stream_client::StreamError> {
//! use crust_ctl::stream_client::{StreamOpts, Transport, exec_collect};
//! // `url` came from an Exec RPC with stdout and stderr set, stdin and tty not.
//! let opts = StreamOpts { stdin: false, stdout: true, stderr: true, tty: false };
//! let out = exec_collect(url, Transport::Spdy, opts, b"").await?;
//! println!("exit {}: {}", out.exit_code, String::from_utf8_lossy(&out.stdout));
//! # Ok(()) }
//! ```

mod spdy;
mod status;
mod ws;

use std::io;

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::mpsc,
};

pub use status::decode_status;

/// How to reach a streaming URL, as crictl's `--transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    #[default]
    Spdy,
    WebSocket,
}

/// Which streams an exec or attach carries. Must match the flags of the `Exec` or
/// `Attach` request the URL came from: the server waits for exactly those streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamOpts {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// A terminal: output arrives on stdout only, and resizes are sent.
    pub tty: bool,
}

/// What can fail while streaming.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("unsupported streaming URL {url:?}: expected http://HOST:PORT/PATH")]
    Url { url: String },
    #[error("connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("upgrade of {url} refused: HTTP {status}: {body}")]
    UpgradeRefused {
        url: String,
        status: u16,
        body: String,
    },
    #[error("malformed upgrade response from {url}: {reason}")]
    BadUpgradeResponse { url: String, reason: String },
    #[error("SPDY connection")]
    Spdy(#[from] crust_stream::Error),
    #[error("WebSocket connection")]
    WebSocket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("local i/o")]
    Io(#[from] io::Error),
    /// The session failed on the runtime's side (not a non-zero exit).
    #[error("{message}")]
    Remote { message: String },
    #[error("the stream ended without an exit status")]
    NoStatus,
    #[error("malformed status on the error stream: {text:?}")]
    BadStatus { text: String },
    #[error("port forward to port {port}: {message}")]
    PortForward { port: u16, message: String },
}

impl From<tokio_tungstenite::tungstenite::Error> for StreamError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        StreamError::WebSocket(Box::new(e))
    }
}

/// Runs an exec or attach session at `url` (from an `Exec` or `Attach` RPC) to its end
/// and returns the remote exit code (0 for attach sessions that end normally).
///
/// `stdin` is read until EOF (then the remote stdin is closed) when `opts.stdin`; the
/// remote stdout and stderr are copied to `stdout` and `stderr`. Each `(width, height)`
/// from `resize` is sent as a terminal resize when `opts.tty`. A failure other than a
/// non-zero exit (the command could not start, the container is gone) is
/// [`StreamError::Remote`] with the runtime's message.
pub async fn exec_stream<I, O, E>(
    url: &str,
    transport: Transport,
    opts: StreamOpts,
    stdin: I,
    stdout: O,
    stderr: E,
    resize: Option<mpsc::Receiver<(u16, u16)>>,
) -> Result<i32, StreamError>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let target = StreamUrl::parse(url)?;
    let resize = resize.filter(|_| opts.tty);
    match transport {
        Transport::Spdy => spdy::exec(&target, opts, stdin, stdout, stderr, resize).await,
        Transport::WebSocket => ws::exec(&target, opts, stdin, stdout, stderr, resize).await,
    }
}

/// [`exec_stream`] for an `Attach` URL: the protocol is the same.
pub async fn attach_stream<I, O, E>(
    url: &str,
    transport: Transport,
    opts: StreamOpts,
    stdin: I,
    stdout: O,
    stderr: E,
    resize: Option<mpsc::Receiver<(u16, u16)>>,
) -> Result<i32, StreamError>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    exec_stream(url, transport, opts, stdin, stdout, stderr, resize).await
}

/// What [`exec_collect`] gathered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// [`exec_stream`] with `stdin` given as bytes (sent, then closed, when `opts.stdin`)
/// and the output collected in memory; for tests.
pub async fn exec_collect(
    url: &str,
    transport: Transport,
    opts: StreamOpts,
    stdin: &[u8],
) -> Result<ExecOutput, StreamError> {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let exit_code =
        exec_stream(url, transport, opts, stdin, &mut stdout, &mut stderr, None).await?;
    Ok(ExecOutput {
        exit_code,
        stdout,
        stderr,
    })
}

/// Forwards one local TCP connection to `port` in the pod through `url` (from a
/// `PortForward` RPC; its token is good for one connection, so ask for a fresh URL per
/// connection). Returns when the pod side closes; text the runtime sends on the error
/// stream (nothing listens on the port, ...) is [`StreamError::PortForward`].
///
/// With [`Transport::WebSocket`] the port is put in the URL's query, as kubectl does.
pub async fn port_forward_conn(
    url: &str,
    transport: Transport,
    port: u16,
    tcp: TcpStream,
) -> Result<(), StreamError> {
    let target = StreamUrl::parse(url)?;
    match transport {
        Transport::Spdy => spdy::port_forward(&target, port, tcp).await,
        Transport::WebSocket => ws::port_forward(&target, port, tcp).await,
    }
}

/// An `http://` streaming URL split for dialing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StreamUrl {
    /// As given, for messages.
    url: String,
    /// `host:port`, for dialing and the Host header.
    authority: String,
    /// `/exec/TOKEN` with its query, if any.
    path: String,
}

impl StreamUrl {
    fn parse(url: &str) -> Result<StreamUrl, StreamError> {
        let bad = || StreamError::Url { url: url.into() };
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad());
        }
        // Bracketed IPv6 literals keep their colons inside the brackets.
        let has_port = match authority.rfind(']') {
            Some(end) => authority[end..].contains(':'),
            None => authority.contains(':'),
        };
        let authority = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(StreamUrl {
            url: url.into(),
            authority,
            path,
        })
    }

    async fn dial(&self) -> Result<TcpStream, StreamError> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(|source| StreamError::Connect {
                addr: self.authority.clone(),
                source,
            })?;
        // Keystrokes and small frames should not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_for_dialing() {
        let cases = [
            (
                "http://127.0.0.1:10010/exec/abc",
                "127.0.0.1:10010",
                "/exec/abc",
            ),
            ("http://localhost/attach/x", "localhost:80", "/attach/x"),
            (
                "http://[::1]:8080/portforward/t?port=80",
                "[::1]:8080",
                "/portforward/t?port=80",
            ),
            ("http://[::1]/exec/t", "[::1]:80", "/exec/t"),
            ("http://h:1", "h:1", "/"),
        ];
        for (url, authority, path) in cases {
            let u = StreamUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(u.authority, authority, "{url}");
            assert_eq!(u.path, path, "{url}");
        }
        for bad in ["https://h/exec/t", "ws://h/x", "http:///x", "h:1/x", ""] {
            assert!(StreamUrl::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
