//! In-process connection tests over `tokio::io::duplex`.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::timeout;

use super::*;
use crate::spdy::frame::RstStatus;

pub(super) const LIMIT: Duration = Duration::from_secs(30);

fn pair() -> (Connection, Connection) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    (Connection::client(a), Connection::server(b))
}

/// Replies to every stream and echoes its data back until the peer's FIN.
fn spawn_echo_server(server: Connection) -> tokio::task::JoinHandle<Connection> {
    tokio::spawn(async move {
        while let Some(stream) = server.accept().await {
            stream
                .reply(Headers::new().with("x-echo", "1"))
                .expect("reply");
            tokio::spawn(async move {
                while let Some(chunk) = stream.recv().await {
                    stream.send(chunk).await.expect("echo send");
                }
                stream.close().expect("close");
            });
        }
        server
    })
}

pub(super) async fn read_all(stream: &SpdyStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.recv().await {
        out.extend_from_slice(&chunk);
    }
    out
}

pub(super) fn pattern(len: usize) -> Bytes {
    (0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>().into()
}

#[tokio::test]
async fn three_streams_echo_with_their_headers() {
    let (client, server) = pair();
    let server_task = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let stream = server.accept().await.expect("stream");
            seen.push((
                stream.id(),
                stream.headers().get("streamtype").map(str::to_owned),
            ));
            stream.reply(Headers::new()).expect("reply");
            tokio::spawn(async move {
                while let Some(chunk) = stream.recv().await {
                    stream.send(chunk).await.expect("echo");
                }
                stream.close().expect("close");
            });
        }
        (server, seen)
    });
    let kinds = ["error", "stdout", "stdin"];
    let mut streams = Vec::new();
    for kind in kinds {
        let h = Headers::new()
            .with("streamType", kind)
            .with("requestID", "0");
        streams.push(
            timeout(LIMIT, client.open(h, false))
                .await
                .expect("timely")
                .expect("open"),
        );
    }
    for (i, s) in streams.iter().enumerate() {
        s.send(format!("hello {i}")).await.expect("send");
        s.close().expect("close");
    }
    for (i, s) in streams.iter().enumerate() {
        let got = timeout(LIMIT, read_all(s)).await.expect("timely");
        assert_eq!(
            got,
            format!("hello {i}").into_bytes(),
            "echo on stream {}",
            s.id()
        );
    }
    let (_server, seen) = server_task.await.expect("server");
    let ids: Vec<_> = seen.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [1, 3, 5], "client stream ids are odd and increasing");
    let got: Vec<_> = seen.iter().map(|(_, k)| k.as_deref()).collect();
    assert_eq!(got, [Some("error"), Some("stdout"), Some("stdin")]);
}

#[tokio::test]
async fn twenty_mib_echo_through_small_windows() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let small = Config {
        stream_window: 16 * 1024,
        conn_window: 32 * 1024,
        ..Config::for_role(Role::Client)
    };
    let client = Connection::with_config(a, Role::Client, small.clone());
    let server_cfg = Config {
        flow_control: FlowControl::Auto,
        ..small
    };
    let _server = spawn_echo_server(Connection::with_config(b, Role::Server, server_cfg));
    let stream = client
        .open(Headers::new().with("streamtype", "data"), false)
        .await
        .expect("open");
    let data = pattern(20 << 20);
    let sender = {
        let (stream, data) = (stream.clone(), data.clone());
        tokio::spawn(async move {
            stream.send(data).await.expect("send");
            stream.close().expect("close");
        })
    };
    let got = timeout(LIMIT, read_all(&stream))
        .await
        .expect("20 MiB within the limit");
    sender.await.expect("sender");
    assert_eq!(got.len(), data.len(), "length echoed");
    assert!(got == data, "content echoed intact");
    assert!(client.shared().flow_control(), "client honoured windows");
}

