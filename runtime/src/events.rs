//! Lifecycle events: every visible state change of a container or a pod sandbox, as
//! it is committed, for crustd's `GetContainerEvents` (kubelet's evented PLEG).
//!
//! They are produced in exactly two places, the functions that commit a container's
//! or a pod's record ([`SandboxManager`]'s `commit*` and `forget*`), while the record
//! map's write lock is held: so one object's events go out in the order its states
//! changed, whichever task made the change (a StartContainer RPC, the exit watcher,
//! recovery). Sending never blocks and never fails the transition: the channel is
//! unbounded, and its one reader (crustd's event hub) only converts and fans out.
//!
//! ```text
//! container:  Creating --made--> Created [CREATED] --start--> Running [STARTED]
//!                                   |                            |
//!                                   +---------exit / stop--------+--> Exited [STOPPED]
//!             (visible, any state) --remove--> gone [DELETED]
//! pod:        Creating --ready--> Ready [CREATED, STARTED] --stop--> NotReady [STOPPED]
//!             (visible) --remove--> gone [DELETED]
//! ```
//! A rolled-back creation (never visible) produces nothing.
//!
//! [`SandboxManager`]: crate::sandbox::SandboxManager

use std::sync::OnceLock;

use tokio::sync::mpsc;

use crate::{container::Container, sandbox::Sandbox};

/// What happened (CRI `ContainerEventType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

/// The object that changed, as it was committed (for `Deleted`: its last record).
#[derive(Debug, Clone)]
pub enum Subject {
    Container(Box<Container>),
    Sandbox(Box<Sandbox>),
}

/// One committed state change.
#[derive(Debug, Clone)]
pub struct LifecycleEvent {
    pub kind: LifecycleKind,
    pub subject: Subject,
    /// When it was committed, unix nanoseconds.
    pub at: i64,
}

impl LifecycleEvent {
    /// The id of the object that changed (container or pod).
    pub fn id(&self) -> &str {
        match &self.subject {
            Subject::Container(c) => &c.id,
            Subject::Sandbox(s) => &s.id,
        }
    }
}

/// The producer side. Nothing is sent until a reader took the channel
/// ([`crate::sandbox::SandboxManager::lifecycle_events`]): a manager nobody listens to
/// (unit tests, tools) keeps nothing.
#[derive(Default)]
pub(crate) struct EventSink(OnceLock<mpsc::UnboundedSender<LifecycleEvent>>);

impl EventSink {
    /// The reader; `None` after the first call (there is one reader, crustd's hub).
    pub(crate) fn take_reader(&self) -> Option<mpsc::UnboundedReceiver<LifecycleEvent>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.0.set(tx).ok().map(|()| rx)
    }

    /// Sends without blocking; a reader that went away loses nothing anyone wants.
    pub(crate) fn send(&self, kind: LifecycleKind, subject: Subject) {
        if let Some(tx) = self.0.get() {
            let _ = tx.send(LifecycleEvent {
                kind,
                subject,
                at: now_nanos(),
            });
        }
    }

    pub(crate) fn container(&self, kind: LifecycleKind, c: &Container) {
        if self.0.get().is_some() {
            self.send(kind, Subject::Container(Box::new(c.clone())));
        }
    }

    pub(crate) fn sandbox(&self, kind: LifecycleKind, s: &Sandbox) {
        if self.0.get().is_some() {
            self.send(kind, Subject::Sandbox(Box::new(s.clone())));
        }
    }
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

/// The event a container's committed move `from -> to` makes, if any.
pub(crate) fn container_transition(
    from: Option<crate::container::ContainerState>,
    to: crate::container::ContainerState,
) -> Option<LifecycleKind> {
    use crate::container::ContainerState::*;
    match (from, to) {
        (Some(Creating), Created) => Some(LifecycleKind::Created),
        (Some(Created), Running) => Some(LifecycleKind::Started),
        (Some(Created | Running), Exited) => Some(LifecycleKind::Stopped),
        _ => None,
    }
}

/// The events a pod's committed move `from -> to` makes, in order.
pub(crate) fn sandbox_transition(
    from: Option<crate::sandbox::SandboxState>,
    to: crate::sandbox::SandboxState,
) -> &'static [LifecycleKind] {
    use crate::sandbox::SandboxState::*;
    match (from, to) {
        // containerd sends both for a pod that came up: created, then started.
        (Some(Creating), Ready) => &[LifecycleKind::Created, LifecycleKind::Started],
        (Some(Ready), NotReady) => &[LifecycleKind::Stopped],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{container::ContainerState as C, sandbox::SandboxState as S};

    #[test]
    fn container_moves_and_their_events() {
        for (from, to, want, why) in [
            (None, C::Creating, None, "intent is invisible"),
            (
                Some(C::Creating),
                C::Created,
                Some(LifecycleKind::Created),
                "made",
            ),
            (
                Some(C::Created),
                C::Running,
                Some(LifecycleKind::Started),
                "started",
            ),
            (
                Some(C::Running),
                C::Exited,
                Some(LifecycleKind::Stopped),
                "exited",
            ),
            (
                Some(C::Created),
                C::Exited,
                Some(LifecycleKind::Stopped),
                "start failed or killed before start",
            ),
        ] {
            assert_eq!(container_transition(from, to), want, "{why}");
        }
    }

    #[test]
    fn pod_moves_and_their_events() {
        for (from, to, want, why) in [
            (None, S::Creating, &[][..], "intent is invisible"),
            (Some(S::Creating), S::Creating, &[][..], "still being made"),
            (
                Some(S::Creating),
                S::Ready,
                &[LifecycleKind::Created, LifecycleKind::Started][..],
                "came up",
            ),
            (
                Some(S::Ready),
                S::NotReady,
                &[LifecycleKind::Stopped][..],
                "stopped",
            ),
            (Some(S::NotReady), S::NotReady, &[][..], "stopped again"),
            (Some(S::Ready), S::Ready, &[][..], "resources updated"),
        ] {
            assert_eq!(sandbox_transition(from, to), want, "{why}");
        }
    }

    fn pod() -> Sandbox {
        Sandbox {
            id: "p".into(),
            spec: Default::default(),
            state: S::Ready,
            created_at: 0,
            cgroup: String::new(),
            cgroup_created: false,
            init_cgroup: None,
            monitor: None,
            pod_dir: Default::default(),
            pins_dir: Default::default(),
            socket: Default::default(),
            network: None,
            resources: None,
        }
    }

    #[test]
    fn nothing_is_kept_without_a_reader_and_one_reader_only() {
        let sink = EventSink::default();
        sink.sandbox(LifecycleKind::Created, &pod());
        let mut rx = sink.take_reader().expect("first reader");
        assert!(sink.take_reader().is_none(), "a second reader is refused");
        assert!(
            rx.try_recv().is_err(),
            "the event before the reader is gone"
        );
        sink.sandbox(LifecycleKind::Deleted, &pod());
        let event = rx.try_recv().expect("sent");
        assert_eq!((event.kind, event.id()), (LifecycleKind::Deleted, "p"));
    }
}
