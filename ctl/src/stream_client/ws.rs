//! The WebSocket transport (`wsstream`, kubectl's `--transport websocket`, the default
//! of kubectl 1.31+): each binary message starts with its channel byte.

use futures::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};
use tokio_tungstenite::{
    WebSocketStream, client_async,
    tungstenite::{self, Message, client::IntoClientRequest, http::HeaderValue},
};

use super::{StreamError, StreamOpts, StreamUrl, status::decode_status};

/// Exec/attach subprotocols offered, newest first: v5 adds the close channel.
const STDIO_PROTOCOLS: &str = "v5.channel.k8s.io, v4.channel.k8s.io";
const PORTFORWARD_PROTOCOL: &str = "v4.channel.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: the payload names a channel the client will send no more on.
const CLOSE: u8 = 255;

/// `remotecommand.TerminalSize` as kubelet decodes it.
pub(super) fn resize_json(width: u16, height: u16) -> Vec<u8> {
    format!(r#"{{"Width":{width},"Height":{height}}}"#).into_bytes()
}

/// A binary frame on `channel`.
fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// `(channel, payload)` of a data message; None for control and empty messages.
fn decode(msg: &Message) -> Option<(u8, &[u8])> {
    match msg {
        Message::Binary(b) if !b.is_empty() => Some((b[0], &b[1..])),
        _ => None,
    }
}

/// Opens the WebSocket at `url` (its path and query) offering `protocols`; returns the
/// socket and the negotiated subprotocol.
async fn connect(
    url: &StreamUrl,
    path: &str,
    protocols: &str,
) -> Result<(WebSocketStream<TcpStream>, String), StreamError> {
    let tcp = url.dial().await?;
    let mut req = format!("ws://{}{}", url.authority, path).into_client_request()?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocols).map_err(|_| StreamError::Url {
            url: url.url.clone(),
        })?,
    );
    match client_async(req, tcp).await {
        Ok((socket, resp)) => {
            let protocol = resp
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            Ok((socket, protocol))
        }
        Err(tungstenite::Error::Http(resp)) => Err(StreamError::UpgradeRefused {
            url: url.url.clone(),
            status: resp.status().as_u16(),
            body: String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default())
                .trim()
                .to_string(),
        }),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn exec<I, O, E>(
    url: &StreamUrl,
    opts: StreamOpts,
    mut stdin: I,
    mut stdout: O,
    mut stderr: E,
    mut resize: Option<mpsc::Receiver<(u16, u16)>>,
) -> Result<i32, StreamError>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let (socket, protocol) = connect(url, &url.path, STDIO_PROTOCOLS).await?;
    let v5 = protocol == "v5.channel.k8s.io";
    let (mut sink, mut source) = socket.split();
    let mut stdin_open = opts.stdin;
    let mut status = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            msg = source.next() => {
                let msg = match msg {
                    None => break,
                    // A server that drops the TCP connection after its status, without
                    // the closing handshake, has still said everything.
                    Some(Err(tungstenite::Error::Protocol(_))) if !status.is_empty() => break,
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(msg)) => msg,
                };
                if msg.is_close() {
                    break;
                }
                match decode(&msg) {
                    Some((STDOUT, data)) if !data.is_empty() => {
                        stdout.write_all(data).await?;
                        stdout.flush().await?;
                    }
                    Some((STDERR, data)) if !data.is_empty() => {
                        stderr.write_all(data).await?;
                        stderr.flush().await?;
                    }
                    Some((ERROR, data)) => status.extend_from_slice(data),
                    _ => {}
                }
            }
            n = stdin.read(&mut buf), if stdin_open => match n {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    // v4 has no way to say EOF; the remote stdin stays open.
                    if v5 {
                        let _ = sink.send(frame(CLOSE, &[STDIN])).await;
                    }
                }
                Ok(n) => {
                    if sink.send(frame(STDIN, &buf[..n])).await.is_err() {
                        stdin_open = false;
                    }
                }
            },
            size = recv_resize(&mut resize) => match size {
                Some((w, h)) => {
                    let _ = sink.send(frame(RESIZE, &resize_json(w, h))).await;
                }
                None => resize = None,
            },
        }
    }
    let _ = sink.close().await;
    decode_status(&status, true)
}

/// The next resize; pending forever once there is no receiver.
async fn recv_resize(rx: &mut Option<mpsc::Receiver<(u16, u16)>>) -> Option<(u16, u16)> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// One forwarded connection over its own WebSocket, `?port=PORT` in the query;
/// channel 0 carries data and 1 errors, each opened by the port number (2 bytes LE).
pub(super) async fn port_forward(
    url: &StreamUrl,
    port: u16,
    tcp: TcpStream,
) -> Result<(), StreamError> {
    let path = if url.path.contains('?') {
        format!("{}&port={port}", url.path)
    } else {
        format!("{}?port={port}", url.path)
    };
    let (socket, _) = connect(url, &path, PORTFORWARD_PROTOCOL).await?;
    let (mut sink, mut source) = socket.split();
    let (mut rd, mut wr) = tcp.into_split();
    let mut seen_port = [false; 2];
    let mut error = Vec::new();
    let mut local_open = true;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            msg = source.next() => {
                let msg = match msg {
                    None | Some(Err(_)) => break,
                    Some(Ok(msg)) => msg,
                };
                if msg.is_close() {
                    break;
                }
                let Some((channel, data)) = decode(&msg) else { continue };
                let Some(seen) = seen_port.get_mut(usize::from(channel)) else { continue };
                if !*seen {
                    // The port-number preamble (wsstream's portforward protocol).
                    *seen = true;
                    continue;
                }
                if channel == 0 {
                    if wr.write_all(data).await.is_err() {
                        break;
                    }
                } else {
                    error.extend_from_slice(data);
                }
            }
            n = rd.read(&mut buf), if local_open => match n {
                // No half-close in this protocol: stop reading and wait for the pod.
                Ok(0) | Err(_) => local_open = false,
                Ok(n) => {
                    if sink.send(frame(0, &buf[..n])).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
    let _ = wr.shutdown().await;
    let _ = sink.close().await;
    let message = String::from_utf8_lossy(&error).trim().to_string();
    if message.is_empty() {
        Ok(())
    } else {
        Err(StreamError::PortForward { port, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_channel() {
        assert_eq!(
            frame(STDIN, b"hi"),
            Message::Binary(vec![0, b'h', b'i'].into())
        );
        assert_eq!(
            frame(CLOSE, &[STDIN]),
            Message::Binary(vec![255, 0].into()),
            "v5 stdin EOF"
        );
        let msg = Message::Binary(vec![STDERR, b'x'].into());
        assert_eq!(decode(&msg), Some((STDERR, &b"x"[..])));
        assert_eq!(decode(&Message::Binary(vec![].into())), None, "empty");
        assert_eq!(decode(&Message::Text("1aGk=".into())), None, "text");
        assert_eq!(resize_json(80, 24), br#"{"Width":80,"Height":24}"#);
    }
}
