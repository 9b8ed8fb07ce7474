//! One SPDY stream: the user's handle.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, ReadBuf};

use super::Alive;
use super::shared::{Out, Shared, StreamCore, lock};
use crate::Error;
use crate::spdy::frame::{FLAG_FIN, Frame, Headers, RstStatus};

/// Largest DATA frame we send; windows permitting.
const MAX_CHUNK: usize = 32 * 1024;

/// Owns the stream for as long as any clone of its [`SpdyStream`] lives.
struct StreamRef {
    core: Arc<StreamCore>,
    alive: Arc<Alive>,
}

/// A stream on a [`super::Connection`]. Clones share the stream: one task
/// may `recv` while another `send`s. Only one task should receive at a time.
///
/// Dropping the last clone half-closes a stream that was not closed (or
/// resets one never answered) and discards what the peer still sends.
#[derive(Clone)]
pub struct SpdyStream {
    inner: Arc<StreamRef>,
    /// What `AsyncRead` took from the queue and has not handed out yet.
    pending: Option<Bytes>,
}

impl std::fmt::Debug for SpdyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpdyStream")
            .field("id", &self.id())
            .finish()
    }
}

impl SpdyStream {
    pub(crate) fn new(core: Arc<StreamCore>, alive: Arc<Alive>) -> Self {
        Self {
            inner: Arc::new(StreamRef { core, alive }),
            pending: None,
        }
    }

    fn core(&self) -> &StreamCore {
        &self.inner.core
    }

    fn shared(&self) -> &Shared {
        &self.inner.alive.0
    }

    pub fn id(&self) -> u32 {
        self.core().id
    }

    /// The SYN_STREAM headers: the peer's on accepted streams (`streamtype`,
    /// `port`, `requestid`), our own on opened ones.
    pub fn headers(&self) -> &Headers {
        &self.core().headers
    }

    /// The RST_STREAM status, once either side reset the stream.
    pub fn reset_status(&self) -> Option<u32> {
        lock(&self.core().st).reset
    }

    /// Answers an accepted stream with SYN_REPLY. kubelet replies to every
    /// stream at once with empty headers; `send` and `close` do that
    /// themselves when this was not called.
    pub fn reply(&self, headers: Headers) -> Result<(), Error> {
        let mut st = lock(&self.core().st);
        if !st.needs_reply {
            return Err(Error::AlreadyReplied {
                stream_id: self.id(),
            });
        }
        if st.conn_closed {
            return Err(Error::ConnectionClosed);
        }
        st.needs_reply = false;
        let frame = Frame::SynReply {
            stream_id: self.id(),
            flags: 0,
            headers,
        };
        self.shared().send_frame(frame);
        Ok(())
    }

    /// The next chunk the peer sent; None after its FIN, a reset or the
    /// connection closing.
    pub async fn recv(&self) -> Option<Bytes> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Poll form of [`SpdyStream::recv`]; stores one waker.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let shared = self.shared();
        let mut st = lock(&self.core().st);
        if let Some(chunk) = st.queue.pop_front() {
            st.buffered -= chunk.len();
            st.recv_unacked += chunk.len() as u32;
            let window = shared
                .local_stream_window
                .load(std::sync::atomic::Ordering::Acquire);
            let update = shared.flow_control() && !st.remote_fin && st.recv_unacked >= window / 2;
            if update {
                let delta = std::mem::take(&mut st.recv_unacked);
                shared.send_frame(Frame::WindowUpdate {
                    stream_id: self.id(),
                    delta,
                });
            }
            drop(st);
            self.core().drained.notify_waiters();
            return Poll::Ready(Some(chunk));
        }
        if st.remote_fin || st.reset.is_some() || st.conn_closed {
            return Poll::Ready(None);
        }
        st.recv_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Sends `data`, split into DATA frames within the peer's windows.
    pub async fn send(&self, data: impl Into<Bytes>) -> Result<(), Error> {
        let mut rest: Bytes = data.into();
        self.auto_reply();
        while !rest.is_empty() {
            let n = self.reserve_window(rest.len()).await?;
            let permit = (self.shared().queue_budget.clone())
                .acquire_many_owned(n as u32)
                .await
                .map_err(|_| Error::ConnectionClosed)?;
            let chunk = rest.split_to(n);
            // Checked and queued under the stream lock so that a concurrent
            // close() cannot put its FIN ahead of this data.
            let st = lock(&self.core().st);
            self.check_sendable(&st)?;
            let frame = Frame::Data {
                stream_id: self.id(),
                flags: 0,
                data: chunk,
            };
            self.shared()
                .tx
                .send(Out::Frame(frame, Some(permit)))
                .map_err(|_| Error::ConnectionClosed)?;
        }
        Ok(())
    }

