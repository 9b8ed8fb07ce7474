//! The streaming client against small in-process servers that answer as kubelet's
//! streaming server does (the real crustd is exercised in e2e/tests/streaming.rs).

use crust_ctl::stream_client::{
    StreamError, StreamOpts, Transport, exec_collect, exec_stream, port_forward_conn,
};
use crust_stream::{Connection, Headers};
use futures::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_tungstenite::tungstenite::{
    Message,
    handshake::server::{Request, Response},
};

const EXIT_3: &str = r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;

/// Reads the upgrade request head; returns its lines.
async fn request_head(io: &mut BufReader<TcpStream>) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        io.read_line(&mut line).await.unwrap();
        let line = line.trim_end().to_string();
        if line.is_empty() {
            return lines;
        }
        lines.push(line);
    }
}

/// One SPDY exec: stdin is echoed upper-cased on stdout, "oops" goes to stderr, and
/// the command exits 3. Returns the request head and the resize messages seen.
async fn spdy_exec_server(listener: TcpListener, streams: usize) -> (Vec<String>, Vec<u8>) {
    let (tcp, _) = listener.accept().await.unwrap();
    let mut io = BufReader::new(tcp);
    let head = request_head(&mut io).await;
    io.get_mut()
        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n")
        .await
        .unwrap();
    let conn = Connection::server(io);
    let mut by_type = std::collections::HashMap::new();
    let mut order = Vec::new();
    for _ in 0..streams {
        let s = conn.accept().await.unwrap();
        s.reply(Headers::new()).unwrap();
        let kind = s.headers().get("streamtype").unwrap().to_string();
        order.push(kind.clone());
        by_type.insert(kind, s);
    }
    assert_eq!(order[0], "error", "the error stream comes first: {order:?}");
    let mut resizes = Vec::new();
    if let Some(resize) = by_type.get("resize") {
        // The client sends its sizes before it closes stdin in the test.
        while let Some(chunk) = resize.recv().await {
            resizes.extend_from_slice(&chunk);
            if resizes.ends_with(b"}") {
                break;
            }
        }
    }
    let stdout = &by_type["stdout"];
    if let Some(stdin) = by_type.get("stdin") {
        while let Some(chunk) = stdin.recv().await {
            stdout.send(chunk.to_ascii_uppercase()).await.unwrap();
        }
    }
    if let Some(stderr) = by_type.get("stderr") {
        stderr.send(&b"oops"[..]).await.unwrap();
        stderr.close().unwrap();
    }
    stdout.close().unwrap();
    let error = &by_type["error"];
    error.send(EXIT_3.as_bytes().to_vec()).await.unwrap();
    error.close().unwrap();
    conn.closed().await;
    (head, resizes)
}

#[tokio::test]
async fn spdy_exec_pipes_stdin_and_reports_the_exit_code() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/exec/tok", listener.local_addr().unwrap());
    let server = tokio::spawn(spdy_exec_server(listener, 4));
    let opts = StreamOpts {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let out = exec_collect(&url, Transport::Spdy, opts, b"hello")
        .await
        .unwrap();
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.stdout, b"HELLO");
    assert_eq!(out.stderr, b"oops");
    let (head, _) = server.await.unwrap();
    assert!(head[0].starts_with("POST /exec/tok HTTP/1.1"), "{head:?}");
    for want in [
        "Upgrade: SPDY/3.1",
        "X-Stream-Protocol-Version: v5.channel.k8s.io",
        "X-Stream-Protocol-Version: v4.channel.k8s.io",
    ] {
        assert!(head.iter().any(|l| l == want), "{want} missing: {head:?}");
    }
}

#[tokio::test]
async fn spdy_tty_sends_resizes_and_no_stderr_stream() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/exec/tok", listener.local_addr().unwrap());
    // error, stdin, stdout, resize: a terminal has no stderr stream.
    let server = tokio::spawn(spdy_exec_server(listener, 4));
    let opts = StreamOpts {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: true,
    };
    let (tx, rx) = mpsc::channel(1);
    tx.send((100, 40)).await.unwrap();
    drop(tx);
    let (mut input, feed) = tokio::io::duplex(64);
    let client = tokio::spawn(async move {
        let mut out = Vec::new();
        let code = exec_stream(
            &url,
            Transport::Spdy,
            opts,
            feed,
            &mut out,
            tokio::io::sink(),
            Some(rx),
        )
        .await;
        (code, out)
    });
    input.write_all(b"ab").await.unwrap();
    drop(input);
    let (_, resizes) = server.await.unwrap();
    let (code, out) = client.await.unwrap();
    assert_eq!(code.unwrap(), 3);
    assert_eq!(out, b"AB");
    assert_eq!(resizes, br#"{"Width":100,"Height":40}"#);
}

#[tokio::test]
async fn refused_upgrades_carry_the_servers_message() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/exec/used", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut io = BufReader::new(tcp);
        request_head(&mut io).await;
        io.get_mut()
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 14\r\n\r\nunknown token\n")
            .await
            .unwrap();
    });
    let err = exec_collect(&url, Transport::Spdy, StreamOpts::default(), b"")
        .await
        .unwrap_err();
    match err {
        StreamError::UpgradeRefused { status, body, .. } => {
            assert_eq!(status, 404);
            assert_eq!(body, "unknown token");
        }
        other => panic!("expected UpgradeRefused, got {other:?}"),
    }
}

