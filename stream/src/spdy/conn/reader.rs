//! The reader task: decodes frames and dispatches them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::shared::{Shared, StreamCore, StreamState, lock};
use crate::Error;
use crate::spdy::frame::{
    Decoder, FLAG_FIN, Frame, Headers, RstStatus, SETTINGS_INITIAL_WINDOW_SIZE, Setting,
};

const GOAWAY_PROTOCOL_ERROR: u32 = 1;

pub(crate) async fn run<R: AsyncRead + Unpin>(mut r: R, shared: Arc<Shared>) {
    let mut dec = Decoder::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    'outer: loop {
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if !dispatch(&shared, frame).await {
                        break 'outer;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "SPDY protocol error; closing connection");
                    let last_good_stream_id = lock(&shared.state).last_peer_id;
                    let status = GOAWAY_PROTOCOL_ERROR;
                    shared.send_frame(Frame::GoAway {
                        last_good_stream_id,
                        status,
                    });
                    break 'outer;
                }
            }
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        tokio::select! {
            res = r.read_buf(&mut buf) => match res {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "reading SPDY connection");
                    break;
                }
            },
            _ = shared.reader_stop.notified() => break,
        }
    }
    shared.close_all();
}

/// Handles one frame; false stops the reader.
async fn dispatch(shared: &Shared, frame: Frame) -> bool {
    match frame {
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            return on_data(shared, stream_id, flags, data).await;
        }
        Frame::SynStream {
            stream_id,
            flags,
            headers,
            ..
        } => on_syn_stream(shared, stream_id, flags, headers),
        Frame::SynReply {
            stream_id,
            flags,
            headers,
        } => {
            if let Some(core) = stream(shared, stream_id) {
                let mut st = lock(&core.st);
                if let Some(tx) = st.reply_tx.take() {
                    let _ = tx.send(Ok(headers));
                }
                if flags & FLAG_FIN != 0 {
                    remote_fin(&mut st);
                }
                drop(st);
                shared.maybe_remove(&core);
            }
        }
        Frame::Headers {
            stream_id, flags, ..
        } => {
            if flags & FLAG_FIN != 0
                && let Some(core) = stream(shared, stream_id)
            {
                remote_fin(&mut lock(&core.st));
                shared.maybe_remove(&core);
            }
        }
        Frame::RstStream { stream_id, status } => {
            let core = lock(&shared.state).streams.remove(&stream_id);
            if let Some(core) = core {
                reset(&core, status);
                shared.send_ready.notify_waiters();
            }
        }
        Frame::Settings { entries, .. } => on_settings(shared, &entries),
        Frame::Ping { id } => {
            // Pings the peer starts have its parity: odd from a client.
            let from_peer = (id % 2 == 1) != shared.is_client;
            if from_peer {
                shared.send_frame(Frame::Ping { id });
            } else if let Some(tx) = lock(&shared.state).pings.remove(&id) {
                let _ = tx.send(());
            }
        }
        Frame::GoAway {
            last_good_stream_id,
            ..
        } => {
            let refused: Vec<_> = {
                let mut cs = lock(&shared.state);
                cs.goaway_received = true;
                let ours = |id: u32| (id % 2 == 1) == shared.is_client;
                let ids: Vec<u32> = cs
                    .streams
                    .keys()
                    .copied()
                    .filter(|&id| ours(id) && id > last_good_stream_id)
                    .collect();
                ids.iter().filter_map(|id| cs.streams.remove(id)).collect()
            };
            for core in refused {
                reset(&core, RstStatus::REFUSED_STREAM);
            }
            shared.send_ready.notify_waiters();
        }
        Frame::WindowUpdate { stream_id, delta } => {
            let mut cs = lock(&shared.state);
            shared.enable_flow_control(&mut cs);
            if stream_id == 0 {
                cs.send_window += i64::from(delta);
            } else if let Some(core) = cs.streams.get(&stream_id) {
                lock(&core.st).send_window += i64::from(delta);
            }
            drop(cs);
            shared.send_ready.notify_waiters();
        }
        Frame::Unknown { kind, .. } => tracing::debug!(kind, "ignoring unknown SPDY control frame"),
    }
    true
}

