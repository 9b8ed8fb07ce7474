//! `crust.v1.Images/PullImageProgress` (not CRI): `PullImage` with a stream of
//! per-layer progress snapshots, for `crustctl pull`'s progress bars.
//!
//! The pull itself is [`super::pull_image::pull`], the code `PullImage` runs, inside
//! [`Daemon::handle`] as every RPC is: the same checks, auth, mirrors, layer sharing
//! with concurrent pulls, error-to-status mapping and metrics. It runs in its own task
//! so a slow reader never stalls the downloads; the stream owns the task and aborts it
//! when dropped (the client went away or cancelled), which drops the pull future
//! exactly as tonic drops a cancelled `PullImage`'s.

use std::{
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use crust_image::{LayerPhase, LayerProgress, PullProgress};
use crust_proto::{
    crust::v1::{self as pb, PullImageProgressResponse},
    runtime::v1::PullImageRequest,
};
use futures::Stream;
use tokio::{task::JoinHandle, time::MissedTickBehavior};
use tonic::Status;

use crate::{daemon::Daemon, rpc_span};

/// How often byte counts are sent at most; phase changes go out at once.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// The response stream.
pub type ProgressStream =
    Pin<Box<dyn Stream<Item = Result<PullImageProgressResponse, Status>> + Send>>;

/// Starts the pull and returns its progress stream. `deadline` is the client's
/// (`grpc-timeout`, and the earlier instant to stop at): past it the stream ends with
/// DEADLINE_EXCEEDED and the pull is dropped, as `PullImage` would be.
pub fn pull_image_progress(
    daemon: Arc<Daemon>,
    req: PullImageRequest,
    deadline: Option<(Duration, Duration)>,
) -> ProgressStream {
    let progress = PullProgress::new();
    let task = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let d = &*daemon;
            let work = d.handle(
                "PullImageProgress",
                rpc_span!("PullImageProgress"),
                super::pull_image::pull(d, req, Some(&progress)),
            );
            match deadline {
                None => work.await.map(tonic::Response::into_inner),
                Some((timeout, stop_after)) => match tokio::time::timeout(stop_after, work).await {
                    Ok(result) => result.map(tonic::Response::into_inner),
                    Err(_) => Err(crate::deadline::expired(timeout)),
                },
            }
        })
    };
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = Running {
        task: AbortOnDrop(task),
        progress,
        ticker,
        throttle: Throttle::new(INTERVAL),
    };
    Box::pin(futures::stream::unfold(Some(state), next))
}

struct Running {
    task: AbortOnDrop,
    progress: PullProgress,
    ticker: tokio::time::Interval,
    throttle: Throttle,
}

/// The pull's task, aborted (the pull future dropped) when the stream is.
struct AbortOnDrop(JoinHandle<Result<String, Status>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The next message: a snapshot when the throttle lets one through, the final one with
/// the image id, or the pull's error, after which the stream ends.
async fn next(
    state: Option<Running>,
) -> Option<(Result<PullImageProgressResponse, Status>, Option<Running>)> {
    let mut st = state?;
    loop {
        tokio::select! {
            joined = &mut st.task.0 => {
                let item = match joined {
                    Ok(Ok(image_ref)) => Ok(PullImageProgressResponse {
                        layers: st.progress.snapshot().iter().map(to_proto).collect(),
                        image_ref,
                    }),
                    Ok(Err(status)) => Err(status),
                    Err(e) => Err(Status::internal(format!("pull task failed: {e}"))),
                };
                return Some((item, None));
            }
            () = st.progress.changed() => {}
            _ = st.ticker.tick() => {}
        }
        let snapshot = st.progress.snapshot();
        if st.throttle.admit(Instant::now(), &snapshot) {
            let layers = snapshot.iter().map(to_proto).collect();
            return Some((
                Ok(PullImageProgressResponse {
                    layers,
                    image_ref: String::new(),
                }),
                Some(st),
            ));
        }
    }
}

fn to_proto(l: &LayerProgress) -> pb::LayerProgress {
    let phase = match l.phase {
        LayerPhase::Waiting => pb::LayerPhase::Waiting,
        LayerPhase::Downloading => pb::LayerPhase::Downloading,
        LayerPhase::Unpacking => pb::LayerPhase::Unpacking,
        LayerPhase::Verifying => pb::LayerPhase::Verifying,
        LayerPhase::Done => pb::LayerPhase::Done,
        LayerPhase::AlreadyPresent => pb::LayerPhase::AlreadyPresent,
    };
    pb::LayerProgress {
        digest: l.digest.clone(),
        media_type: l.media_type.clone(),
        size: l.size,
        bytes_done: l.done,
        phase: phase.into(),
    }
}

/// Which snapshots are worth a message: the first with layers, any that changes the
/// layer list or a phase, and byte-only changes at most once per `every`.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    last: Option<(Instant, Vec<LayerProgress>)>,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Throttle {
        Throttle { every, last: None }
    }

    /// Whether to send `snapshot` now; remembers it as sent if so.
    pub(crate) fn admit(&mut self, now: Instant, snapshot: &[LayerProgress]) -> bool {
        let send = match &self.last {
            None => !snapshot.is_empty(),
            Some((_, last)) if last.as_slice() == snapshot => false,
            Some((at, last)) => {
                let shape_changed = last.len() != snapshot.len()
                    || last
                        .iter()
                        .zip(snapshot)
                        .any(|(a, b)| a.digest != b.digest || a.phase != b.phase);
                shape_changed || now.duration_since(*at) >= self.every
            }
        };
        if send {
            self.last = Some((now, snapshot.to_vec()));
        }
        send
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(digest: &str, done: u64, phase: LayerPhase) -> LayerProgress {
        LayerProgress {
            digest: digest.into(),
            media_type: String::new(),
            size: 100,
            done,
            phase,
        }
    }

    #[test]
    fn throttle_sends_phase_changes_at_once_and_bytes_at_most_every_interval() {
        use LayerPhase::*;
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut th = Throttle::new(Duration::from_millis(100));
        let cases: &[(u64, Vec<LayerProgress>, bool, &str)] = &[
            (0, vec![], false, "nothing known yet"),
            (1, vec![layer("a", 0, Waiting)], true, "the layer list"),
            (2, vec![layer("a", 0, Waiting)], false, "unchanged"),
            (3, vec![layer("a", 0, Downloading)], true, "phase change"),
            (
                10,
                vec![layer("a", 5, Downloading)],
                false,
                "bytes within 100 ms",
            ),
            (
                50,
                vec![layer("a", 9, Downloading)],
                false,
                "still within 100 ms",
            ),
            (
                103,
                vec![layer("a", 20, Downloading)],
                true,
                "bytes after 100 ms",
            ),
            (
                104,
                vec![layer("a", 100, Unpacking)],
                true,
                "phase change right after",
            ),
            (
                105,
                vec![layer("a", 100, Unpacking), layer("b", 0, Waiting)],
                true,
                "a new layer list",
            ),
            (
                106,
                vec![layer("a", 100, Unpacking), layer("b", 1, Waiting)],
                false,
                "bytes",
            ),
            (
                300,
                vec![layer("a", 100, Unpacking), layer("b", 1, Waiting)],
                true,
                "the bytes held back, once the interval passed",
            ),
            (
                900,
                vec![layer("a", 100, Unpacking), layer("b", 1, Waiting)],
                false,
                "identical snapshots are never resent",
            ),
        ];
        for (at, snapshot, want, why) in cases {
            assert_eq!(th.admit(ms(*at), snapshot), *want, "{at} ms: {why}");
        }
    }
}