#[tokio::test]
async fn spdy_port_forward_pairs_streams_and_copies_both_ways() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/portforward/tok", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut io = BufReader::new(tcp);
        let head = request_head(&mut io).await;
        assert!(
            head.iter()
                .any(|l| l == "X-Stream-Protocol-Version: portforward.k8s.io"),
            "{head:?}"
        );
        io.get_mut()
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n")
            .await
            .unwrap();
        let conn = Connection::server(io);
        let error = conn.accept().await.unwrap();
        error.reply(Headers::new()).unwrap();
        let data = conn.accept().await.unwrap();
        data.reply(Headers::new()).unwrap();
        for (s, kind) in [(&error, "error"), (&data, "data")] {
            assert_eq!(s.headers().get("streamtype"), Some(kind));
            assert_eq!(s.headers().get("port"), Some("8080"));
            assert_eq!(s.headers().get("requestid"), Some("0"));
        }
        let mut got = Vec::new();
        while let Some(chunk) = data.recv().await {
            got.extend_from_slice(&chunk);
        }
        data.send(got.to_ascii_uppercase()).await.unwrap();
        data.close().unwrap();
        error.close().unwrap();
        conn.closed().await;
    });
    let local = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = local.local_addr().unwrap();
    let forward = tokio::spawn(async move {
        let (tcp, _) = local.accept().await.unwrap();
        port_forward_conn(&url, Transport::Spdy, 8080, tcp).await
    });
    let mut user = TcpStream::connect(addr).await.unwrap();
    user.write_all(b"ping").await.unwrap();
    user.shutdown().await.unwrap();
    let mut reply = Vec::new();
    user.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"PING");
    forward.await.unwrap().unwrap();
    server.await.unwrap();
}

/// Accepts a WebSocket, answering `protocol`; returns it, the URI and the offered
/// protocols.
// tungstenite's callback signature returns its large ErrorResponse.
#[allow(clippy::result_large_err)]
async fn ws_accept(
    listener: &TcpListener,
    protocol: &'static str,
) -> (
    tokio_tungstenite::WebSocketStream<TcpStream>,
    String,
    String,
) {
    let (tcp, _) = listener.accept().await.unwrap();
    let mut seen = (String::new(), String::new());
    let socket = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, mut resp: Response| {
        seen.0 = req.uri().to_string();
        seen.1 = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        resp.headers_mut()
            .insert("sec-websocket-protocol", protocol.parse().unwrap());
        Ok(resp)
    })
    .await
    .unwrap();
    (socket, seen.0, seen.1)
}

#[tokio::test]
async fn websocket_exec_uses_channels_and_v5_close() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/exec/tok", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut ws, _, offered) = ws_accept(&listener, "v5.channel.k8s.io").await;
        assert_eq!(offered, "v5.channel.k8s.io, v4.channel.k8s.io");
        // kubelet's hello: an empty frame on stdout.
        ws.send(Message::Binary(vec![1].into())).await.unwrap();
        while let Some(Ok(msg)) = ws.next().await {
            let data = msg.into_data();
            match data.first() {
                Some(0) => {
                    let mut out = vec![1];
                    out.extend(data[1..].to_ascii_uppercase());
                    ws.send(Message::Binary(out.into())).await.unwrap();
                }
                Some(255) => {
                    assert_eq!(&data[..], &[255, 0], "stdin close");
                    break;
                }
                _ => {}
            }
        }
        ws.send(Message::Binary(b"\x02oops".to_vec().into()))
            .await
            .unwrap();
        let mut status = vec![3];
        status.extend_from_slice(EXIT_3.as_bytes());
        ws.send(Message::Binary(status.into())).await.unwrap();
        ws.close(None).await.unwrap();
    });
    let opts = StreamOpts {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let out = exec_collect(&url, Transport::WebSocket, opts, b"hi")
        .await
        .unwrap();
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.stdout, b"HI");
    assert_eq!(out.stderr, b"oops");
    server.await.unwrap();
}

#[tokio::test]
async fn websocket_port_forward_skips_the_port_preamble() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/portforward/tok", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut ws, uri, offered) = ws_accept(&listener, "v4.channel.k8s.io").await;
        assert_eq!(uri, "/portforward/tok?port=8080");
        assert_eq!(offered, "v4.channel.k8s.io");
        let port = 8080u16.to_le_bytes();
        for ch in [0u8, 1] {
            ws.send(Message::Binary(vec![ch, port[0], port[1]].into()))
                .await
                .unwrap();
        }
        while let Some(Ok(msg)) = ws.next().await {
            let data = msg.into_data();
            if data.first() == Some(&0) {
                let mut out = vec![0];
                out.extend(data[1..].to_ascii_uppercase());
                ws.send(Message::Binary(out.into())).await.unwrap();
                break;
            }
        }
        ws.send(Message::Binary(b"\x01connection refused".to_vec().into()))
            .await
            .unwrap();
        ws.close(None).await.unwrap();
    });
    let local = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = local.local_addr().unwrap();
    let forward = tokio::spawn(async move {
        let (tcp, _) = local.accept().await.unwrap();
        port_forward_conn(&url, Transport::WebSocket, 8080, tcp).await
    });
    let mut user = TcpStream::connect(addr).await.unwrap();
    user.write_all(b"ping").await.unwrap();
    let mut reply = Vec::new();
    user.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"PING");
    match forward.await.unwrap() {
        Err(StreamError::PortForward { port, message }) => {
            assert_eq!(port, 8080);
            assert_eq!(message, "connection refused");
        }
        other => panic!("the error channel's text should be an error, got {other:?}"),
    }
    server.await.unwrap();
}
