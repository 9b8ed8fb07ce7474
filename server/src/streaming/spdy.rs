//! The SPDY/3.1 transports, as kubelet's streaming server runs them
//! (`remotecommand.createHTTPStreamStreams`, `portforward.httpStreamHandler`): the
//! client opens one stream per channel, typed by its `streamType` header.

use std::{collections::HashMap, sync::Arc, time::Duration};

use crust_runtime::container::StdioOutput;
use crust_stream::{Connection, Headers, SpdyStream};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};

use super::{
    Pending,
    bridge::{self, FromClient},
    http::open_stdio,
    portforward::{connect, pod_netns},
    remotecommand::{Outcome, StatusFormat, parse_resizes},
};
use crate::daemon::Daemon;

/// Serves one upgraded connection until the session is over.
pub async fn serve<IO>(
    io: IO,
    protocol: &str,
    pending: Pending,
    daemon: Arc<Daemon>,
    (idle, creation): (Duration, Duration),
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(Connection::server(io));
    match &pending {
        Pending::PortForward { pod_id, .. } => {
            let netns = pod_netns(&daemon.sandboxes, pod_id);
            portforward(conn, pod_id, netns, creation).await;
        }
        Pending::Exec { .. } | Pending::Attach { .. } => {
            stdio(conn, protocol, &pending, &daemon, idle, creation).await;
        }
    }
}

/// The streams of one exec/attach.
#[derive(Default)]
struct Streams {
    error: Option<SpdyStream>,
    stdin: Option<SpdyStream>,
    stdout: Option<SpdyStream>,
    stderr: Option<SpdyStream>,
    resize: Option<SpdyStream>,
}

