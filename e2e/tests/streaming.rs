//! Exec, Attach and PortForward through the real crustd: the RPCs hand out URLs on the
//! streaming server, and clients speak SPDY/3.1 (`v4.channel.k8s.io`,
//! `portforward.k8s.io`) or WebSocket (`v5`/`v4.channel.k8s.io`) to them, as kubectl
//! does through kubelet. The clients here are written from the protocol, independently
//! of crustd's server code, so they check it rather than mirror it.

use std::{ops::Deref, time::Duration};

use crust_e2e::{
    Crustd,
    image_builder::Image,
    world::{PodOptions, World, busybox_image},
};
use crust_proto::runtime::v1::{
    AttachRequest, ExecRequest, PortForwardRequest, StopContainerRequest,
};
use futures::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
use tonic::Code;

const APPLETS: &[&str] = &["sh", "echo", "cat", "sleep", "head", "stty", "httpd", "wc"];

/// The test image, with a page for httpd to serve at `/www/index.html`.
fn image() -> Image {
    busybox_image(APPLETS, |layer| {
        layer
            .dir("www", 0o755)
            .file("www/index.html", b"hello from the pod\n", 0o644);
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Spdy,
    WebSocket,
}

const TRANSPORTS: [Transport; 2] = [Transport::Spdy, Transport::WebSocket];

/// The pods here are in this Kubernetes namespace.
const NAMESPACE: &str = "stream";

/// The shared world with the pod, `stream`, that the tests here run their containers
/// in; the world's fields and helpers are reached through it.
struct PodWorld {
    world: World,
    pod: String,
}

impl Deref for PodWorld {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

async fn world(extra_config: &str) -> PodWorld {
    let world = World::start(&image(), "test/stream", extra_config).await;
    let pod = world
        .run_pod(&PodOptions::named("stream").namespace(NAMESPACE))
        .await;
    PodWorld { world, pod }
}

/// Creates and starts a container running `command` in `pod`, with stdin open if
/// `stdin`.
async fn container(w: &World, pod: &str, name: &str, command: &[&str], stdin: bool) -> String {
    let mut config = w.config(name, command);
    config.stdin = stdin;
    w.run(pod, config).await
}

/// What a session produced.
#[derive(Debug, Default)]
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// The status on the error stream (v4 JSON), if any.
    status: Option<serde_json::Value>,
}

impl Output {
    /// The exit code kubectl would report.
    fn exit_code(&self) -> i32 {
        match &self.status {
            None => panic!("no status received"),
            Some(s) if s["status"] == "Success" => 0,
            Some(s) => s["details"]["causes"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["reason"] == "ExitCode"))
                .and_then(|c| c["message"].as_str())
                .and_then(|m| m.parse().ok())
                .unwrap_or_else(|| panic!("failure without exit code: {s}")),
        }
    }
}

/// Input a test feeds a session: stdin chunks (EOF after the last unless `keep_open`)
/// and resizes, sent before stdin.
#[derive(Default, Clone)]
struct Input {
    stdin: Vec<Vec<u8>>,
    keep_open: bool,
    resize: Option<(u16, u16)>,
    /// Stop reading once stdout contains this (attach sessions never end by themselves).
    until: Option<Vec<u8>>,
}

fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').expect("URL has a path");
    (host.to_string(), format!("/{path}"))
}

/// Sends the HTTP upgrade and reads the response head; returns the status code and the
/// negotiated protocol header.
async fn upgrade(tcp: &mut TcpStream, url: &str, protocol: &str) -> (u16, String) {
    let (host, path) = split_url(url);
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            tcp.read(&mut byte).await.unwrap(),
            1,
            "response head cut short"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let code = head[9..12].parse().unwrap();
    let negotiated = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-stream-protocol-version:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    (code, negotiated)
}

