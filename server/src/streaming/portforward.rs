//! Connections into a pod's network namespace for port forwarding.
//!
//! `setns` changes only the calling thread, so the connect happens on a fresh OS thread
//! that joins the pod's namespace (its pin under `<state>/ns/<pod>/net`), connects to
//! `127.0.0.1:<port>` and ends; the socket stays in the namespace it was made in and is
//! handed to tokio. Host-network pods are connected to from crustd's own namespace.

use std::{fs::File, net::TcpStream, path::PathBuf, time::Duration};

use crust_runtime::sandbox::{NsMode, SandboxManager};

/// How long a connect into the pod may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The network namespace pin of the ready pod `pod_id` (None: host network), or why
/// it cannot be forwarded to.
pub fn pod_netns(sandboxes: &SandboxManager, pod_id: &str) -> Result<Option<PathBuf>, String> {
    let view = sandboxes.status(pod_id).map_err(|e| e.to_string())?;
    if !view.ready {
        return Err(format!("pod sandbox {} is not ready", view.sandbox.id));
    }
    if view.sandbox.spec.namespaces.network == NsMode::Node {
        return Ok(None);
    }
    Ok(Some(view.sandbox.pin("net")))
}

/// Connects to `127.0.0.1:port` inside `netns` (None: here).
pub async fn connect(netns: Option<PathBuf>, port: u16) -> Result<tokio::net::TcpStream, String> {
    let stream = tokio::task::spawn_blocking(move || -> Result<TcpStream, String> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let Some(netns) = netns else {
            return TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
                .map_err(|e| format!("connect to {addr}: {e}"));
        };
        // A thread of its own: the blocking pool's threads are reused, and one left in
        // a pod's namespace would make later work happen there.
        std::thread::spawn(move || {
            let ns = File::open(&netns).map_err(|e| format!("open {}: {e}", netns.display()))?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("join network namespace {}: {e}", netns.display()))?;
            TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
                .map_err(|e| format!("connect to {addr} in the pod: {e}"))
        })
        .join()
        .map_err(|_| "port-forward thread panicked".to_string())?
    })
    .await
    .map_err(|e| format!("port-forward task: {e}"))??;
    stream
        .set_nonblocking(true)
        .map_err(|e| format!("socket: {e}"))?;
    tokio::net::TcpStream::from_std(stream).map_err(|e| format!("socket: {e}"))
}
