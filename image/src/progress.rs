//! Pull progress: per-layer phases and byte counts that a caller can sample while a
//! pull runs ([`ImageStore::pull_with_progress`](crate::ImageStore::pull_with_progress)).
//!
//! A layer's download is shared by every pull that needs it (one fetch per chain ID),
//! so its counters live with the layer, not with a pull: a [`LayerTracker`] per chain
//! ID being fetched, which each interested pull's [`PullProgress`] points at. A pull of
//! an image another pull is already fetching therefore shows that pull's bytes.
//!
//! The fetcher pays one relaxed atomic add per chunk whether or not anyone listens (a
//! listener may join an in-flight download at any time); a phase change, a handful per
//! layer, also wakes the pulls that listen. Nothing is sent anywhere: listeners
//! sample with [`PullProgress::snapshot`] when they choose to.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU8, AtomicU64, Ordering},
};

use tokio::sync::Notify;

/// Where one layer of a pull is. The order is the order a fetched layer goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LayerPhase {
    /// Behind the download limit, or behind another pull fetching the same layer.
    Waiting = 0,
    /// Bytes are arriving (and being unpacked as they arrive).
    Downloading = 1,
    /// Every byte is in; the unpacker finishes and syncs the layer.
    Unpacking = 2,
    /// Checking the blob and uncompressed digests.
    Verifying = 3,
    /// Fetched by this pull or by the concurrent one it waited for.
    Done = 4,
    /// In the store before this pull asked for it.
    AlreadyPresent = 5,
}

impl LayerPhase {
    fn from_u8(v: u8) -> LayerPhase {
        match v {
            1 => LayerPhase::Downloading,
            2 => LayerPhase::Unpacking,
            3 => LayerPhase::Verifying,
            4 => LayerPhase::Done,
            5 => LayerPhase::AlreadyPresent,
            _ => LayerPhase::Waiting,
        }
    }

    /// DONE or ALREADY_PRESENT: the layer is on disk and will not change.
    pub fn is_final(self) -> bool {
        matches!(self, LayerPhase::Done | LayerPhase::AlreadyPresent)
    }
}

/// One layer as a snapshot shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerProgress {
    /// The blob digest the manifest names.
    pub digest: String,
    /// The manifest's media type for the layer.
    pub media_type: String,
    /// The blob size the manifest declares.
    pub size: u64,
    /// Blob bytes received; `size` once the layer is final.
    pub done: u64,
    pub phase: LayerPhase,
}

/// The shared state of one chain ID's fetch; see the module comment.
#[derive(Debug, Default)]
pub(crate) struct LayerTracker {
    done: AtomicU64,
    phase: AtomicU8,
    /// The pulls listening for phase changes.
    watchers: Mutex<Vec<Arc<Notify>>>,
}

