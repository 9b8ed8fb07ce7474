//! The container event hub behind `GetContainerEvents` (kubelet's evented PLEG).
//!
//! The runtime sends every committed lifecycle move of a container or pod, in order
//! ([`crust_runtime::events`]); [`forward`] turns each into a CRI
//! `ContainerEventResponse` right away, with the pod's `PodSandboxStatus` and the
//! `ContainerStatus` of each of its containers as those RPCs would answer at that
//! moment (the moved object itself exactly as committed), and [`EventHub::publish`]es
//! it. Pods' own moves are sent as container events whose `container_id` is the pod
//! id, as containerd does (CRI has no pod event type; kubelet drops its cache entry of
//! a pod on a DELETED event carrying the pod's id).
//!
//! Fan-out is a bounded `tokio::sync::broadcast` of [`SUBSCRIBER_BUFFER`] events:
//! publishing never waits for a subscriber, so a slow one blocks neither RPCs nor
//! other subscribers. A subscriber that falls further behind than the buffer is
//! *dropped*: its stream ends with ABORTED saying how many events it missed. Skipping
//! them instead would leave kubelet's pod cache silently wrong (a missed STOPPED is a
//! container kubelet believes runs); an ended stream makes kubelet relist and
//! subscribe again, which is correct. (containerd buffers per subscriber without a
//! bound instead; a bound here keeps a stuck client from growing crustd.)
//!
//! Events published while nobody is subscribed are held, at most [`HOLD_COUNT`] of
//! them for at most [`HOLD_FOR`], and replayed to the next subscriber, as containerd's
//! CRI plugin holds them for 5 minutes: so exits recovery learns at start (they
//! happened while crustd was down) reach kubelet as STOPPED once it reconnects, not
//! only through its next relist.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crust_proto::runtime::v1::{self as cri, ContainerEventResponse, ContainerEventType};
use crust_runtime::{
    container::ContainerFilter,
    events::{LifecycleEvent, LifecycleKind, Subject},
};
use tokio::sync::{broadcast, mpsc};

use crate::{convert_container, convert_sandbox, daemon::Daemon, error::ApiError};

/// Events a subscriber may lag behind before it is dropped. kubelet reads its stream
/// into a channel of 1000 (its PLEG channel capacity): as deep as that.
pub const SUBSCRIBER_BUFFER: usize = 1024;
/// At most this many events are held for a subscriber yet to come...
pub const HOLD_COUNT: usize = 1024;
/// ...for at most this long (containerd's CRI plugin: 5 minutes).
pub const HOLD_FOR: Duration = Duration::from_secs(300);

pub type Event = Arc<ContainerEventResponse>;

/// Subscribers and the events held for the next one.
pub struct EventHub {
    inner: Mutex<Inner>,
}

struct Inner {
    /// `None` once closed (shutdown): streams end, publishing is a no-op.
    tx: Option<broadcast::Sender<Event>>,
    held: VecDeque<(Instant, Event)>,
    /// Held events dropped (too many, too old) since start, for the logs.
    discarded: u64,
}

/// What a new subscriber gets: held events first, then the live ones.
pub struct Subscription {
    pub replay: Vec<Event>,
    pub live: broadcast::Receiver<Event>,
}

impl Default for EventHub {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        EventHub {
            inner: Mutex::new(Inner {
                tx: Some(tx),
                held: VecDeque::new(),
                discarded: 0,
            }),
        }
    }
}

impl EventHub {
    /// Sends `event` to every subscriber, or holds it when there is none. Never
    /// blocks on a subscriber.
    pub fn publish(&self, event: Event) {
        let mut inner = self.inner.lock().expect("event hub poisoned");
        let Some(tx) = &inner.tx else {
            return;
        };
        // `send` fails only when there is no receiver: hold it for the next one. Under
        // the same lock as `subscribe`, so no event is both replayed and received, and
        // none falls between.
        if let Err(broadcast::error::SendError(event)) = tx.send(event) {
            let now = Instant::now();
            inner.held.push_back((now, event));
            inner.expire(now);
        }
    }

    /// A new subscriber: the held events (then no longer held) and a receiver of
    /// every event published after.
    pub fn subscribe(&self) -> Result<Subscription, ApiError> {
        let mut inner = self.inner.lock().expect("event hub poisoned");
        let Some(tx) = &inner.tx else {
            return Err(ApiError::ShuttingDown);
        };
        let live = tx.subscribe();
        inner.expire(Instant::now());
        let replay = inner.held.drain(..).map(|(_, e)| e).collect();
        Ok(Subscription { replay, live })
    }

    /// Ends every stream (crustd is shutting down: graceful shutdown waits for
    /// in-flight RPCs, and these would never end on their own).
    pub fn close(&self) {
        self.inner.lock().expect("event hub poisoned").tx = None;
    }
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        let before = self.held.len();
        while self.held.len() > HOLD_COUNT
            || self
                .held
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > HOLD_FOR)
        {
            self.held.pop_front();
        }
        let dropped = (before - self.held.len()) as u64;
        if dropped > 0 {
            self.discarded += dropped;
            tracing::warn!(
                dropped,
                total = self.discarded,
                "container events held for a subscriber were discarded (none came)"
            );
        }
    }
}

fn event_type(kind: LifecycleKind) -> ContainerEventType {
    match kind {
        LifecycleKind::Created => ContainerEventType::ContainerCreatedEvent,
        LifecycleKind::Started => ContainerEventType::ContainerStartedEvent,
        LifecycleKind::Stopped => ContainerEventType::ContainerStoppedEvent,
        LifecycleKind::Deleted => ContainerEventType::ContainerDeletedEvent,
    }
}

