//! Connection tests against a hand-driven raw peer: spdystream's lack of
//! flow control, and a peer that enforces a small window.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::timeout;

use super::tests::{LIMIT, pattern, read_all};
use super::*;
use crate::spdy::frame::{Decoder, Encoder, SETTINGS_INITIAL_WINDOW_SIZE, Setting};

/// Reads frames off a raw peer socket until `n` arrive.
async fn raw_frames(
    raw: &mut DuplexStream,
    dec: &mut Decoder,
    buf: &mut BytesMut,
    n: usize,
) -> Vec<Frame> {
    let mut out = Vec::new();
    while out.len() < n {
        if let Some(f) = dec.decode(buf).expect("decode") {
            out.push(f);
            continue;
        }
        let read = raw.read_buf(buf).await.expect("read");
        assert!(read > 0, "server hung up after {} frames", out.len());
    }
    out
}

/// kubectl's spdystream neither sends nor honours WINDOW_UPDATE and writes
/// big DATA frames: the server must take 1 MiB in one frame and send 1 MiB
/// back without waiting, and send it no SETTINGS or WINDOW_UPDATE.
#[tokio::test]
async fn spdystream_peer_without_flow_control() {
    let (mut raw, b) = tokio::io::duplex(256 * 1024);
    let server = Connection::server(b);
    let mut enc = Encoder::new();
    let mut wire = Vec::new();
    let headers = Headers::new().with("streamtype", "data").with("port", "80");
    let syn = Frame::SynStream {
        stream_id: 1,
        associated_id: 0,
        priority: 0,
        slot: 0,
        flags: 0,
        headers,
    };
    enc.encode(&syn, &mut wire).expect("encode");
    let big = pattern(1 << 20);
    enc.encode(
        &Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: big.clone(),
        },
        &mut wire,
    )
    .expect("encode");
    let writer = tokio::spawn(async move {
        raw.write_all(&wire).await.expect("write");
        raw
    });
    let s = timeout(LIMIT, server.accept())
        .await
        .expect("timely")
        .expect("accept");
    assert_eq!(s.headers().get("port"), Some("80"));
    s.reply(Headers::new()).expect("reply");
    let mut raw = writer.await.expect("writer");
    let server_side = tokio::spawn(async move {
        let got = read_all(&s).await;
        s.send(got.clone()).await.expect("send back");
        s.close().expect("close");
        (server, s, got)
    });
    let (mut dec, mut buf) = (Decoder::new(), BytesMut::new());
    let mut echoed = Vec::new();
    let first = raw_frames(&mut raw, &mut dec, &mut buf, 1).await;
    assert!(
        matches!(first[0], Frame::SynReply { stream_id: 1, .. }),
        "{:?}",
        first[0]
    );
    loop {
        let f = timeout(LIMIT, raw_frames(&mut raw, &mut dec, &mut buf, 1))
            .await
            .expect("no stall");
        match &f[0] {
            Frame::Data {
                stream_id: 1,
                flags,
                data,
            } => {
                echoed.extend_from_slice(data);
                if flags & FLAG_FIN != 0 {
                    break;
                }
            }
            other => panic!("spdystream peer must see only DATA, got {other:?}"),
        }
    }
    let (_server, _s, got) = server_side.await.expect("server side");
    assert!(got == big, "server received the 1 MiB frame intact");
    assert!(echoed == big, "1 MiB sent back without WINDOW_UPDATE");
}

/// A peer that announces a 1000-byte window gets exactly 1000 bytes until
/// its WINDOW_UPDATE, then the rest.
#[tokio::test]
async fn server_honours_a_flow_controlling_peers_window() {
    let (mut raw, b) = tokio::io::duplex(256 * 1024);
    let server = Connection::server(b);
    let mut enc = Encoder::new();
    let mut wire = Vec::new();
    let entry = Setting {
        flags: 0,
        id: SETTINGS_INITIAL_WINDOW_SIZE,
        value: 1000,
    };
    enc.encode(
        &Frame::Settings {
            flags: 0,
            entries: vec![entry],
        },
        &mut wire,
    )
    .expect("encode");
    let syn = Frame::SynStream {
        stream_id: 1,
        associated_id: 0,
        priority: 0,
        slot: 0,
        flags: FLAG_FIN,
        headers: Headers::new(),
    };
    enc.encode(&syn, &mut wire).expect("encode");
    raw.write_all(&wire).await.expect("write");
    let s = timeout(LIMIT, server.accept())
        .await
        .expect("timely")
        .expect("accept");
    let sender = tokio::spawn(async move {
        s.send(pattern(5000)).await.expect("send");
        s.close().expect("close");
        (server, s)
    });
    let (mut dec, mut buf) = (Decoder::new(), BytesMut::new());
    let mut got = 0;
    let mut fin = false;
    let mut saw_settings = false;
    let mut updated = false;
    while !fin {
        let next = timeout(
            Duration::from_millis(300),
            raw_frames(&mut raw, &mut dec, &mut buf, 1),
        )
        .await;
        let Ok(frames) = next else {
            assert_eq!(got, 1000, "stalled exactly at the peer's window");
            assert!(!updated, "stalled again after the update");
            let wu = Frame::WindowUpdate {
                stream_id: 1,
                delta: 4000,
            };
            let mut out = Vec::new();
            enc.encode(&wu, &mut out).expect("encode");
            raw.write_all(&out).await.expect("write");
            updated = true;
            continue;
        };
        match &frames[0] {
            Frame::Settings { .. } => saw_settings = true,
            Frame::Data { data, flags, .. } => {
                got += data.len();
                fin = flags & FLAG_FIN != 0;
                assert!(
                    updated || got <= 1000,
                    "sent {got} bytes into a 1000-byte window"
                );
            }
            _ => {}
        }
    }
    assert!(
        saw_settings,
        "server announced its window to a flow-controlling peer"
    );
    assert!(
        updated && got == 5000,
        "rest sent after WINDOW_UPDATE: {got}"
    );
    drop(sender.await.expect("sender"));
}
