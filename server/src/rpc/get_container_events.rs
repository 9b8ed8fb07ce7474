//! `GetContainerEvents`: a long-lived stream of container (and pod) lifecycle events
//! for kubelet's evented PLEG. The events and their fan-out are in
//! [`crate::events`]; this is the subscription and its stream.
//!
//! The stream yields the events held while nobody listened, then live ones, in
//! commit order per object. It ends with ABORTED when the subscriber fell more than
//! [`crate::events::SUBSCRIBER_BUFFER`] events behind (dropped, so that it relists
//! rather than miss an exit), and with UNAVAILABLE when crustd shuts down. A client
//! that goes away just drops its receiver.

use crust_proto::runtime::v1::{ContainerEventResponse, GetEventsRequest};
use futures::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use crate::{
    daemon::Daemon,
    error::ApiError,
    events::{SUBSCRIBER_BUFFER, Subscription},
};

pub async fn subscribe(daemon: &Daemon, _req: GetEventsRequest) -> Result<Subscription, ApiError> {
    let subscription = daemon.events.subscribe()?;
    tracing::info!(
        replayed = subscription.replay.len(),
        "container events subscriber"
    );
    Ok(subscription)
}

/// The subscription as the RPC's response stream.
pub fn stream(
    subscription: Subscription,
) -> impl Stream<Item = Result<ContainerEventResponse, Status>> + Send + 'static {
    let replay = futures::stream::iter(
        subscription
            .replay
            .into_iter()
            .map(|e| Ok(ContainerEventResponse::clone(&e))),
    );
    let live = futures::stream::unfold(Some(subscription.live), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Ok(e) => Some((Ok(ContainerEventResponse::clone(&e)), Some(rx))),
            Err(RecvError::Lagged(missed)) => {
                let error = ApiError::EventsLagged {
                    missed,
                    buffer: SUBSCRIBER_BUFFER,
                };
                tracing::warn!(%error, "container events subscriber dropped");
                Some((Err(error.into()), None))
            }
            Err(RecvError::Closed) => Some((Err(ApiError::ShuttingDown.into()), None)),
        }
    });
    replay.chain(live)
}