fn stream(shared: &Shared, id: u32) -> Option<Arc<StreamCore>> {
    lock(&shared.state).streams.get(&id).cloned()
}

fn remote_fin(st: &mut StreamState) {
    st.remote_fin = true;
    st.wake_reader();
}

fn reset(core: &StreamCore, status: u32) {
    let mut st = lock(&core.st);
    st.reset = Some(status);
    if let Some(tx) = st.reply_tx.take() {
        let _ = tx.send(Err(Error::StreamReset {
            stream_id: core.id,
            status,
        }));
    }
    st.wake_reader();
    drop(st);
    core.drained.notify_waiters();
}

fn on_syn_stream(shared: &Shared, id: u32, flags: u8, headers: Headers) {
    let mut cs = lock(&shared.state);
    let peer_parity = (id % 2 == 1) != shared.is_client;
    let refuse = |status| {
        shared.send_frame(Frame::RstStream {
            stream_id: id,
            status,
        })
    };
    if !peer_parity || id == 0 || id <= cs.last_peer_id {
        // SPDY/3.1 2.3.2: a non-increasing id is a session error; we only
        // refuse the stream, as spdystream does.
        refuse(RstStatus::PROTOCOL_ERROR);
        return;
    }
    cs.last_peer_id = id;
    if cs.goaway_sent {
        refuse(RstStatus::REFUSED_STREAM);
        return;
    }
    let st = StreamState {
        send_window: cs.peer_initial_window,
        remote_fin: flags & FLAG_FIN != 0,
        needs_reply: true,
        ..StreamState::default()
    };
    let core = StreamCore::new(id, headers, st);
    let accepted = cs
        .accept_tx
        .as_ref()
        .is_some_and(|tx| tx.send(core.clone()).is_ok());
    if accepted {
        cs.streams.insert(id, core);
    } else {
        refuse(RstStatus::REFUSED_STREAM);
    }
}

fn on_settings(shared: &Shared, entries: &[Setting]) {
    let mut cs = lock(&shared.state);
    shared.enable_flow_control(&mut cs);
    for e in entries
        .iter()
        .filter(|e| e.id == SETTINGS_INITIAL_WINDOW_SIZE)
    {
        let new = i64::from(e.value.min(0x7fff_ffff));
        let delta = new - cs.peer_initial_window;
        cs.peer_initial_window = new;
        for core in cs.streams.values() {
            lock(&core.st).send_window += delta;
        }
    }
    drop(cs);
    shared.send_ready.notify_waiters();
}

async fn on_data(shared: &Shared, id: u32, flags: u8, data: Bytes) -> bool {
    let core = {
        let mut cs = lock(&shared.state);
        // The connection window is acknowledged on receipt, so one slow
        // stream cannot starve the others; stream windows on consumption.
        cs.recv_unacked = cs.recv_unacked.saturating_add(data.len() as u32);
        if shared.peer_fc.load(Ordering::Acquire) && cs.recv_unacked >= cs.local_conn_window / 2 {
            let delta = std::mem::take(&mut cs.recv_unacked);
            shared.send_frame(Frame::WindowUpdate {
                stream_id: 0,
                delta,
            });
        }
        cs.streams.get(&id).cloned()
    };
    let Some(core) = core else {
        tracing::trace!(stream_id = id, "DATA for unknown or finished SPDY stream");
        return true;
    };
    let limit = shared
        .config
        .max_buffered
        .max(shared.config.stream_window as usize);
    loop {
        let drained = core.drained.notified();
        tokio::pin!(drained);
        drained.as_mut().enable();
        {
            let st = lock(&core.st);
            if st.buffered < limit || st.detached || st.reset.is_some() || st.conn_closed {
                break;
            }
        }
        tokio::select! {
            _ = &mut drained => {}
            _ = shared.reader_stop.notified() => return false,
        }
    }
    let mut st = lock(&core.st);
    if st.remote_fin || st.reset.is_some() {
        return true;
    }
    if !data.is_empty() && !st.detached {
        st.buffered += data.len();
        st.queue.push_back(data);
    }
    if flags & FLAG_FIN != 0 {
        st.remote_fin = true;
    }
    st.wake_reader();
    let fin = st.remote_fin;
    drop(st);
    if fin {
        shared.maybe_remove(&core);
    }
    true
}
