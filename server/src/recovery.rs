//! Start-up: load every record, reconcile it with the host, then open for business.

use crate::{daemon::Daemon, error::ApiError, node_config::NodeConfig};

/// Loads persisted state into `daemon` and marks it ready. Unreadable records are
/// quarantined and reported (logged, and listed in `Status` verbose info); they never
/// stop the daemon from serving the rest.
///
/// Every kind (node config, images, pods, containers) is reconciled against the host
/// here (monitor alive? half-made objects rolled back, unnamed layers pruned) before
/// `set_ready`, so no RPC sees a state the host contradicts.
pub async fn recover(daemon: &Daemon) -> Result<(), ApiError> {
    let mut quarantined = Vec::new();

    let node = daemon.store.load_all::<NodeConfig>()?;
    quarantined.extend(node.quarantined);
    if let Some(record) = node.records.into_iter().next() {
        tracing::info!(pod_cidrs = ?record.pod_cidrs, "restored node runtime config");
        *daemon.node.lock().expect("node config lock poisoned") = record;
    }

    let images = crate::image_store::open(daemon);
    if let Ok((_, q)) = &images {
        quarantined.extend(q.iter().cloned());
    }
    let _ = daemon.images.set(images.map(|(store, _)| store));

    // Pods: running ones stay running; one caught mid-creation is rolled back.
    quarantined.extend(daemon.sandboxes.recover().await?);
    // Images removed while in use whose containers went while crustd was down.
    crate::image_store::prune_unused(daemon).await;

    if !quarantined.is_empty() {
        tracing::error!(
            count = quarantined.len(),
            "some records could not be loaded and were quarantined"
        );
    }
    *daemon
        .quarantined
        .lock()
        .expect("quarantine list lock poisoned") = quarantined;
    daemon.set_ready();
    tracing::info!("state loaded; serving");
    Ok(())
}
