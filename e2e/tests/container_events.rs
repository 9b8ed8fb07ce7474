//! GetContainerEvents through the real crustd: events for a container's life in
//! order with statuses filled, on a crash exit and on StopContainer, to two
//! subscribers, and a subscriber that goes away does not break RPCs.

use std::time::Duration;

use crust_e2e::world::{PodOptions, World, busybox_image};
use crust_proto::runtime::v1::{
    ContainerEventResponse, ContainerEventType, ContainerState, GetEventsRequest,
    RemoveContainerRequest, VersionRequest,
};
use tonic::Streaming;

async fn subscribe(w: &World) -> Streaming<ContainerEventResponse> {
    w.d.runtime()
        .await
        .expect("connect")
        .get_container_events(GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner()
}

/// The next event about `id` (other objects' events are skipped). The timeout only
/// guards against a hang; what is asserted is the events' content and order.
async fn next_for(s: &mut Streaming<ContainerEventResponse>, id: &str) -> ContainerEventResponse {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(60), s.message())
            .await
            .unwrap_or_else(|_| panic!("no event for {id} within 60 s"))
            .expect("stream ok")
            .expect("stream open");
        if e.container_id == id {
            return e;
        }
    }
}

fn kind(e: &ContainerEventResponse) -> ContainerEventType {
    ContainerEventType::try_from(e.container_event_type).expect("known type")
}

/// The status of `id` in the event's statuses.
fn own(e: &ContainerEventResponse, id: &str) -> (ContainerState, i32) {
    let s = e
        .containers_statuses
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("{id} missing from {:?}", e.containers_statuses));
    (ContainerState::try_from(s.state).unwrap(), s.exit_code)
}

#[tokio::test]
async fn container_lifecycle_events_reach_every_subscriber_in_order() {
    let w = World::start(&busybox_image(&["sh", "sleep"], |_| {}), "test/busybox", "").await;
    let pod = w
        .run_pod(&PodOptions::named("ev").namespace("events"))
        .await;
    let mut one = subscribe(&w).await;
    let mut two = subscribe(&w).await;
    // A third subscriber that goes away mid-stream must not disturb anything.
    let gone = subscribe(&w).await;
    drop(gone);

    // A crash exit: `exit 3`.
    let crash = w
        .run(&pod, w.config("crash", &["sh", "-c", "exit 3"]))
        .await;
    for s in [&mut one, &mut two] {
        let created = next_for(s, &crash).await;
        assert_eq!(kind(&created), ContainerEventType::ContainerCreatedEvent);
        assert_eq!(own(&created, &crash).0, ContainerState::ContainerCreated);
        let pod_status = created
            .pod_sandbox_status
            .as_ref()
            .expect("pod status filled");
        assert_eq!(pod_status.id, pod);
        assert_eq!(pod_status.metadata.as_ref().unwrap().uid, "uid-ev");
        assert!(created.created_at > 0);
        let started = next_for(s, &crash).await;
        assert_eq!(kind(&started), ContainerEventType::ContainerStartedEvent);
        assert_eq!(own(&started, &crash).0, ContainerState::ContainerRunning);
        // Nobody asks for its status: the exit must be learnt on its own.
        let stopped = next_for(s, &crash).await;
        assert_eq!(kind(&stopped), ContainerEventType::ContainerStoppedEvent);
        assert_eq!(own(&stopped, &crash), (ContainerState::ContainerExited, 3));
        assert!(stopped.created_at >= started.created_at);
    }

    // StopContainer.
    let long = w.run(&pod, w.config("long", &["sleep", "1000"])).await;
    for s in [&mut one, &mut two] {
        assert_eq!(
            kind(&next_for(s, &long).await),
            ContainerEventType::ContainerCreatedEvent
        );
        assert_eq!(
            kind(&next_for(s, &long).await),
            ContainerEventType::ContainerStartedEvent
        );
    }
    w.stop_container(&long, 1).await.expect("StopContainer");
    for s in [&mut one, &mut two] {
        let stopped = next_for(s, &long).await;
        assert_eq!(kind(&stopped), ContainerEventType::ContainerStoppedEvent);
        let (state, code) = own(&stopped, &long);
        assert_eq!(state, ContainerState::ContainerExited);
        assert_eq!(code, 128 + 15, "ended by SIGTERM");
    }

    // RemoveContainer: DELETED, and the container is gone from the statuses.
    w.d.runtime()
        .await
        .unwrap()
        .remove_container(RemoveContainerRequest {
            container_id: crash.clone(),
        })
        .await
        .expect("RemoveContainer");
    for s in [&mut one, &mut two] {
        let deleted = next_for(s, &crash).await;
        assert_eq!(kind(&deleted), ContainerEventType::ContainerDeletedEvent);
        assert!(deleted.containers_statuses.iter().all(|c| c.id != crash));
        assert!(deleted.containers_statuses.iter().any(|c| c.id == long));
    }
    w.d.runtime()
        .await
        .unwrap()
        .version(VersionRequest::default())
        .await
        .expect("RPCs still served after a subscriber left");
}
