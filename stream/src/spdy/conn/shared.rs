//! State shared by the connection handles, its streams and its two tasks.
//!
//! Lock order: `Shared::state` before any `StreamCore::st`, never the reverse.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::Config;
use crate::Error;
use crate::spdy::frame::{DEFAULT_WINDOW, Frame, Headers, SETTINGS_INITIAL_WINDOW_SIZE, Setting};

/// What the writer task is handed, in wire order.
pub(crate) enum Out {
    /// A frame, with the queue budget its DATA holds until written.
    Frame(Frame, Option<OwnedSemaphorePermit>),
    /// Flush what came before, shut the write half down, stop.
    Shutdown,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) struct Shared {
    pub is_client: bool,
    pub config: Config,
    pub tx: mpsc::UnboundedSender<Out>,
    pub state: Mutex<ConnState>,
    /// Woken on any change that may let a blocked `send` go on.
    pub send_ready: Notify,
    /// Woken (with a stored permit) to stop the reader task.
    pub reader_stop: Notify,
    /// Woken once when the connection closes.
    pub closed: Notify,
    pub is_closed: AtomicBool,
    /// The peer takes part in flow control: honour its windows, send ours.
    pub peer_fc: AtomicBool,
    /// Our per-stream receive window as the peer knows it.
    pub local_stream_window: AtomicU32,
    /// Bytes of DATA that may sit in the writer queue; bounds memory when the
    /// peer does no flow control and the socket is slow.
    pub queue_budget: Arc<Semaphore>,
}

pub(crate) struct ConnState {
    pub streams: HashMap<u32, Arc<StreamCore>>,
    pub next_id: u32,
    pub next_ping: u32,
    pub pings: HashMap<u32, oneshot::Sender<()>>,
    pub last_peer_id: u32,
    pub goaway_received: bool,
    pub goaway_sent: bool,
    pub closed: bool,
    pub announced: bool,
    /// SPDY/3.1 connection-level send window (stream 0).
    pub send_window: i64,
    pub peer_initial_window: i64,
    /// DATA bytes received and not yet acknowledged on stream 0.
    pub recv_unacked: u32,
    pub local_conn_window: u32,
    pub accept_tx: Option<mpsc::UnboundedSender<Arc<StreamCore>>>,
}

pub(crate) struct StreamCore {
    pub id: u32,
    /// The SYN_STREAM headers: the peer's for accepted streams, ours for opened.
    pub headers: Headers,
    pub st: Mutex<StreamState>,
    /// Woken when the consumer takes data (the reader may wait for room).
    pub drained: Notify,
}

#[derive(Default)]
pub(crate) struct StreamState {
    pub queue: VecDeque<Bytes>,
    pub buffered: usize,
    pub recv_waker: Option<Waker>,
    pub remote_fin: bool,
    pub reset: Option<u32>,
    pub conn_closed: bool,
    /// No handle is left: incoming data is dropped.
    pub detached: bool,
    pub recv_unacked: u32,
    pub send_window: i64,
    pub local_fin: bool,
    /// Accepted and not yet answered with SYN_REPLY.
    pub needs_reply: bool,
    /// Opened and waiting for SYN_REPLY.
    pub reply_tx: Option<oneshot::Sender<Result<Headers, Error>>>,
}

impl StreamState {
    pub fn wake_reader(&mut self) {
        if let Some(w) = self.recv_waker.take() {
            w.wake();
        }
    }

    pub fn done(&self) -> bool {
        self.reset.is_some() || (self.remote_fin && self.local_fin)
    }
}

impl StreamCore {
    pub fn new(id: u32, headers: Headers, st: StreamState) -> Arc<Self> {
        Arc::new(Self {
            id,
            headers,
            st: Mutex::new(st),
            drained: Notify::new(),
        })
    }
}