async fn spdy_stdio(url: &str, streams: [bool; 4], input: Input) -> Output {
    let [stdin, stdout, stderr, tty] = streams;
    let mut tcp = TcpStream::connect(split_url(url).0).await.unwrap();
    let (code, protocol) = upgrade(&mut tcp, url, "v4.channel.k8s.io").await;
    assert_eq!((code, protocol.as_str()), (101, "v4.channel.k8s.io"));
    let conn = crust_stream::Connection::client(tcp);
    let open = |kind: &'static str| {
        let conn = &conn;
        async move {
            conn.open(crust_stream::Headers::new().with("streamType", kind), false)
                .await
                .unwrap()
        }
    };
    let error = open("error").await;
    let s_in = if stdin {
        Some(open("stdin").await)
    } else {
        None
    };
    let s_out = if stdout {
        Some(open("stdout").await)
    } else {
        None
    };
    let s_err = if stderr {
        Some(open("stderr").await)
    } else {
        None
    };
    let s_resize = if tty {
        Some(open("resize").await)
    } else {
        None
    };
    if let (Some(r), Some((w, h))) = (&s_resize, input.resize) {
        r.send(format!(r#"{{"Width":{w},"Height":{h}}}"#))
            .await
            .unwrap();
    }
    if let Some(s) = &s_in {
        for chunk in &input.stdin {
            s.send(chunk.clone()).await.unwrap();
        }
        if !input.keep_open {
            s.close().unwrap();
        }
    }
    let read_all = |s: Option<crust_stream::SpdyStream>, until: Option<Vec<u8>>| async move {
        let mut out = Vec::new();
        if let Some(s) = s {
            while let Some(chunk) = s.recv().await {
                out.extend_from_slice(&chunk);
                if until.as_ref().is_some_and(|u| contains(&out, u)) {
                    break;
                }
            }
        }
        out
    };
    let (out, err) = tokio::join!(read_all(s_out, input.until.clone()), read_all(s_err, None));
    let mut output = Output {
        stdout: out,
        stderr: err,
        status: None,
    };
    if input.until.is_none() {
        let mut status = Vec::new();
        while let Some(chunk) = error.recv().await {
            status.extend_from_slice(&chunk);
        }
        output.status = Some(serde_json::from_slice(&status).unwrap());
    }
    output
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn ws_connect(
    url: &str,
    protocol: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut req = ws_url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let tcp = TcpStream::connect(split_url(url).0).await.unwrap();
    let (ws, resp) =
        tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some(protocol)
    );
    ws
}

async fn ws_stdio(url: &str, _streams: [bool; 4], input: Input) -> Output {
    let ws = ws_connect(url, "v5.channel.k8s.io").await;
    let (mut tx, mut rx) = ws.split();
    if let Some((w, h)) = input.resize {
        let mut frame = vec![4u8];
        frame.extend_from_slice(format!(r#"{{"Width":{w},"Height":{h}}}"#).as_bytes());
        tx.send(Message::Binary(frame.into())).await.unwrap();
    }
    for chunk in &input.stdin {
        let mut frame = vec![0u8];
        frame.extend_from_slice(chunk);
        tx.send(Message::Binary(frame.into())).await.unwrap();
    }
    if !input.keep_open && !input.stdin.is_empty() {
        // v5: close the stdin channel.
        tx.send(Message::Binary(vec![255u8, 0].into()))
            .await
            .unwrap();
    }
    let mut out = Output::default();
    let mut status = Vec::new();
    while let Some(msg) = rx.next().await {
        let Ok(Message::Binary(b)) = msg else {
            continue;
        };
        if b.is_empty() {
            continue;
        }
        match b[0] {
            1 => out.stdout.extend_from_slice(&b[1..]),
            2 => out.stderr.extend_from_slice(&b[1..]),
            3 => status.extend_from_slice(&b[1..]),
            c => panic!("unexpected channel {c}"),
        }
        if input
            .until
            .as_ref()
            .is_some_and(|u| contains(&out.stdout, u))
        {
            return out;
        }
    }
    if !status.is_empty() {
        out.status = Some(serde_json::from_slice(&status).unwrap());
    }
    out
}

async fn stdio(transport: Transport, url: &str, streams: [bool; 4], input: Input) -> Output {
    match transport {
        Transport::Spdy => spdy_stdio(url, streams, input).await,
        Transport::WebSocket => ws_stdio(url, streams, input).await,
    }
}

async fn exec_url(d: &Crustd, id: &str, cmd: &[&str], streams: [bool; 4]) -> String {
    let [stdin, stdout, stderr, tty] = streams;
    d.runtime()
        .await
        .unwrap()
        .exec(ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin,
            stdout,
            stderr,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .url
}

async fn exec(
    w: &World,
    transport: Transport,
    id: &str,
    cmd: &[&str],
    streams: [bool; 4],
    input: Input,
) -> Output {
    let url = exec_url(&w.d, id, cmd, streams).await;
    stdio(transport, &url, streams, input).await
}

const OUT_ERR: [bool; 4] = [false, true, true, false];
const IN_OUT: [bool; 4] = [true, true, false, false];
const TTY: [bool; 4] = [true, true, false, true];

#[tokio::test]
async fn exec_over_spdy_and_websocket() {
    let w = world("").await;
    let id = container(&w, &w.pod, "sleeper", &["sleep", "1000"], false).await;
    for t in TRANSPORTS {
        let out = exec(
            &w,
            t,
            &id,
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            OUT_ERR,
            Input::default(),
        )
        .await;
        assert_eq!(out.stdout, b"out\n", "{t:?}");
        assert_eq!(out.stderr, b"err\n", "{t:?}");
        assert_eq!(out.exit_code(), 3, "{t:?}: {:?}", out.status);

        let out = exec(
            &w,
            t,
            &id,
            &["cat"],
            IN_OUT,
            Input {
                stdin: vec![b"hello ".to_vec(), b"stdin\n".to_vec()],
                ..Default::default()
            },
        )
        .await;
        assert_eq!(out.stdout, b"hello stdin\n", "{t:?}: stdin EOF ends cat");
        assert_eq!(out.exit_code(), 0, "{t:?}");

        // A terminal: the size the client sets is what the process sees.
        let out = exec(
            &w,
            t,
            &id,
            &["sh"],
            TTY,
            Input {
                resize: Some((100, 40)),
                stdin: vec![b"stty size; exit 7\n".to_vec()],
                keep_open: true,
                ..Default::default()
            },
        )
        .await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("40 100"), "{t:?}: {text:?}");
        assert_eq!(out.exit_code(), 7, "{t:?}");

        // 100 MiB of output, none lost.
        let out = exec(
            &w,
            t,
            &id,
            &["head", "-c", "104857600", "/dev/zero"],
            [false, true, false, false],
            Input::default(),
        )
        .await;
        assert_eq!(out.stdout.len(), 100 << 20, "{t:?}");
        assert!(out.stdout.iter().all(|&b| b == 0), "{t:?}");
        assert_eq!(out.exit_code(), 0, "{t:?}");
    }
}

#[tokio::test]
async fn exec_requests_are_validated_and_tokens_are_single_use_and_expire() {
    let w = world("[streaming]\ntoken_timeout = \"300ms\"\n").await;
    let id = container(&w, &w.pod, "sleeper", &["sleep", "1000"], false).await;
    let mut rt = w.d.runtime().await.unwrap();
    let base = ExecRequest {
        container_id: id.clone(),
        cmd: vec!["true".into()],
        stdout: true,
        ..Default::default()
    };
    let cases = [
        (
            ExecRequest {
                container_id: "nope".into(),
                ..base.clone()
            },
            Code::NotFound,
            "nope",
        ),
        (
            ExecRequest {
                cmd: vec![],
                ..base.clone()
            },
            Code::InvalidArgument,
            "cmd",
        ),
        (
            ExecRequest {
                tty: true,
                stderr: true,
                ..base.clone()
            },
            Code::InvalidArgument,
            "tty and stderr",
        ),
        (
            ExecRequest {
                stdout: false,
                ..base.clone()
            },
            Code::InvalidArgument,
            "one of stdin, stdout, or stderr",
        ),
    ];
    for (req, code, text) in cases {
        let status = rt.exec(req).await.unwrap_err();
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(status.message().contains(text), "{}", status.message());
    }
    let status = rt
        .port_forward(PortForwardRequest {
            pod_sandbox_id: w.pod.clone(),
            port: vec![70000],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());

    // A token works once.
    let url = exec_url(
        &w.d,
        &id,
        &["sh", "-c", "exit 0"],
        [false, true, false, false],
    )
    .await;
    let out = stdio(
        Transport::Spdy,
        &url,
        [false, true, false, false],
        Input::default(),
    )
    .await;
    assert_eq!(out.exit_code(), 0);
    let mut tcp = TcpStream::connect(split_url(&url).0).await.unwrap();
    let (code, _) = upgrade(&mut tcp, &url, "v4.channel.k8s.io").await;
    assert_eq!(code, 404, "a used token is refused");

    // An unknown protocol is refused without spending a session.
    let url = exec_url(
        &w.d,
        &id,
        &["sh", "-c", "exit 0"],
        [false, true, false, false],
    )
    .await;
    let mut tcp = TcpStream::connect(split_url(&url).0).await.unwrap();
    let (code, _) = upgrade(&mut tcp, &url, "v9.channel.k8s.io").await;
    assert_eq!(code, 403);

    // And only within its timeout.
    let url = exec_url(
        &w.d,
        &id,
        &["sh", "-c", "exit 0"],
        [false, true, false, false],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut tcp = TcpStream::connect(split_url(&url).0).await.unwrap();
    let (code, _) = upgrade(&mut tcp, &url, "v4.channel.k8s.io").await;
    assert_eq!(code, 404, "an expired token is refused");

    // Streams need a running container.
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    let status = rt.exec(base).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn attach_joins_the_running_containers_stdio() {
    let w = world("").await;
    let id = container(&w, &w.pod, "cat", &["cat"], true).await;
    for (i, t) in TRANSPORTS.into_iter().enumerate() {
        let url =
            w.d.runtime()
                .await
                .unwrap()
                .attach(AttachRequest {
                    container_id: id.clone(),
                    stdin: true,
                    stdout: true,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .url;
        let line = format!("ping {i}\n").into_bytes();
        let out = stdio(
            t,
            &url,
            IN_OUT,
            Input {
                stdin: vec![line.clone()],
                keep_open: true,
                until: Some(line.clone()),
                ..Default::default()
            },
        )
        .await;
        assert!(contains(&out.stdout, &line), "{t:?}: {:?}", out.stdout);
    }
    // Detaching left the container running, and its output also went to the log.
    let log = std::fs::read_to_string(w.logs.join("stream/cat.log")).unwrap();
    assert!(
        log.contains("stdout F ping 0") && log.contains("stdout F ping 1"),
        "{log}"
    );
    let status =
        w.d.runtime()
            .await
            .unwrap()
            .container_status(crust_proto::runtime::v1::ContainerStatusRequest {
                container_id: id,
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
    assert_eq!(
        status.state,
        i32::from(crust_proto::runtime::v1::ContainerState::ContainerRunning)
    );
}

async fn forward_url(d: &Crustd, pod: &str, port: u16) -> String {
    d.runtime()
        .await
        .unwrap()
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.into(),
            port: vec![port.into()],
        })
        .await
        .unwrap()
        .into_inner()
        .url
}

/// One HTTP GET through a port forward; returns the response and what came on the error
/// stream.
async fn get_through(transport: Transport, url: &str, port: u16) -> (String, String) {
    let request = b"GET / HTTP/1.0\r\n\r\n".to_vec();
    match transport {
        Transport::Spdy => {
            let mut tcp = TcpStream::connect(split_url(url).0).await.unwrap();
            let (code, protocol) = upgrade(&mut tcp, url, "portforward.k8s.io").await;
            assert_eq!((code, protocol.as_str()), (101, "portforward.k8s.io"));
            let conn = crust_stream::Connection::client(tcp);
            let headers = |kind: &str| {
                crust_stream::Headers::new()
                    .with("streamType", kind)
                    .with("port", port.to_string())
                    .with("requestID", "0")
            };
            let error = conn.open(headers("error"), false).await.unwrap();
            let data = conn.open(headers("data"), false).await.unwrap();
            data.send(request).await.unwrap();
            let mut response = Vec::new();
            while let Some(chunk) = data.recv().await {
                response.extend_from_slice(&chunk);
            }
            let mut err = Vec::new();
            while let Some(chunk) = error.recv().await {
                err.extend_from_slice(&chunk);
            }
            (
                String::from_utf8_lossy(&response).into_owned(),
                String::from_utf8_lossy(&err).into_owned(),
            )
        }
        Transport::WebSocket => {
            let ws = ws_connect(&format!("{url}?port={port}"), "v4.channel.k8s.io").await;
            let (mut tx, mut rx) = ws.split();
            let mut response = Vec::new();
            let mut err = Vec::new();
            let mut seen_port = [false; 2];
            let mut sent = false;
            while let Some(Ok(msg)) = rx.next().await {
                let Message::Binary(b) = msg else { continue };
                let channel = b[0] as usize;
                assert!(channel < 2, "one port: channels 0 and 1");
                if !seen_port[channel] {
                    // Each channel opens with the port number, little endian.
                    assert_eq!(&b[1..], port.to_le_bytes(), "channel {channel}");
                    seen_port[channel] = true;
                } else if channel == 0 {
                    response.extend_from_slice(&b[1..]);
                } else {
                    err.extend_from_slice(&b[1..]);
                }
                if seen_port == [true, true] && !sent {
                    let mut frame = vec![0u8];
                    frame.extend_from_slice(&request);
                    tx.send(Message::Binary(frame.into())).await.unwrap();
                    sent = true;
                }
            }
            (
                String::from_utf8_lossy(&response).into_owned(),
                String::from_utf8_lossy(&err).into_owned(),
            )
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn port_forward_reaches_the_pods_loopback_also_on_the_host_network() {
    let w = world("").await;
    container(
        &w,
        &w.pod,
        "httpd",
        &["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www"],
        false,
    )
    .await;
    // The host's own network: a port that is free here.
    let host_pod = w
        .run_pod(
            &PodOptions::named("hostnet")
                .namespace(NAMESPACE)
                .host_network(),
        )
        .await;
    let host_port = free_port();
    let listen = format!("127.0.0.1:{host_port}");
    container(
        &w,
        &host_pod,
        "httpd",
        &["httpd", "-f", "-p", &listen, "-h", "/www"],
        false,
    )
    .await;
    for t in TRANSPORTS {
        for (pod, port) in [(&w.pod, 8080), (&host_pod, host_port)] {
            // httpd may still be starting: a refused connect is reported, then retried.
            let mut response = String::new();
            for _ in 0..50 {
                let url = forward_url(&w.d, pod, port).await;
                let (got, err) = get_through(t, &url, port).await;
                if err.is_empty() {
                    response = got;
                    break;
                }
                assert!(err.contains("refused"), "{t:?}: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(
                response.starts_with("HTTP/1.1 200 OK"),
                "{t:?} {port}: {response:?}"
            );
            assert!(response.contains("hello from the pod"), "{t:?}: {response}");
        }
    }
    // A port nobody listens on: the error stream says so.
    for t in TRANSPORTS {
        let url = forward_url(&w.d, &w.pod, 9).await;
        let (response, err) = get_through(t, &url, 9).await;
        assert!(response.is_empty(), "{t:?}: {response}");
        assert!(
            err.contains("error forwarding port 9") && err.contains("refused"),
            "{t:?}: {err}"
        );
    }
}

#[tokio::test]
async fn a_hundred_concurrent_exec_sessions() {
    let w = world("").await;
    let id = container(&w, &w.pod, "sleeper", &["sleep", "1000"], false).await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let url = exec_url(
            &w.d,
            &id,
            &["sh", "-c", &format!("echo session {i}")],
            [false, true, false, false],
        )
        .await;
        let t = TRANSPORTS[i % 2];
        tasks.push(tokio::spawn(async move {
            (
                i,
                stdio(t, &url, [false, true, false, false], Input::default()).await,
            )
        }));
    }
    for task in tasks {
        let (i, out) = task.await.unwrap();
        assert_eq!(out.stdout, format!("session {i}\n").as_bytes());
        assert_eq!(out.exit_code(), 0);
    }
}

#[tokio::test]
async fn a_client_that_goes_away_takes_its_exec_with_it() {
    let w = world("").await;
    let id = container(&w, &w.pod, "sleeper", &["sleep", "1000"], false).await;
    let exec_cgroups = || {
        w.sb.cgroups()
            .into_iter()
            .filter(|d| {
                d.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("exec-"))
            })
            .count()
    };
    for t in TRANSPORTS {
        let url = exec_url(
            &w.d,
            &id,
            &["sh", "-c", "sleep 1000 & echo started; wait"],
            [false, true, false, false],
        )
        .await;
        let session = tokio::spawn(async move {
            stdio(
                t,
                &url,
                [false, true, false, false],
                Input {
                    until: Some(b"started".to_vec()),
                    ..Default::default()
                },
            )
            .await
        });
        let out = session.await.unwrap();
        assert_eq!(out.stdout, b"started\n", "{t:?}");
        // The client is gone (its connection dropped): the exec's cgroup, and with it the
        // shell and its background sleep, must go too.
        let mut left = exec_cgroups();
        for _ in 0..200 {
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            left = exec_cgroups();
        }
        assert_eq!(left, 0, "{t:?}: exec cgroups left behind");
    }
}

/// crustctl's own client library (what `crustctl exec/attach/port-forward` run) against
/// the real server, over both transports.
#[tokio::test]
async fn crustctl_stream_client_works_against_crustd() {
    use crust_ctl::stream_client::{self as sc, StreamOpts};
    let w = world("").await;
    let id = container(&w, &w.pod, "sleeper", &["sleep", "1000"], false).await;
    container(
        &w,
        &w.pod,
        "httpd",
        &["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www"],
        false,
    )
    .await;
    for t in [sc::Transport::Spdy, sc::Transport::WebSocket] {
        let url = exec_url(
            &w.d,
            &id,
            &["sh", "-c", "cat; exit 5"],
            [true, true, false, false],
        )
        .await;
        let opts = StreamOpts {
            stdin: true,
            stdout: true,
            ..Default::default()
        };
        let out = sc::exec_collect(&url, t, opts, b"through crustctl\n")
            .await
            .unwrap();
        assert_eq!(out.stdout, b"through crustctl\n", "{t:?}");
        assert_eq!(out.exit_code, 5, "{t:?}");

        // Port forward: a local connection carried to httpd in the pod (which may still
        // be starting: then the forward reports the refused connect and is retried).
        let mut response = String::new();
        for _ in 0..50 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let local = listener.local_addr().unwrap();
            let url = forward_url(&w.d, &w.pod, 8080).await;
            let forward = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                sc::port_forward_conn(&url, t, 8080, tcp).await
            });
            let mut client = TcpStream::connect(local).await.unwrap();
            client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
            let mut got = Vec::new();
            let _ = client.read_to_end(&mut got).await;
            let result = forward.await.unwrap();
            response = String::from_utf8_lossy(&got).into_owned();
            match result {
                Ok(()) if !got.is_empty() => break,
                Err(e) => assert!(e.to_string().contains("refused"), "{t:?}: {e}"),
                Ok(()) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{t:?}: {response}");
    }
}