#[tokio::test]
async fn half_close_lets_the_other_direction_go_on() {
    let (client, server) = pair();
    let stream = tokio::spawn(async move {
        let s = client.open(Headers::new(), false).await.expect("open");
        s.send("request").await.expect("send");
        s.close().expect("close");
        assert!(
            matches!(s.send("late").await, Err(Error::StreamClosed { .. })),
            "send after close"
        );
        let reply = read_all(&s).await;
        (client, reply)
    });
    let s = server.accept().await.expect("accept");
    s.reply(Headers::new()).expect("reply");
    assert_eq!(read_all(&s).await, b"request", "request before FIN");
    s.send("response").await.expect("send after peer FIN");
    s.close().expect("close");
    let (_client, reply) = timeout(LIMIT, stream)
        .await
        .expect("timely")
        .expect("client");
    assert_eq!(reply, b"response");
}

#[tokio::test]
async fn open_with_fin_still_gets_data_back() {
    let (client, server) = pair();
    let _server = spawn_echo_server(server);
    let s = client.open(Headers::new(), true).await.expect("open");
    assert!(
        timeout(LIMIT, s.recv()).await.expect("timely").is_none(),
        "nothing to echo"
    );
}

#[tokio::test]
async fn reset_ends_reads_and_fails_sends() {
    let (client, server) = pair();
    let opener = tokio::spawn(async move {
        let s = client.open(Headers::new(), false).await.expect("open");
        (client, s)
    });
    let s = server.accept().await.expect("accept");
    s.reply(Headers::new()).expect("reply");
    let (_client, c) = opener.await.expect("opener");
    s.reset(RstStatus::CANCEL);
    assert!(
        timeout(LIMIT, c.recv()).await.expect("timely").is_none(),
        "read ends on RST"
    );
    assert_eq!(c.reset_status(), Some(RstStatus::CANCEL));
    let res = c.send("x").await;
    assert!(
        matches!(res, Err(Error::StreamReset { status: 5, .. })),
        "{res:?}"
    );
}

#[tokio::test]
async fn unanswered_stream_dropped_by_server_fails_open() {
    let (client, server) = pair();
    tokio::spawn(async move {
        while let Some(s) = server.accept().await {
            drop(s);
        }
    });
    let res = timeout(LIMIT, client.open(Headers::new(), false))
        .await
        .expect("timely");
    assert!(matches!(res, Err(Error::StreamReset { .. })), "{res:?}");
}

#[tokio::test]
async fn ping_both_ways() {
    let (client, server) = pair();
    timeout(LIMIT, client.ping())
        .await
        .expect("timely")
        .expect("client ping");
    timeout(LIMIT, server.ping())
        .await
        .expect("timely")
        .expect("server ping");
}

#[tokio::test]
async fn goaway_refuses_new_streams() {
    let (client, server) = pair();
    server.goaway();
    // The pong is queued behind the GOAWAY, so it has been seen by then.
    client.ping().await.expect("ping");
    let res = client.open(Headers::new(), false).await;
    assert!(matches!(res, Err(Error::GoAway)), "{res:?}");
}

#[tokio::test]
async fn peer_disconnect_ends_accept_and_reads() {
    let (client, server) = pair();
    let opener = tokio::spawn(async move {
        let s = client.open(Headers::new(), false).await.expect("open");
        (client, s)
    });
    let s = server.accept().await.expect("accept");
    s.reply(Headers::new()).expect("reply");
    let (client, c) = opener.await.expect("opener");
    drop((client, c));
    assert!(
        timeout(LIMIT, s.recv()).await.expect("timely").is_none(),
        "read ends"
    );
    assert!(
        timeout(LIMIT, server.accept())
            .await
            .expect("timely")
            .is_none(),
        "accept ends"
    );
    timeout(LIMIT, server.closed()).await.expect("closed");
    assert!(server.is_closed());
}

#[tokio::test]
async fn raw_socket_close_is_noticed() {
    let (raw, b) = tokio::io::duplex(1024);
    let server = Connection::server(b);
    drop(raw);
    assert!(
        timeout(LIMIT, server.accept())
            .await
            .expect("timely")
            .is_none()
    );
    let (raw, b) = tokio::io::duplex(1024);
    let client = Connection::client(b);
    drop(raw);
    let res = timeout(LIMIT, client.open(Headers::new(), false))
        .await
        .expect("timely");
    assert!(matches!(res, Err(Error::ConnectionClosed)), "{res:?}");
}