/// The CRI event for one lifecycle move, with the statuses of that moment.
pub fn to_cri(daemon: &Daemon, event: &LifecycleEvent) -> ContainerEventResponse {
    let sandboxes = &daemon.sandboxes;
    let (pod_id, moved, pod_status) = match &event.subject {
        Subject::Container(c) => {
            // The pod as PodSandboxStatus answers now; none if it is gone (kubelet
            // then skips the event and relies on the pod's own DELETED).
            let pod = sandboxes
                .status(&c.pod_id)
                .ok()
                .map(|v| convert_sandbox::pod_sandbox_status(&v));
            (c.pod_id.as_str(), Some(c.as_ref()), pod)
        }
        Subject::Sandbox(s) => {
            let view = sandboxes.view(s.as_ref().clone());
            (
                s.id.as_str(),
                None,
                Some(convert_sandbox::pod_sandbox_status(&view)),
            )
        }
    };
    let mut statuses = pod_containers(daemon, pod_id);
    if let Some(c) = moved {
        // The moved container as committed, even if it has moved on since (its own
        // later event follows); gone from the list once deleted.
        statuses.retain(|s| s.id != c.id);
        if event.kind != LifecycleKind::Deleted {
            statuses.push(convert_container::container_status(c));
        }
        statuses.sort_by_key(|s| (s.created_at, s.id.clone()));
    }
    ContainerEventResponse {
        container_id: event.id().to_string(),
        container_event_type: event_type(event.kind).into(),
        created_at: event.at,
        pod_sandbox_status: pod_status,
        containers_statuses: statuses,
    }
}

/// `ContainerStatus` of each of the pod's containers, oldest first, as
/// ContainerStatus answers (recorded exits applied).
pub fn pod_containers(daemon: &Daemon, pod_id: &str) -> Vec<cri::ContainerStatus> {
    daemon
        .sandboxes
        .list_containers(&ContainerFilter {
            pod_id: pod_id.to_string(),
            ..Default::default()
        })
        .iter()
        .filter(|c| c.pod_id == pod_id)
        .map(convert_container::container_status)
        .collect()
}

/// Converts and publishes the runtime's lifecycle events until crustd exits. Spawn
/// it before recovery, with the receiver taken from the sandbox manager.
pub async fn forward(daemon: Arc<Daemon>, mut events: mpsc::UnboundedReceiver<LifecycleEvent>) {
    while let Some(event) = events.recv().await {
        let cri = to_cri(&daemon, &event);
        tracing::debug!(
            id = %crust_runtime::excerpt(event.id()),
            kind = ?event.kind,
            "container event"
        );
        daemon.events.publish(Arc::new(cri));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> Event {
        Arc::new(ContainerEventResponse {
            container_id: id.into(),
            ..Default::default()
        })
    }

    fn ids(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.container_id.as_str()).collect()
    }

    #[test]
    fn events_without_a_subscriber_are_held_for_the_next_one_only() {
        let hub = EventHub::default();
        hub.publish(event("a"));
        hub.publish(event("b"));
        let first = hub.subscribe().unwrap();
        assert_eq!(ids(&first.replay), ["a", "b"], "held, in order");
        let second = hub.subscribe().unwrap();
        assert!(second.replay.is_empty(), "replayed once only");
    }

    #[test]
    fn every_subscriber_gets_every_live_event_in_order() {
        let hub = EventHub::default();
        let mut one = hub.subscribe().unwrap().live;
        let mut two = hub.subscribe().unwrap().live;
        for id in ["a", "b", "c"] {
            hub.publish(event(id));
        }
        for rx in [&mut one, &mut two] {
            let got: Vec<String> = (0..3)
                .map(|_| rx.try_recv().unwrap().container_id.clone())
                .collect();
            assert_eq!(got, ["a", "b", "c"]);
        }
        assert!(
            hub.subscribe().unwrap().replay.is_empty(),
            "nothing held while subscribed"
        );
    }

    #[test]
    fn a_subscriber_that_falls_behind_learns_it_and_others_are_not_held_up() {
        let hub = EventHub::default();
        let mut slow = hub.subscribe().unwrap().live;
        let mut fast = hub.subscribe().unwrap().live;
        for i in 0..SUBSCRIBER_BUFFER + 5 {
            hub.publish(event(&i.to_string()));
            assert_eq!(fast.try_recv().unwrap().container_id, i.to_string());
        }
        match slow.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 5),
            other => panic!("expected lag, got {other:?}"),
        }
    }

    #[test]
    fn held_events_are_bounded_oldest_first() {
        let hub = EventHub::default();
        for i in 0..HOLD_COUNT + 3 {
            hub.publish(event(&i.to_string()));
        }
        let replay = hub.subscribe().unwrap().replay;
        assert_eq!(replay.len(), HOLD_COUNT);
        assert_eq!(replay[0].container_id, "3", "the oldest went first");
    }

    #[test]
    fn closing_ends_subscriptions_and_refuses_new_ones() {
        let hub = EventHub::default();
        let mut live = hub.subscribe().unwrap().live;
        hub.close();
        hub.publish(event("late"));
        assert!(matches!(
            live.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
        assert!(matches!(hub.subscribe(), Err(ApiError::ShuttingDown)));
    }
}
