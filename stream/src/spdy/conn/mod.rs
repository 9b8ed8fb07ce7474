//! An async SPDY/3.1 connection over any byte stream, in either role.
//!
//! One writer task owns the write half and drains a queue of frames; one
//! reader task decodes frames and dispatches them to streams. Streams only
//! wait on each other through flow control and the writer's byte budget.
//!
//! Flow control and spdystream: spdystream (kubectl, client-go) neither
//! honours nor sends WINDOW_UPDATE; it writes each `Write` as one DATA frame.
//! Holding it to a 64 KiB window would stall every transfer, so in
//! [`FlowControl::Auto`] (the server default) windows are only enforced, and
//! ours only advertised, once the peer shows it does flow control by sending
//! SETTINGS or WINDOW_UPDATE. Our client ([`FlowControl::On`]) announces its
//! windows first thing, so crust-to-crust connections are flow controlled
//! from the first byte.

mod reader;
mod shared;
mod stream;
mod writer;

#[cfg(test)]
mod raw_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Mutex as AsyncMutex, mpsc, oneshot};

use self::shared::{Shared, StreamCore, StreamState, lock};
pub use self::stream::SpdyStream;
use crate::Error;
use crate::spdy::frame::{FLAG_FIN, Frame, Headers};

/// Which end of the connection this is; clients open odd stream ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// Whether to honour the peer's flow-control windows (and send ours).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowControl {
    /// From the start, per the spec; announce our windows at once.
    On,
    /// Once the peer sends SETTINGS or WINDOW_UPDATE (see module docs).
    Auto,
    /// Never: behave like spdystream.
    Off,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub flow_control: FlowControl,
    /// Per-stream receive window we advertise (SETTINGS_INITIAL_WINDOW_SIZE).
    pub stream_window: u32,
    /// Connection-level receive window we grow stream 0 to.
    pub conn_window: u32,
    /// Bytes a stream may buffer unread before the reader task waits for the
    /// consumer; only reached by peers that ignore our window.
    pub max_buffered: usize,
    /// Bytes of DATA the writer queue may hold.
    pub write_queue_bytes: usize,
}

impl Config {
    pub fn for_role(role: Role) -> Self {
        Self {
            flow_control: match role {
                Role::Client => FlowControl::On,
                Role::Server => FlowControl::Auto,
            },
            stream_window: 256 * 1024,
            conn_window: 1024 * 1024,
            max_buffered: 4 * 1024 * 1024,
            write_queue_bytes: 1024 * 1024,
        }
    }
}

/// Dropped with the last [`Connection`] or [`SpdyStream`] handle: closes the
/// socket after flushing what is queued.
pub(crate) struct Alive(pub Arc<Shared>);

impl Drop for Alive {
    fn drop(&mut self) {
        let _ = self.0.tx.send(shared::Out::Shutdown);
        self.0.reader_stop.notify_one();
    }
}

/// A SPDY connection. Dropping it and every stream closes the socket.
pub struct Connection {
    alive: Arc<Alive>,
    accept_rx: AsyncMutex<mpsc::UnboundedReceiver<Arc<StreamCore>>>,
}

impl Connection {
    /// Server role (crustd): the peer opens streams, see [`Connection::accept`].
    pub fn server<T>(io: T) -> Self
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::with_config(io, Role::Server, Config::for_role(Role::Server))
    }

    /// Client role (crustctl, tests): open streams with [`Connection::open`].
    pub fn client<T>(io: T) -> Self
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::with_config(io, Role::Client, Config::for_role(Role::Client))
    }

    /// Spawns the reader and writer tasks on the current tokio runtime.
    pub fn with_config<T>(io: T, role: Role, config: Config) -> Self
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let (accept_tx, accept_rx) = mpsc::unbounded_channel();
        let on = config.flow_control == FlowControl::On;
        let shared = Arc::new(Shared::new(role == Role::Client, config, tx, accept_tx));
        if on {
            let mut cs = lock(&shared.state);
            shared.enable_flow_control(&mut cs);
        }
        let (r, w) = tokio::io::split(io);
        tokio::spawn(writer::run(w, rx, shared.clone()));
        tokio::spawn(reader::run(r, shared.clone()));
        Self {
            alive: Arc::new(Alive(shared)),
            accept_rx: AsyncMutex::new(accept_rx),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.alive.0
    }

    /// The next stream the peer opens, with its SYN_STREAM headers
    /// (`streamtype`, `port`, `requestid`, ...). Answer it with
    /// [`SpdyStream::reply`]. None once the connection is closed.
    pub async fn accept(&self) -> Option<SpdyStream> {
        let core = self.accept_rx.lock().await.recv().await?;
        Some(SpdyStream::new(core, self.alive.clone()))
    }

    /// Opens a stream (SYN_STREAM, FIN set when `fin`) and waits for the
    /// peer's SYN_REPLY. A RST_STREAM answer is [`Error::StreamReset`].
    pub async fn open(&self, headers: Headers, fin: bool) -> Result<SpdyStream, Error> {
        let shared = self.shared();
        let (tx, rx) = oneshot::channel();
        let core = {
            let mut cs = lock(&shared.state);
            if cs.closed {
                return Err(Error::ConnectionClosed);
            }
            if cs.goaway_received {
                return Err(Error::GoAway);
            }
            let id = cs.next_id;
            if id > 0x7fff_ffff {
                return Err(Error::StreamIdsExhausted);
            }
            cs.next_id += 2;
            let st = StreamState {
                send_window: cs.peer_initial_window,
                local_fin: fin,
                reply_tx: Some(tx),
                ..StreamState::default()
            };
            let core = StreamCore::new(id, headers.clone(), st);
            cs.streams.insert(id, core.clone());
            // Queued under the lock: stream ids must reach the wire in order.
            let flags = if fin { FLAG_FIN } else { 0 };
            let (associated_id, priority, slot) = (0, 0, 0);
            shared.send_frame(Frame::SynStream {
                stream_id: id,
                associated_id,
                priority,
                slot,
                flags,
                headers,
            });
            core
        };
        // Made before waiting so that a cancelled open resets the stream.
        let stream = SpdyStream::new(core, self.alive.clone());
        match rx.await {
            Ok(Ok(_reply_headers)) => Ok(stream),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::ConnectionClosed),
        }
    }

    /// Round trip of a PING.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let shared = self.shared();
        let (tx, rx) = oneshot::channel();
        {
            let mut cs = lock(&shared.state);
            if cs.closed {
                return Err(Error::ConnectionClosed);
            }
            let id = cs.next_ping;
            cs.next_ping = cs.next_ping.wrapping_add(2);
            cs.pings.insert(id, tx);
            shared.send_frame(Frame::Ping { id });
        }
        let start = Instant::now();
        rx.await.map_err(|_| Error::ConnectionClosed)?;
        Ok(start.elapsed())
    }

    /// Sends GOAWAY: the peer may open no more streams; open ones go on.
    pub fn goaway(&self) {
        let shared = self.shared();
        let mut cs = lock(&shared.state);
        if !cs.goaway_sent && !cs.closed {
            cs.goaway_sent = true;
            shared.send_frame(Frame::GoAway {
                last_good_stream_id: cs.last_peer_id,
                status: 0,
            });
        }
    }

    pub fn is_closed(&self) -> bool {
        self.shared().is_closed.load(Ordering::Acquire)
    }

    /// Resolves once the connection is closed (peer hung up, I/O or protocol
    /// error).
    pub async fn closed(&self) {
        let shared = self.shared();
        let notified = shared.closed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_closed() {
            return;
        }
        notified.await;
    }
}