    /// Half-closes: an empty DATA frame with FIN. Reading goes on.
    pub fn close(&self) -> Result<(), Error> {
        self.auto_reply();
        let mut st = lock(&self.core().st);
        self.check_sendable(&st)?;
        st.local_fin = true;
        let frame = Frame::Data {
            stream_id: self.id(),
            flags: FLAG_FIN,
            data: Bytes::new(),
        };
        self.shared().send_frame(frame);
        drop(st);
        self.shared().maybe_remove(self.core());
        Ok(())
    }

    /// Aborts the stream both ways with RST_STREAM (`RstStatus::CANCEL`, ...).
    pub fn reset(&self, status: u32) {
        let mut st = lock(&self.core().st);
        if st.reset.is_some() || st.conn_closed {
            return;
        }
        st.reset = Some(status);
        st.queue.clear();
        st.buffered = 0;
        st.wake_reader();
        self.shared().send_frame(Frame::RstStream {
            stream_id: self.id(),
            status,
        });
        drop(st);
        self.core().drained.notify_waiters();
        self.shared().send_ready.notify_waiters();
        self.shared().maybe_remove(self.core());
    }

    fn auto_reply(&self) {
        let needs = lock(&self.core().st).needs_reply;
        if needs {
            let _ = self.reply(Headers::new());
        }
    }

    fn check_sendable(&self, st: &super::shared::StreamState) -> Result<(), Error> {
        if let Some(status) = st.reset {
            return Err(Error::StreamReset {
                stream_id: self.id(),
                status,
            });
        }
        if st.conn_closed {
            return Err(Error::ConnectionClosed);
        }
        if st.local_fin {
            return Err(Error::StreamClosed {
                stream_id: self.id(),
            });
        }
        Ok(())
    }

    /// Waits until the stream and connection windows allow some bytes and
    /// takes up to `want` (at most one frame's worth) of them.
    async fn reserve_window(&self, want: usize) -> Result<usize, Error> {
        let shared = self.shared();
        loop {
            let notified = shared.send_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut cs = lock(&shared.state);
                let mut st = lock(&self.core().st);
                if cs.closed {
                    return Err(Error::ConnectionClosed);
                }
                self.check_sendable(&st)?;
                let limit = want.min(MAX_CHUNK) as i64;
                let n = if shared.flow_control() {
                    limit.min(st.send_window).min(cs.send_window)
                } else {
                    limit
                };
                if n > 0 {
                    st.send_window -= n;
                    cs.send_window -= n;
                    return Ok(n as usize);
                }
            }
            notified.await;
        }
    }
}

impl Drop for StreamRef {
    fn drop(&mut self) {
        let shared = &self.alive.0;
        let mut st = lock(&self.core.st);
        st.detached = true;
        st.queue.clear();
        st.buffered = 0;
        let id = self.core.id;
        if st.reset.is_none() && !st.conn_closed {
            if st.needs_reply || st.reply_tx.is_some() {
                st.reset = Some(RstStatus::CANCEL);
                shared.send_frame(Frame::RstStream {
                    stream_id: id,
                    status: RstStatus::CANCEL,
                });
            } else if !st.local_fin {
                st.local_fin = true;
                let data = Bytes::new();
                shared.send_frame(Frame::Data {
                    stream_id: id,
                    flags: FLAG_FIN,
                    data,
                });
            }
        }
        drop(st);
        self.core.drained.notify_waiters();
        shared.maybe_remove(&self.core);
    }
}

impl AsyncRead for SpdyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pending.is_none() {
            match ready!(self.poll_recv(cx)) {
                Some(chunk) => self.pending = Some(chunk),
                None => return Poll::Ready(Ok(())),
            }
        }
        if let Some(chunk) = self.pending.as_mut() {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            chunk.advance(n);
            if chunk.is_empty() {
                self.pending = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}