impl LayerTracker {
    /// Counts `n` more blob bytes. Called per chunk: no lock, no wake-up.
    pub(crate) fn add_bytes(&self, n: usize) {
        self.done.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Moves to `phase` and wakes the listening pulls.
    pub(crate) fn set_phase(&self, phase: LayerPhase) {
        self.phase.store(phase as u8, Ordering::Release);
        self.wake();
    }

    /// Back to WAITING with nothing received: a fetch failed or was cancelled, and the
    /// next holder of the layer starts over.
    pub(crate) fn reset(&self) {
        self.done.store(0, Ordering::Relaxed);
        self.set_phase(LayerPhase::Waiting);
    }

    pub(crate) fn phase(&self) -> LayerPhase {
        LayerPhase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn watch(&self, notify: Arc<Notify>) {
        let mut watchers = self.watchers.lock().expect("tracker watchers poisoned");
        if !watchers.iter().any(|w| Arc::ptr_eq(w, &notify)) {
            watchers.push(notify);
        }
    }

    fn wake(&self) {
        // notify_one keeps a permit when the listener is not waiting right now, so a
        // change between two of its samples is never lost.
        for w in self
            .watchers
            .lock()
            .expect("tracker watchers poisoned")
            .iter()
        {
            w.notify_one();
        }
    }
}

/// One layer of the image as a pull knows it.
#[derive(Debug)]
struct Track {
    digest: String,
    media_type: String,
    size: u64,
    /// Set once the pull has found the layer's fetch (or started it).
    tracker: Option<Arc<LayerTracker>>,
}

#[derive(Debug, Default)]
struct Inner {
    notify: Arc<Notify>,
    layers: Mutex<Vec<Track>>,
}

/// A handle on one pull's progress: pass it to
/// [`ImageStore::pull_with_progress`](crate::ImageStore::pull_with_progress) and
/// sample it while the pull runs. Cheap to clone (all clones see the same pull).
///
/// ```
/// use crust_image::progress::PullProgress;
/// let progress = PullProgress::new();
/// assert!(progress.snapshot().is_empty(), "no layers before the manifest is in");
/// ```
#[derive(Debug, Clone, Default)]
pub struct PullProgress {
    inner: Arc<Inner>,
}

impl PullProgress {
    pub fn new() -> PullProgress {
        PullProgress::default()
    }

    /// Every layer's state now, in manifest order; empty until the manifest is in.
    pub fn snapshot(&self) -> Vec<LayerProgress> {
        let layers = self.inner.layers.lock().expect("progress lock poisoned");
        layers
            .iter()
            .map(|t| {
                let (phase, done) = match &t.tracker {
                    None => (LayerPhase::Waiting, 0),
                    Some(tr) => {
                        let phase = tr.phase();
                        let done = if phase.is_final() {
                            t.size
                        } else {
                            tr.done.load(Ordering::Relaxed).min(t.size)
                        };
                        (phase, done)
                    }
                };
                LayerProgress {
                    digest: t.digest.clone(),
                    media_type: t.media_type.clone(),
                    size: t.size,
                    done,
                    phase,
                }
            })
            .collect()
    }

    /// Resolves after the layer list was set or a layer changed phase since the last
    /// call returned (at once if that happened in between). Byte counts do not wake
    /// it: sample those on a timer.
    pub async fn changed(&self) {
        self.inner.notify.notified().await;
    }

    /// The manifest's layers (digest, media type, size); replaces an earlier list (a
    /// mirror that failed part-way).
    pub(crate) fn set_layers(&self, layers: impl IntoIterator<Item = (String, String, u64)>) {
        let mut list = self.inner.layers.lock().expect("progress lock poisoned");
        *list = layers
            .into_iter()
            .map(|(digest, media_type, size)| Track {
                digest,
                media_type,
                size,
                tracker: None,
            })
            .collect();
        drop(list);
        self.inner.notify.notify_one();
    }

    /// Layer `index` is fetched (or waited for) through `tracker`.
    pub(crate) fn attach(&self, index: usize, tracker: &Arc<LayerTracker>) {
        tracker.watch(self.inner.notify.clone());
        let mut list = self.inner.layers.lock().expect("progress lock poisoned");
        if let Some(t) = list.get_mut(index) {
            t.tracker = Some(tracker.clone());
        }
        drop(list);
        self.inner.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_layer(size: u64) -> (PullProgress, Arc<LayerTracker>) {
        let p = PullProgress::new();
        p.set_layers([("sha256:aa".to_string(), "gzip".to_string(), size)]);
        let t = Arc::new(LayerTracker::default());
        p.attach(0, &t);
        (p, t)
    }

    #[test]
    fn snapshot_follows_the_tracker() {
        let (p, t) = one_layer(100);
        assert_eq!(p.snapshot()[0].phase, LayerPhase::Waiting, "fresh tracker");
        t.set_phase(LayerPhase::Downloading);
        t.add_bytes(40);
        let s = &p.snapshot()[0];
        assert_eq!((s.phase, s.done), (LayerPhase::Downloading, 40), "counting");
        t.add_bytes(500);
        assert_eq!(p.snapshot()[0].done, 100, "never above the declared size");
        t.reset();
        let s = &p.snapshot()[0];
        assert_eq!((s.phase, s.done), (LayerPhase::Waiting, 0), "after a reset");
        t.set_phase(LayerPhase::AlreadyPresent);
        assert_eq!(
            p.snapshot()[0].done,
            100,
            "a final layer counts as complete"
        );
    }

    #[test]
    fn an_unattached_layer_is_waiting_with_nothing_done() {
        let p = PullProgress::new();
        p.set_layers([("sha256:bb".to_string(), String::new(), 7)]);
        let s = &p.snapshot()[0];
        assert_eq!((s.phase, s.done, s.size), (LayerPhase::Waiting, 0, 7));
    }

    #[tokio::test]
    async fn a_phase_change_between_samples_is_not_lost() {
        let (p, t) = one_layer(10);
        // The permits from set_layers/attach: consumed by the first wait.
        p.changed().await;
        t.set_phase(LayerPhase::Done);
        // Nobody was waiting when the phase changed; the wait still returns.
        tokio::time::timeout(std::time::Duration::from_secs(5), p.changed())
            .await
            .expect("phase change wakes a later wait");
    }

    #[test]
    fn every_phase_round_trips_through_its_byte() {
        for phase in [
            LayerPhase::Waiting,
            LayerPhase::Downloading,
            LayerPhase::Unpacking,
            LayerPhase::Verifying,
            LayerPhase::Done,
            LayerPhase::AlreadyPresent,
        ] {
            assert_eq!(LayerPhase::from_u8(phase as u8), phase, "{phase:?}");
        }
    }
}
