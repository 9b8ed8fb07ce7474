//! The writer task: the only owner of the write half.

use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::shared::{Out, Shared};
use crate::spdy::frame::Encoder;

/// Frames are batched into one write up to about this many bytes.
const BATCH: usize = 256 * 1024;

pub(crate) async fn run<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::UnboundedReceiver<Out>,
    shared: Arc<Shared>,
) {
    let mut enc = Encoder::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut permits = Vec::new();
    'outer: while let Some(mut out) = rx.recv().await {
        let mut stop = false;
        loop {
            match out {
                Out::Shutdown => {
                    stop = true;
                    break;
                }
                Out::Frame(frame, permit) => {
                    if let Err(error) = enc.encode(&frame, &mut buf) {
                        // The header context is now out of step: give up.
                        tracing::warn!(%error, "encoding SPDY frame");
                        break 'outer;
                    }
                    permits.extend(permit);
                }
            }
            if buf.len() >= BATCH {
                break;
            }
            match rx.try_recv() {
                Ok(next) => out = next,
                Err(_) => break,
            }
        }
        if !buf.is_empty() {
            let res = async {
                w.write_all(&buf).await?;
                w.flush().await
            }
            .await;
            if let Err(error) = res {
                tracing::debug!(%error, "writing SPDY frames");
                break;
            }
            buf.clear();
            permits.clear();
        }
        if stop {
            break;
        }
    }
    let _ = w.shutdown().await;
    shared.close_all();
}
