//! The SPDY/3.1 transport, as client-go's `remotecommand` (`streamProtocolV4`) and
//! `portforward` packages speak it.

use crust_stream::{Connection, Headers, SpdyStream};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::mpsc,
};

use super::{StreamError, StreamOpts, StreamUrl, status::decode_status};

/// Remote-command protocols offered, newest first (kubectl's order).
const STDIO_PROTOCOLS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

const PORTFORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// Upper bound on the upgrade response head and a refusal's body.
const MAX_HEAD: usize = 64 * 1024;

/// POSTs the upgrade request and reads the `101 Switching Protocols` answer; returns
/// the connection (reads buffered past the head stay in the `BufReader`) and the
/// negotiated `X-Stream-Protocol-Version`.
async fn upgrade(
    url: &StreamUrl,
    protocols: &[&str],
) -> Result<(BufReader<TcpStream>, String), StreamError> {
    let tcp = url.dial().await?;
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n",
        url.path, url.authority
    );
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    let mut io = BufReader::new(tcp);
    io.get_mut().write_all(req.as_bytes()).await?;

    let bad = |reason: &str| StreamError::BadUpgradeResponse {
        url: url.url.clone(),
        reason: reason.into(),
    };
    let mut line = String::new();
    let mut head_len = 0;
    io.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no HTTP status line"))?;
    let (mut protocol, mut content_length) = (None, 0usize);
    loop {
        line.clear();
        let n = io.read_line(&mut line).await?;
        head_len += n;
        if n == 0 {
            return Err(bad("connection closed inside the response head"));
        }
        if head_len > MAX_HEAD {
            return Err(bad("response head too large"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("x-stream-protocol-version") {
                protocol = Some(value.to_string());
            } else if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().unwrap_or(0);
            }
        }
    }
    if status != 101 {
        let mut body = vec![0; content_length.min(MAX_HEAD)];
        let _ = io.read_exact(&mut body).await;
        return Err(StreamError::UpgradeRefused {
            url: url.url.clone(),
            status,
            body: String::from_utf8_lossy(&body).trim().to_string(),
        });
    }
    // A server that answers without a version speaks the unversioned v1.
    let protocol = protocol.unwrap_or_default();
    if !protocol.is_empty() && !protocols.contains(&protocol.as_str()) {
        return Err(bad("the server chose a protocol that was not offered"));
    }
    Ok((io, protocol))
}

fn typed(kind: &str) -> Headers {
    Headers::new().with("streamType", kind)
}

/// Exec/attach: the `error` stream first, then the requested stdio streams, then
/// `resize` (v3+, tty only), as `streamProtocolV4.createStreams` opens them.
pub(super) async fn exec<I, O, E>(
    url: &StreamUrl,
    opts: StreamOpts,
    mut stdin: I,
    mut stdout: O,
    mut stderr: E,
    resize: Option<mpsc::Receiver<(u16, u16)>>,
) -> Result<i32, StreamError>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let (io, protocol) = upgrade(url, &STDIO_PROTOCOLS).await?;
    let json_status = protocol.starts_with("v4.") || protocol.starts_with("v5.");
    let resizable = !matches!(
        protocol.as_str(),
        "" | "channel.k8s.io" | "v2.channel.k8s.io"
    );
    let conn = Connection::client(io);
    let error = conn.open(typed("error"), false).await?;
    let open = |wanted: bool, kind: &'static str| {
        let conn = &conn;
        async move {
            if wanted {
                conn.open(typed(kind), false).await.map(Some)
            } else {
                Ok(None)
            }
        }
    };
    let in_stream = open(opts.stdin, "stdin").await?;
    let out_stream = open(opts.stdout, "stdout").await?;
    // A terminal merges stderr into stdout; kubelet expects no stderr stream then.
    let err_stream = open(opts.stderr && !opts.tty, "stderr").await?;
    let resize_stream = open(opts.tty && resizable, "resize").await?;

    let outputs = async {
        let (a, b, status) = tokio::join!(
            copy_out(out_stream.as_ref(), &mut stdout),
            copy_out(err_stream.as_ref(), &mut stderr),
            read_all(&error),
        );
        a?;
        b?;
        Ok::<_, StreamError>(status)
    };
    let inputs = async {
        tokio::join!(
            pump_stdin(in_stream.as_ref(), &mut stdin),
            pump_resize(resize_stream.as_ref(), resize),
        )
    };
    tokio::pin!(outputs);
    let status = tokio::select! {
        r = &mut outputs => r?,
        _ = inputs => outputs.await?,
    };
    decode_status(&status, json_status)
}

/// Copies a remote output stream to `out` until the server closes it.
async fn copy_out<W: AsyncWrite + Unpin>(
    stream: Option<&SpdyStream>,
    out: &mut W,
) -> Result<(), StreamError> {
    let Some(stream) = stream else {
        return Ok(());
    };
    while let Some(chunk) = stream.recv().await {
        out.write_all(&chunk).await?;
        out.flush().await?;
    }
    Ok(())
}

async fn read_all(stream: &SpdyStream) -> Vec<u8> {
    let mut all = Vec::new();
    while let Some(chunk) = stream.recv().await {
        all.extend_from_slice(&chunk);
    }
    all
}

/// Sends `stdin` until EOF, then half-closes the stream: the remote stdin's EOF. Stops
/// quietly when the server is gone; the outputs then say how the session ended.
async fn pump_stdin<R: AsyncRead + Unpin>(stream: Option<&SpdyStream>, stdin: &mut R) {
    let Some(stream) = stream else {
        return;
    };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.send(buf[..n].to_vec()).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.close();
}

/// Writes each size as kubelet's resize JSON (`remotecommand.TerminalSize`).
async fn pump_resize(stream: Option<&SpdyStream>, rx: Option<mpsc::Receiver<(u16, u16)>>) {
    let (Some(stream), Some(mut rx)) = (stream, rx) else {
        return;
    };
    while let Some((width, height)) = rx.recv().await {
        let msg = super::ws::resize_json(width, height);
        if stream.send(msg).await.is_err() {
            return;
        }
    }
}

/// One forwarded connection: an `error` and a `data` stream sharing `requestID`
/// (client-go `portforward.handleConnection`).
pub(super) async fn port_forward(
    url: &StreamUrl,
    port: u16,
    tcp: TcpStream,
) -> Result<(), StreamError> {
    let (io, _) = upgrade(url, &[PORTFORWARD_PROTOCOL]).await?;
    let conn = Connection::client(io);
    let pair = |kind: &str| {
        typed(kind)
            .with("port", port.to_string())
            .with("requestID", "0")
    };
    let error = conn.open(pair("error"), false).await?;
    // Nothing is ever written on the error stream (kubectl closes it at once).
    let _ = error.close();
    let data = conn.open(pair("data"), false).await?;
    let (mut rd, mut wr) = tcp.into_split();
    let downstream = async {
        while let Some(chunk) = data.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let upstream = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if data.send(buf[..n].to_vec()).await.is_err() {
                        return;
                    }
                }
            }
        }
        // The local side finished sending: pass the half-close on.
        let _ = data.close();
    };
    tokio::pin!(downstream);
    tokio::select! {
        _ = &mut downstream => {}
        _ = upstream => downstream.await,
    }
    let message = read_all(&error).await;
    let message = String::from_utf8_lossy(&message).trim().to_string();
    if message.is_empty() {
        Ok(())
    } else {
        Err(StreamError::PortForward { port, message })
    }
}