impl Shared {
    pub fn new(
        is_client: bool,
        config: Config,
        tx: mpsc::UnboundedSender<Out>,
        accept_tx: mpsc::UnboundedSender<Arc<StreamCore>>,
    ) -> Self {
        let queue_budget = Arc::new(Semaphore::new(config.write_queue_bytes.max(1 << 16)));
        Self {
            is_client,
            tx,
            state: Mutex::new(ConnState {
                streams: HashMap::new(),
                next_id: if is_client { 1 } else { 2 },
                next_ping: if is_client { 1 } else { 2 },
                pings: HashMap::new(),
                last_peer_id: 0,
                goaway_received: false,
                goaway_sent: false,
                closed: false,
                announced: false,
                send_window: i64::from(DEFAULT_WINDOW),
                peer_initial_window: i64::from(DEFAULT_WINDOW),
                recv_unacked: 0,
                local_conn_window: DEFAULT_WINDOW,
                accept_tx: Some(accept_tx),
            }),
            send_ready: Notify::new(),
            reader_stop: Notify::new(),
            closed: Notify::new(),
            is_closed: AtomicBool::new(false),
            peer_fc: AtomicBool::new(false),
            local_stream_window: AtomicU32::new(DEFAULT_WINDOW),
            queue_budget,
            config,
        }
    }

    /// Queues a frame; after close the frame is silently dropped.
    pub fn send_frame(&self, frame: Frame) {
        let _ = self.tx.send(Out::Frame(frame, None));
    }

    pub fn flow_control(&self) -> bool {
        self.peer_fc.load(Ordering::Acquire)
    }

    /// The peer has shown it does flow control: from now on honour its
    /// windows and tell it ours.
    pub fn enable_flow_control(&self, cs: &mut ConnState) {
        if self.config.flow_control == super::FlowControl::Off {
            return;
        }
        self.peer_fc.store(true, Ordering::Release);
        self.announce(cs);
    }

    /// Sends our SETTINGS (per-stream window) and grows the connection window;
    /// only to peers that do flow control (spdystream ignores both).
    pub fn announce(&self, cs: &mut ConnState) {
        if cs.announced {
            return;
        }
        cs.announced = true;
        let stream_window = self.config.stream_window;
        self.local_stream_window
            .store(stream_window, Ordering::Release);
        let entry = Setting {
            flags: 0,
            id: SETTINGS_INITIAL_WINDOW_SIZE,
            value: stream_window,
        };
        self.send_frame(Frame::Settings {
            flags: 0,
            entries: vec![entry],
        });
        let conn_window = self.config.conn_window.max(DEFAULT_WINDOW);
        if conn_window > DEFAULT_WINDOW {
            let delta = conn_window - DEFAULT_WINDOW;
            self.send_frame(Frame::WindowUpdate {
                stream_id: 0,
                delta,
            });
        }
        cs.local_conn_window = conn_window;
    }

    /// Forgets a stream once both directions are finished.
    pub fn maybe_remove(&self, core: &StreamCore) {
        let mut cs = lock(&self.state);
        if lock(&core.st).done() {
            cs.streams.remove(&core.id);
        }
    }

    /// Ends everything: pending reads return None, sends and opens fail,
    /// `accept` returns None, the writer flushes and shuts the socket.
    pub fn close_all(&self) {
        let streams: Vec<_> = {
            let mut cs = lock(&self.state);
            if cs.closed {
                return;
            }
            cs.closed = true;
            cs.accept_tx = None;
            cs.pings.clear();
            cs.streams.drain().map(|(_, s)| s).collect()
        };
        for core in streams {
            let mut st = lock(&core.st);
            st.conn_closed = true;
            st.reply_tx = None;
            st.wake_reader();
            drop(st);
            core.drained.notify_waiters();
        }
        self.is_closed.store(true, Ordering::Release);
        self.queue_budget.close();
        self.send_ready.notify_waiters();
        self.closed.notify_waiters();
        let _ = self.tx.send(Out::Shutdown);
        self.reader_stop.notify_one();
    }
}
