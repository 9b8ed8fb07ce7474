//! The WebSocket transports (k8s.io/apimachinery `util/httpstream/wsstream`): each
//! message's first byte names its channel (`'0' + channel` and a base64 payload for the
//! `base64.` protocols).
//!
//! Exec/attach channels: 0 stdin, 1 stdout, 2 stderr, 3 error (the status), 4 resize;
//! v5 adds 255 "close": its payload names the channel the client closes (stdin EOF).
//! Port forward (`v4.channel.k8s.io`): channels 2i and 2i+1 are the data and error
//! streams of the i-th `port` of the query, each opened by a frame holding the port
//! number (2 bytes, little endian).

use std::time::Duration;

use base64::Engine;
use crust_runtime::container::{StdioOutput, StdioRequest, StdioSession};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};

use super::{
    bridge::{self, FromClient},
    remotecommand::{Outcome, StatusFormat, parse_resizes},
};

pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Exec/attach subprotocols we accept, newest first.
pub const STDIO_PROTOCOLS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// Port-forward subprotocols.
pub const PORTFORWARD_PROTOCOLS: [&str; 2] = ["v4.channel.k8s.io", "v4.base64.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// Frames for one negotiated protocol.
#[derive(Debug, Clone, Copy)]
struct Codec {
    base64: bool,
}

impl Codec {
    fn of(protocol: &str) -> Codec {
        Codec {
            base64: protocol.contains("base64."),
        }
    }

    fn encode(self, channel: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
            text.push((b'0' + channel) as char);
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
            Message::Text(text.into())
        } else {
            let mut frame = Vec::with_capacity(data.len() + 1);
            frame.push(channel);
            frame.extend_from_slice(data);
            Message::Binary(frame.into())
        }
    }

    /// `(channel, payload)`, or None for control messages and empty frames.
    fn decode(self, msg: Message) -> Option<(u8, Vec<u8>)> {
        match msg {
            Message::Binary(b) if !b.is_empty() => Some((b[0], b[1..].to_vec())),
            Message::Text(t) if !t.is_empty() => {
                let t = t.as_bytes();
                let channel = t[0].wrapping_sub(b'0');
                let data = base64::engine::general_purpose::STANDARD
                    .decode(&t[1..])
                    .ok()?;
                Some((channel, data))
            }
            _ => None,
        }
    }
}

/// Serves an exec or attach over an upgraded WebSocket. `session` is None with the
/// reason when the process could not be started; the client then gets that as status.
pub async fn serve_stdio(
    ws: Socket,
    protocol: &str,
    streams: StdioRequest,
    session: Result<StdioSession, String>,
    idle: Duration,
    attach: bool,
) {
    let codec = Codec::of(protocol);
    let format = StatusFormat::of(protocol);
    let (mut sink, mut source) = ws.split();
    // Tell the client the streams are set up: an empty frame on the lowest channel it
    // reads (kubelet's createWebSocketStreams does the same).
    let hello = if streams.stdout {
        STDOUT
    } else if streams.stderr {
        STDERR
    } else {
        ERROR
    };
    if sink.send(codec.encode(hello, &[])).await.is_err() {
        return;
    }
    let outcome = match session {
        Err(reason) => Outcome::Error(reason),
        Ok(session) => {
            let (in_tx, in_rx) = mpsc::channel(16);
            let (out_tx, mut out_rx) = mpsc::channel::<StdioOutput>(16);
            let reader = tokio::spawn(async move {
                let mut resize = Vec::new();
                while let Some(Ok(msg)) = source.next().await {
                    if msg.is_close() {
                        break;
                    }
                    let Some((channel, data)) = codec.decode(msg) else {
                        continue;
                    };
                    let event = match channel {
                        STDIN => FromClient::Stdin(data),
                        RESIZE => {
                            resize.extend_from_slice(&data);
                            for size in parse_resizes(&mut resize) {
                                if in_tx.send(FromClient::Resize(size)).await.is_err() {
                                    return;
                                }
                            }
                            continue;
                        }
                        CLOSE if data.first() == Some(&STDIN) => FromClient::StdinEof,
                        _ => continue,
                    };
                    if in_tx.send(event).await.is_err() {
                        return;
                    }
                }
            });
            let run = bridge::run(session, in_rx, out_tx, idle, attach);
            tokio::pin!(run);
            let outcome = loop {
                tokio::select! {
                    outcome = &mut run => break outcome,
                    Some(chunk) = out_rx.recv() => {
                        let frame = match &chunk {
                            StdioOutput::Stdout(d) => codec.encode(STDOUT, d),
                            StdioOutput::Stderr(d) => codec.encode(STDERR, d),
                        };
                        if sink.send(frame).await.is_err() {
                            break Outcome::Error("the client went away".into());
                        }
                    }
                }
            };
            // What the bridge queued before it finished still belongs to the client.
            while let Ok(chunk) = out_rx.try_recv() {
                let frame = match &chunk {
                    StdioOutput::Stdout(d) => codec.encode(STDOUT, d),
                    StdioOutput::Stderr(d) => codec.encode(STDERR, d),
                };
                if sink.send(frame).await.is_err() {
                    break;
                }
            }
            reader.abort();
            outcome
        }
    };
    if let Some(status) = outcome.encode(format) {
        let _ = sink.send(codec.encode(ERROR, &status)).await;
    }
    let _ = sink.send(Message::Close(None)).await;
    let _ = sink.close().await;
}

