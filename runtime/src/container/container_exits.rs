//! Learning exits as the monitors record them, without polling: an inotify watch on
//! each live container's bundle directory, where its monitor renames `exit.json`
//! into place (`crust_state::write_atomic`) once the process is reaped. The event
//! makes crustd read the record at once ([`SandboxManager::refresh_container`]),
//! which commits Exited, and so the STOPPED lifecycle event goes out while the
//! container's last log line is still fresh. Before this, an exit was only noticed
//! when someone asked (ContainerStatus, ListContainers), which evented PLEG cannot
//! wait for.
//!
//! A watch is taken when a container becomes Created (the process exists from then
//! on; it cannot exit before it is watched) and on recovery for every container
//! recorded Created or Running; right after taking it, the exit file is looked for
//! once, which covers an exit that happened before the watch (or while crustd was
//! down). Removing the bundle directory drops the watch in the kernel.
#![allow(unsafe_code)]

use std::{collections::HashMap, io, mem::MaybeUninit, os::fd::OwnedFd, sync::Mutex};

use rustix::fs::inotify;
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, watch},
    time::{Duration, Instant},
};

use super::{Container, ContainerState};
use crate::sandbox::SandboxManager;

/// The exit record's file name in the bundle (see [`Container::exit_file`]).
const EXIT_FILE: &str = "exit.json";

/// The inotify instance and which container each watch is for.
pub(crate) struct ExitWatcher {
    /// `None` where inotify could not be had (logged once at start); exits are then
    /// learnt only when asked for, as before.
    fd: Option<OwnedFd>,
    /// Watch descriptor -> container id.
    watches: Mutex<HashMap<i32, String>>,
    /// Containers whose exit file should be looked at now (a watch just taken).
    check_tx: mpsc::UnboundedSender<String>,
    check_rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    /// Bumped whenever an exit record may have arrived, for [`SandboxManager::wait_exit_file`].
    arrivals: watch::Sender<u64>,
}

impl Default for ExitWatcher {
    fn default() -> Self {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .inspect_err(|e| {
                tracing::error!(error = %e, "inotify unavailable: container exits are noticed only when their status is asked for")
            })
            .ok();
        let (check_tx, check_rx) = mpsc::unbounded_channel();
        ExitWatcher {
            fd,
            watches: Mutex::new(HashMap::new()),
            check_tx,
            check_rx: Mutex::new(Some(check_rx)),
            arrivals: watch::Sender::new(0),
        }
    }
}

impl ExitWatcher {
    /// Watches `c`'s bundle for its exit record if it may still exit, and has the
    /// watch loop look for the record once. Idempotent (the kernel returns the same
    /// watch for the same directory). Cheap and non-blocking: called while the
    /// container map's lock is held.
    pub(crate) fn track(&self, c: &Container) {
        if !matches!(c.state, ContainerState::Created | ContainerState::Running) {
            return;
        }
        let Some(fd) = &self.fd else {
            return;
        };
        match inotify::add_watch(
            fd,
            &c.bundle,
            inotify::WatchFlags::MOVED_TO
                | inotify::WatchFlags::CLOSE_WRITE
                | inotify::WatchFlags::ONLYDIR,
        ) {
            Ok(wd) => {
                self.watches
                    .lock()
                    .expect("watches poisoned")
                    .insert(wd, c.id.clone());
                let _ = self.check_tx.send(c.id.clone());
            }
            Err(e) => {
                tracing::warn!(container_id = %c.id, bundle = %c.bundle.display(), error = %e, "cannot watch for the container's exit; it is noticed when its status is asked for")
            }
        }
    }

    /// Container ids whose watch saw the exit record arrive, from a batch of raw
    /// events; forgets watches the kernel dropped. `overflow` is set when the kernel
    /// lost events (every tracked container must then be looked at).
    fn ids_from(
        &self,
        events: &[(i32, inotify::ReadFlags, Option<String>)],
    ) -> (Vec<String>, bool) {
        let mut watches = self.watches.lock().expect("watches poisoned");
        let mut ids = Vec::new();
        let mut overflow = false;
        for (wd, flags, name) in events {
            if flags.contains(inotify::ReadFlags::QUEUE_OVERFLOW) {
                overflow = true;
            } else if flags.contains(inotify::ReadFlags::IGNORED) {
                watches.remove(wd);
            } else if name.as_deref() == Some(EXIT_FILE)
                && let Some(id) = watches.get(wd)
            {
                ids.push(id.clone());
            }
        }
        if overflow {
            ids.extend(watches.values().cloned());
        }
        (ids, overflow)
    }
}

/// Reads what is queued on the (non-blocking) inotify fd; `WouldBlock` when nothing
/// was (so that `AsyncFd::try_io` clears the readiness).
fn read_events(fd: &OwnedFd) -> io::Result<Vec<(i32, inotify::ReadFlags, Option<String>)>> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let mut reader = inotify::Reader::new(fd, &mut buf);
    let mut out = Vec::new();
    loop {
        match reader.next() {
            Ok(e) => out.push((
                e.wd(),
                e.events(),
                e.file_name().map(|n| n.to_string_lossy().into_owned()),
            )),
            Err(rustix::io::Errno::AGAIN) if !out.is_empty() => return Ok(out),
            Err(e) => return Err(e.into()),
        }
    }
}

