//! Joins a runtime stdio session (exec or attach) to a client, whatever the transport:
//! the transports turn their frames into [`FromClient`] events and write what
//! [`run`] sends them.

use std::time::Duration;

use crust_runtime::container::{StdioEnd, StdioOutput, StdioSession, TerminalSize};
use tokio::sync::mpsc;

use super::remotecommand::Outcome;

/// What a client sends.
#[derive(Debug)]
pub enum FromClient {
    Stdin(Vec<u8>),
    /// The client closed its stdin (half-close): the process sees EOF.
    StdinEof,
    Resize(TerminalSize),
}

/// Runs the session until the process is done (or the client leaves, or nothing moves
/// for `idle`). Output goes to `to_client` in order and is complete before this returns
/// an exit. A client that leaves ends the session: dropping it kills an exec's process
/// tree, or detaches an attach.
pub async fn run(
    mut session: StdioSession,
    mut from_client: mpsc::Receiver<FromClient>,
    to_client: mpsc::Sender<StdioOutput>,
    idle: Duration,
    attach: bool,
) -> Outcome {
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    loop {
        tokio::select! {
            chunk = session.output.recv() => match chunk {
                Some(chunk) => {
                    if to_client.send(chunk).await.is_err() {
                        return Outcome::Error("the client went away".into());
                    }
                }
                None => break,
            },
            event = from_client.recv() => match event {
                Some(FromClient::Stdin(data)) => {
                    if let Some(stdin) = &session.stdin {
                        // The process no longer reading its stdin is not an error.
                        let _ = stdin.send(data).await;
                    }
                }
                Some(FromClient::StdinEof) => session.stdin = None,
                Some(FromClient::Resize(size)) => {
                    if let Some(resize) = &session.resize {
                        let _ = resize.try_send(size);
                    }
                }
                None => {
                    // The transport's reader ended: the connection is gone.
                    return Outcome::Error("the client went away".into());
                }
            },
            () = &mut idle_timer => {
                return Outcome::Error(format!("stream idle for {}", humantime::format_duration(idle)));
            }
        }
        idle_timer
            .as_mut()
            .reset(tokio::time::Instant::now() + idle);
    }
    match session.end.await {
        Ok(StdioEnd::Exited(code)) => Outcome::of_exit(code),
        // An attach ends when the container's output does; that is a normal end.
        Ok(StdioEnd::Closed(_)) if attach => Outcome::Success,
        Ok(StdioEnd::Closed(reason)) => Outcome::Error(reason),
        Err(_) => Outcome::Error("the session ended without a status".into()),
    }
}