/// Serves a WebSocket port forward of `ports`; `connect` opens a connection to a port
/// inside the pod's network namespace.
pub async fn serve_portforward<C, F>(ws: Socket, protocol: &str, ports: Vec<u16>, connect: C)
where
    C: Fn(u16) -> F,
    F: std::future::Future<Output = Result<tokio::net::TcpStream, String>> + Send + 'static,
{
    let codec = Codec::of(protocol);
    let (mut sink, mut source) = ws.split();
    for (i, port) in ports.iter().enumerate() {
        for channel in [2 * i, 2 * i + 1] {
            if sink
                .send(codec.encode(channel as u8, &port.to_le_bytes()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    // Frames to the client from every port's task go through one queue.
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(32);
    let mut inputs = Vec::new();
    let mut tasks = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let (in_tx, mut in_rx) = mpsc::channel::<Vec<u8>>(16);
        inputs.push(in_tx);
        let out = out_tx.clone();
        let conn = connect(*port);
        let port = *port;
        tasks.push(tokio::spawn(async move {
            let data_ch = (2 * i) as u8;
            let stream = match conn.await {
                Ok(stream) => stream,
                Err(e) => {
                    let msg = format!("error forwarding port {port} to pod: {e}");
                    let _ = out.send(codec.encode(data_ch + 1, msg.as_bytes())).await;
                    return;
                }
            };
            let (mut rd, mut wr) = stream.into_split();
            let upstream = tokio::spawn(async move {
                while let Some(data) = in_rx.recv().await {
                    if wr.write_all(&data).await.is_err() {
                        return;
                    }
                }
                let _ = wr.shutdown().await;
            });
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if out.send(codec.encode(data_ch, &buf[..n])).await.is_err() {
                            break;
                        }
                    }
                }
            }
            upstream.abort();
        }));
    }
    drop(out_tx);
    let all_done = futures::future::join_all(tasks);
    tokio::pin!(all_done);
    loop {
        tokio::select! {
            msg = source.next() => match msg {
                Some(Ok(msg)) if !msg.is_close() => {
                    if let Some((channel, data)) = codec.decode(msg)
                        && channel % 2 == 0
                        && let Some(input) = inputs.get(channel as usize / 2)
                    {
                        let _ = input.send(data).await;
                    }
                }
                _ => break,
            },
            Some(frame) = out_rx.recv() => {
                if sink.send(frame).await.is_err() {
                    break;
                }
            }
            _ = &mut all_done => {
                while let Ok(frame) = out_rx.try_recv() {
                    let _ = sink.send(frame).await;
                }
                break;
            }
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_channel() {
        let bin = Codec::of("v4.channel.k8s.io");
        assert_eq!(
            bin.encode(STDOUT, b"hi"),
            Message::Binary(vec![1, b'h', b'i'].into())
        );
        assert_eq!(
            bin.decode(Message::Binary(vec![0, b'x'].into())),
            Some((0, b"x".to_vec()))
        );
        let b64 = Codec::of("base64.channel.k8s.io");
        assert_eq!(b64.encode(STDERR, b"hi"), Message::Text("2aGk=".into()));
        assert_eq!(
            b64.decode(Message::Text("0aGk=".into())),
            Some((0, b"hi".to_vec()))
        );
        assert_eq!(bin.decode(Message::Binary(vec![].into())), None);
    }
}