impl SandboxManager {
    /// Turns exit records into state as they appear: runs until crustd exits. Spawn
    /// it once, before [`SandboxManager::recover`] (which takes watches and queues
    /// looks for exits that happened while crustd was down). Returns at once where
    /// inotify is unavailable, or when called a second time.
    pub async fn watch_exits(&self) {
        let Some(mut checks) = self.exits.check_rx.lock().expect("poisoned").take() else {
            return;
        };
        let Some(fd) = self.exits.fd.as_ref().and_then(|fd| fd.try_clone().ok()) else {
            return;
        };
        // SAFETY: the AsyncFd owns the OwnedFd, so it stays open (and is not reused)
        // for as long as the registration lives, which is what `register` requires.
        let registered =
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
        let fd = match registered.map_err(|e| e.into_parts().1) {
            Ok(fd) => fd,
            Err(error) => {
                tracing::error!(%error, "cannot poll inotify; container exits are noticed only when asked for");
                return;
            }
        };
        loop {
            tokio::select! {
                Some(id) = checks.recv() => self.refresh_container_id(&id),
                ready = fd.readable() => {
                    let mut guard = match ready {
                        Ok(guard) => guard,
                        Err(error) => {
                            tracing::error!(%error, "inotify failed; container exits are noticed only when asked for");
                            return;
                        }
                    };
                    match guard.try_io(|fd| read_events(fd.get_ref())) {
                        Ok(Ok(events)) => {
                            let (ids, overflow) = self.exits.ids_from(&events);
                            if overflow {
                                tracing::warn!("inotify queue overflowed; looking at every live container");
                            }
                            for id in ids {
                                self.refresh_container_id(&id);
                            }
                            self.exits.arrivals.send_modify(|n| *n = n.wrapping_add(1));
                        }
                        Ok(Err(error)) => tracing::warn!(%error, "read inotify events"),
                        // Spurious readiness: cleared, wait again.
                        Err(_would_block) => {}
                    }
                }
            }
        }
    }

    /// Waits until `c`'s exit record exists or `until` passes; whether it exists. Woken
    /// by the inotify watch rather than polling; the 100 ms re-check covers an event
    /// this waiter could miss (a container not watched); without inotify or before the
    /// watch loop runs, every 10 ms as before.
    pub(crate) async fn wait_exit_file(&self, c: &Container, until: Instant) -> bool {
        // Subscribed before the first look, so an arrival after it wakes the wait.
        let mut arrivals = self.exits.arrivals.subscribe();
        // The watch loop runs once it has taken the receiver (and has inotify).
        let watched =
            self.exits.fd.is_some() && self.exits.check_rx.lock().expect("poisoned").is_none();
        let step = if watched {
            Duration::from_millis(100)
        } else {
            Duration::from_millis(10)
        };
        loop {
            if c.exit_file().exists() {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            let _ = tokio::time::timeout(step.min(until - now), arrivals.changed()).await;
        }
    }

    /// Applies a recorded exit of container `id`, if it still exists and has one.
    fn refresh_container_id(&self, id: &str) {
        let Ok(mut c) = self.container_snapshot(id) else {
            return;
        };
        // The exit of a container still recorded Created belongs to a StartContainer
        // in flight (a process that exits at once): it records Running and then
        // applies the exit itself. Applying it here first would make that start fail
        // its compare-and-swap although the container ran.
        if c.state == ContainerState::Created {
            return;
        }
        if let Err(error) = self.refresh_container(&mut c) {
            tracing::warn!(container_id = %id, %error, "could not record the container's exit");
        }
    }

    /// Watches every container recorded Created or Running (recovery).
    pub(crate) fn track_all_exits(&self) {
        for c in self
            .containers
            .read()
            .expect("containers poisoned")
            .values()
        {
            self.exits.track(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exit_records_of_watched_bundles_count() {
        let w = ExitWatcher::default();
        w.watches
            .lock()
            .unwrap()
            .extend([(1, "a".to_string()), (2, "b".to_string())]);
        let f = inotify::ReadFlags::MOVED_TO;
        let (ids, overflow) = w.ids_from(&[
            (1, f, Some(".tmp-exit.json-1-0".into())),
            (1, f, Some(EXIT_FILE.into())),
            (3, f, Some(EXIT_FILE.into())),
            (2, inotify::ReadFlags::IGNORED, None),
        ]);
        assert_eq!(
            ids,
            ["a"],
            "a temp file, an unknown watch and a dropped one are not exits"
        );
        assert!(!overflow);
        assert_eq!(
            w.watches.lock().unwrap().len(),
            1,
            "the dropped watch is forgotten"
        );
        let (ids, overflow) = w.ids_from(&[(-1, inotify::ReadFlags::QUEUE_OVERFLOW, None)]);
        assert!(overflow);
        assert_eq!(
            ids,
            ["a"],
            "after lost events every tracked container is looked at"
        );
    }

    #[test]
    fn a_rename_into_a_watched_bundle_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let w = ExitWatcher::default();
        let fd = w.fd.as_ref().expect("inotify on this host");
        let wd = inotify::add_watch(fd, dir.path(), inotify::WatchFlags::MOVED_TO).unwrap();
        crust_state::write_atomic(dir.path(), EXIT_FILE, b"{}").unwrap();
        let events = read_events(fd).unwrap();
        assert!(
            events
                .iter()
                .any(|(w, _, n)| *w == wd && n.as_deref() == Some(EXIT_FILE)),
            "{events:?}"
        );
    }
}
