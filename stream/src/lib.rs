//! SPDY/3.1 for kubelet-style streaming (exec, attach, port-forward).
//!
//! `kubectl` and client-go upgrade the streaming HTTP request to SPDY/3.1 and
//! speak it with `github.com/moby/spdystream`. No Rust crate serves SPDY, so
//! this crate implements the framing ([`spdy::frame`]) and a multiplexed
//! connection ([`Connection`]) usable as server (crustd) and client
//! (crustctl, e2e tests).
//!
//! ```no_run
//! # async fn demo(io: tokio::net::TcpStream) -> Result<(), crust_stream::Error> {
//! use crust_stream::{Connection, Headers};
//! let conn = Connection::server(io);
//! while let Some(stream) = conn.accept().await {
//!     let kind = stream.headers().get("streamtype").map(str::to_owned);
//!     stream.reply(Headers::new())?;
//!     tokio::spawn(async move {
//!         while let Some(chunk) = stream.recv().await {
//!             if stream.send(chunk).await.is_err() { break; }
//!         }
//!         let _ = stream.close();
//!         drop(kind);
//!     });
//! }
//! # Ok(()) }
//! ```

pub mod spdy;

pub use spdy::conn::{Config, Connection, FlowControl, Role, SpdyStream};
pub use spdy::frame::{Frame, Headers, RstStatus, Setting};

/// What can fail while framing or running a SPDY connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unsupported SPDY version {version} (only 3 is spoken)")]
    UnsupportedVersion { version: u16 },
    #[error("invalid length {length} for SPDY control frame type {kind}")]
    InvalidFrameLength { kind: u16, length: usize },
    #[error("frame payload of {length} bytes does not fit the 24-bit length field")]
    FrameTooLarge { length: usize },
    #[error("malformed SPDY header block: {reason}")]
    MalformedHeaders { reason: &'static str },
    #[error("SPDY header block inflates past {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("compressing SPDY header block")]
    Compress(#[source] flate2::CompressError),
    #[error("decompressing SPDY header block")]
    Decompress(#[source] flate2::DecompressError),
    #[error("stream {stream_id} was reset with status {status}")]
    StreamReset { stream_id: u32, status: u32 },
    #[error("stream {stream_id} is already closed for sending")]
    StreamClosed { stream_id: u32 },
    #[error("stream {stream_id} was already replied to")]
    AlreadyReplied { stream_id: u32 },
    #[error("peer sent GOAWAY; no new streams may be opened")]
    GoAway,
    #[error("SPDY stream ids exhausted on this connection")]
    StreamIdsExhausted,
    #[error("SPDY connection closed")]
    ConnectionClosed,
    #[error("i/o on SPDY connection")]
    Io(#[from] std::io::Error),
}