async fn stdio(
    conn: Arc<Connection>,
    protocol: &str,
    pending: &Pending,
    daemon: &Daemon,
    idle: Duration,
    creation: Duration,
) {
    let (Pending::Exec { streams: want, .. } | Pending::Attach { streams: want, .. }) = pending
    else {
        return;
    };
    let attach = matches!(pending, Pending::Attach { .. });
    // v1 and v2 have no resize stream.
    let resizable = !matches!(protocol, "" | "channel.k8s.io" | "v2.channel.k8s.io");
    let expected = 1
        + usize::from(want.stdin)
        + usize::from(want.stdout)
        + usize::from(want.stderr)
        + usize::from(want.tty && resizable);
    let mut s = Streams::default();
    let gathered = tokio::time::timeout(creation, async {
        let mut n = 0;
        while n < expected {
            let stream = conn
                .accept()
                .await
                .ok_or("the client closed the connection")?;
            stream
                .reply(Headers::new())
                .map_err(|_| "reply to stream failed")?;
            let slot = match stream.headers().get("streamtype").unwrap_or_default() {
                "error" => &mut s.error,
                "stdin" => &mut s.stdin,
                "stdout" => &mut s.stdout,
                "stderr" => &mut s.stderr,
                "resize" => &mut s.resize,
                _ => {
                    stream.reset(crust_stream::RstStatus::PROTOCOL_ERROR);
                    return Err("unexpected stream type");
                }
            };
            *slot = Some(stream);
            n += 1;
        }
        Ok::<_, &str>(())
    })
    .await;
    match gathered {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => {
            tracing::info!(reason, "streams not set up");
            return;
        }
        Err(_) => {
            tracing::info!(
                ?creation,
                "timed out waiting for the client to create streams"
            );
            return;
        }
    }

    let outcome = match open_stdio(daemon, pending).await {
        Err(reason) => Outcome::Error(reason),
        Ok(session) => {
            let (in_tx, in_rx) = mpsc::channel(16);
            let (out_tx, mut out_rx) = mpsc::channel::<StdioOutput>(16);
            // The bridge hears "client gone" when every sender is dropped: the stdin and
            // resize readers end at their stream's FIN, this one when the connection
            // closes.
            let keeper = {
                let (tx, conn) = (in_tx.clone(), conn.clone());
                tokio::spawn(async move {
                    conn.closed().await;
                    drop(tx);
                })
            };
            if let Some(stdin) = s.stdin.clone() {
                let tx = in_tx.clone();
                tokio::spawn(async move {
                    while let Some(data) = stdin.recv().await {
                        if tx.send(FromClient::Stdin(data.to_vec())).await.is_err() {
                            return;
                        }
                    }
                    let _ = tx.send(FromClient::StdinEof).await;
                });
            }
            if let Some(resize) = s.resize.clone() {
                let tx = in_tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some(data) = resize.recv().await {
                        buf.extend_from_slice(&data);
                        for size in parse_resizes(&mut buf) {
                            if tx.send(FromClient::Resize(size)).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
            drop(in_tx);
            let (stdout, stderr) = (s.stdout.clone(), s.stderr.clone());
            let writer = tokio::spawn(async move {
                while let Some(chunk) = out_rx.recv().await {
                    let (stream, data) = match chunk {
                        StdioOutput::Stdout(d) => (&stdout, d),
                        StdioOutput::Stderr(d) => (&stderr, d),
                    };
                    if let Some(stream) = stream
                        && stream.send(data).await.is_err()
                    {
                        return;
                    }
                }
            });
            let outcome = bridge::run(session, in_rx, out_tx, idle, attach).await;
            let _ = writer.await;
            keeper.abort();
            outcome
        }
    };
    for stream in [&s.stdout, &s.stderr].into_iter().flatten() {
        let _ = stream.close();
    }
    if let Some(error) = &s.error {
        if let Some(status) = outcome.encode(StatusFormat::of(protocol)) {
            let _ = error.send(status).await;
        }
        let _ = error.close();
    }
    // The client hangs up once it has read everything; do not cut it off before.
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
}

/// A port-forward connection: the client opens a `data` and an `error` stream with the
/// same `requestID` for each forwarded TCP connection.
async fn portforward(
    conn: Arc<Connection>,
    pod_id: &str,
    netns: Result<Option<std::path::PathBuf>, String>,
    creation: Duration,
) {
    type Pair = (Option<SpdyStream>, Option<SpdyStream>);
    let mut pairs: HashMap<String, (tokio::time::Instant, Pair)> = HashMap::new();
    while let Some(stream) = conn.accept().await {
        let headers = stream.headers();
        let port = headers.get("port").and_then(|p| p.parse::<u16>().ok());
        let kind = headers.get("streamtype").unwrap_or_default().to_string();
        let Some(port) = port.filter(|p| *p > 0) else {
            stream.reset(crust_stream::RstStatus::PROTOCOL_ERROR);
            continue;
        };
        if kind != "data" && kind != "error" {
            stream.reset(crust_stream::RstStatus::PROTOCOL_ERROR);
            continue;
        }
        // Old clients send no requestID: their error stream is opened right before
        // the data stream (ids two apart), as kubelet assumes.
        let request = headers
            .get("requestid")
            .map(str::to_string)
            .unwrap_or_else(|| {
                let id = stream.id();
                if kind == "data" { id - 2 } else { id }.to_string()
            });
        if stream.reply(Headers::new()).is_err() {
            continue;
        }
        let now = tokio::time::Instant::now();
        pairs.retain(|_, (at, _)| now.duration_since(*at) < creation);
        let entry = pairs.entry(request.clone()).or_insert((now, (None, None)));
        if kind == "data" {
            entry.1.0 = Some(stream);
        } else {
            entry.1.1 = Some(stream);
        }
        if let (Some(_), Some(_)) = &entry.1 {
            let (_, (Some(data), Some(error))) = pairs.remove(&request).expect("present") else {
                unreachable!("both streams are present");
            };
            let netns = netns.clone();
            let pod = pod_id.to_string();
            tokio::spawn(async move {
                if let Err(e) = forward(&data, netns, port).await {
                    let msg = format!("error forwarding port {port} to pod {pod}: {e}");
                    let _ = error.send(msg.into_bytes()).await;
                }
                let _ = data.close();
                let _ = error.close();
            });
        }
    }
}

/// Copies one TCP connection to `port` in the pod both ways over `data`.
async fn forward(
    data: &SpdyStream,
    netns: Result<Option<std::path::PathBuf>, String>,
    port: u16,
) -> Result<(), String> {
    let tcp = connect(netns?, port).await?;
    let (mut rd, mut wr) = tcp.into_split();
    let upstream = {
        let data = data.clone();
        tokio::spawn(async move {
            while let Some(chunk) = data.recv().await {
                if wr.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            // The client finished sending: pass the half-close on.
            let _ = wr.shutdown().await;
        })
    };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if data.send(buf[..n].to_vec()).await.is_err() {
                    break;
                }
            }
        }
    }
    upstream.abort();
    Ok(())
}
