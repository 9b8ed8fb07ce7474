//! Frame tests. The SYN_STREAM/SYN_REPLY vectors were produced independently
//! with CPython's zlib (1.2.13): `compressobj(9, zdict=SPDY3_DICTIONARY)`,
//! one context per direction, `Z_SYNC_FLUSH` after each block, laid out as
//! spdystream writes them (priority 0, slot 0, lower-case names).

use bytes::{Bytes, BytesMut};

use super::*;
use crate::spdy::dictionary::SPDY3_DICTIONARY;

// Client -> server: kubectl port-forward's error then data stream.
const SYN_STREAM_1: &[u8] = &[
    0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3d, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0x25, 0x3a, 0x48, 0xf9, 0x5b, 0x04, 0x4e,
    0xea, 0x16, 0x06, 0x16, 0x06, 0x40, 0x9a, 0xb3, 0x08, 0x12, 0x5f, 0x99, 0xa0, 0x74, 0xcc, 0x68,
    0x00, 0x4e, 0x89, 0x25, 0x45, 0xa9, 0x89, 0xb9, 0xd0, 0xc2, 0x86, 0x35, 0x15, 0x14, 0x15, 0x00,
    0x00, 0x00, 0x00, 0xff, 0xff,
];
const SYN_STREAM_3: &[u8] = &[
    0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x22, 0x53, 0x33, 0xa8, 0xa4, 0x4a, 0x04, 0x00, 0x00, 0x00, 0xff, 0xff,
];
// Server -> client: the empty reply kubelet sends, then one with FIN and a
// NUL-joined multi-value header.
const SYN_REPLY_1: &[u8] = &[
    0x80, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x01, 0x78, 0xf9, 0xe3, 0xc6,
    0xa7, 0xc2, 0x02, 0xa6, 0x23, 0x06, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
];
const SYN_REPLY_3: &[u8] = &[
    0x80, 0x03, 0x00, 0x02, 0x01, 0x00, 0x00, 0x1b, 0x00, 0x00, 0x00, 0x03, 0x02, 0x02, 0x46, 0x50,
    0x9a, 0xac, 0xd0, 0xcd, 0x2d, 0xcd, 0x29, 0xc9, 0x04, 0x97, 0x8c, 0x0c, 0x49, 0x00, 0x00, 0x00,
    0x00, 0xff, 0xff,
];

fn syn(id: u32, kind: &str) -> Frame {
    Frame::SynStream {
        stream_id: id,
        associated_id: 0,
        priority: 0,
        slot: 0,
        flags: 0,
        headers: Headers::new()
            .with("port", "8080")
            .with("requestID", "0")
            .with("streamType", kind),
    }
}

fn replies() -> [Frame; 2] {
    [
        Frame::SynReply {
            stream_id: 1,
            flags: 0,
            headers: Headers::new(),
        },
        Frame::SynReply {
            stream_id: 3,
            flags: FLAG_FIN,
            headers: Headers::new().with("x-multi", "a").with("x-multi", "b"),
        },
    ]
}

fn decode_all(dec: &mut Decoder, bytes: &[u8]) -> Vec<Frame> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = dec.decode(&mut buf).expect("decode") {
        out.push(f);
    }
    assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
    out
}

#[test]
fn dictionary_is_the_spdy3_one() {
    let mut z = flate2::Compress::new(flate2::Compression::best(), true);
    let adler = z.set_dictionary(SPDY3_DICTIONARY).expect("set dictionary");
    assert_eq!(adler, 0xe3c6_a7c2, "Adler-32 of the dictionary");
    assert!(SPDY3_DICTIONARY.starts_with(b"\0\0\0\x07options"));
    assert!(SPDY3_DICTIONARY.ends_with(b",*,enq=0."));
}

#[test]
fn captured_syn_streams_decode_in_one_context() {
    let mut dec = Decoder::new();
    let wire = [SYN_STREAM_1, SYN_STREAM_3].concat();
    assert_eq!(
        decode_all(&mut dec, &wire),
        vec![syn(1, "error"), syn(3, "data")]
    );
}

#[test]
fn captured_syn_replies_decode_in_one_context() {
    let mut dec = Decoder::new();
    let wire = [SYN_REPLY_1, SYN_REPLY_3].concat();
    let frames = decode_all(&mut dec, &wire);
    assert_eq!(frames, replies());
    let Frame::SynReply { headers, .. } = &frames[1] else {
        panic!("not a reply")
    };
    assert_eq!(headers.get_all("x-multi").collect::<Vec<_>>(), ["a", "b"]);
}

#[test]
fn syn_frames_reencode_to_the_captured_bytes() {
    // zlib-rs at the same level emits zlib's exact deflate stream; were that
    // ever to drift, the decode round trip below still has to hold.
    let mut enc = Encoder::new();
    let mut out = Vec::new();
    enc.encode(&syn(1, "error"), &mut out).expect("encode");
    enc.encode(&syn(3, "data"), &mut out).expect("encode");
    assert_eq!(
        out,
        [SYN_STREAM_1, SYN_STREAM_3].concat(),
        "client->server bytes"
    );
    let mut enc = Encoder::new();
    let mut out = Vec::new();
    for f in replies() {
        enc.encode(&f, &mut out).expect("encode");
    }
    assert_eq!(
        out,
        [SYN_REPLY_1, SYN_REPLY_3].concat(),
        "server->client bytes"
    );
}

#[test]
fn header_frames_round_trip_across_many_blocks() {
    let mut enc = Encoder::new();
    let mut dec = Decoder::new();
    let mut wire = Vec::new();
    let mut frames = Vec::new();
    for i in 0..50u32 {
        let f = if i % 2 == 0 {
            syn(2 * i + 1, if i % 4 == 0 { "stdout" } else { "stderr" })
        } else {
            Frame::Headers {
                stream_id: i,
                flags: 0,
                headers: Headers::new().with("n", i.to_string()),
            }
        };
        enc.encode(&f, &mut wire).expect("encode");
        frames.push(f);
    }
    assert_eq!(decode_all(&mut dec, &wire), frames);
}

#[test]
fn simple_frames_round_trip() {
    let cases = [
        (
            "data",
            Frame::Data {
                stream_id: 5,
                flags: 0,
                data: Bytes::from_static(b"hello"),
            },
        ),
        (
            "data fin empty",
            Frame::Data {
                stream_id: 7,
                flags: FLAG_FIN,
                data: Bytes::new(),
            },
        ),
        (
            "rst",
            Frame::RstStream {
                stream_id: 3,
                status: RstStatus::CANCEL,
            },
        ),
        ("ping", Frame::Ping { id: 0xdead_beef }),
        (
            "window update",
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 1 << 20,
            },
        ),
        (
            "goaway",
            Frame::GoAway {
                last_good_stream_id: 9,
                status: 0,
            },
        ),
        (
            "settings",
            Frame::Settings {
                flags: FLAG_SETTINGS_CLEAR,
                entries: vec![
                    Setting {
                        flags: 0,
                        id: SETTINGS_INITIAL_WINDOW_SIZE,
                        value: 1 << 18,
                    },
                    Setting {
                        flags: 1,
                        id: 4,
                        value: 100,
                    },
                ],
            },
        ),
        (
            "unknown",
            Frame::Unknown {
                kind: 0x42,
                flags: 0,
            },
        ),
    ];
    for (name, frame) in cases {
        let mut out = Vec::new();
        Encoder::new().encode(&frame, &mut out).expect(name);
        assert_eq!(decode_all(&mut Decoder::new(), &out), vec![frame], "{name}");
    }
}

#[test]
fn fixed_layouts_match_the_spec() {
    let cases: [(&str, Frame, &[u8]); 4] = [
        (
            "data",
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"ab"),
            },
            &[0, 0, 0, 1, 1, 0, 0, 2, b'a', b'b'],
        ),
        (
            "ping",
            Frame::Ping { id: 2 },
            &[0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 2],
        ),
        (
            "rst",
            Frame::RstStream {
                stream_id: 3,
                status: 5,
            },
            &[0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 5],
        ),
        (
            "settings",
            Frame::Settings {
                flags: 0,
                entries: vec![Setting {
                    flags: 0,
                    id: 7,
                    value: 0x10000,
                }],
            },
            &[
                0x80, 3, 0, 4, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 7, 0, 1, 0, 0,
            ],
        ),
    ];
    for (name, frame, bytes) in cases {
        let mut out = Vec::new();
        Encoder::new().encode(&frame, &mut out).expect(name);
        assert_eq!(out, bytes, "{name}");
    }
}

#[test]
fn partial_buffers_need_more_and_consume_nothing() {
    let mut wire = SYN_STREAM_1.to_vec();
    Encoder::new()
        .encode(
            &Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from(vec![7u8; 300]),
            },
            &mut wire,
        )
        .expect("encode");
    let mut dec = Decoder::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for &b in &wire {
        buf.extend_from_slice(&[b]);
        let before = buf.len();
        match dec.decode(&mut buf).expect("decode") {
            Some(f) => frames.push(f),
            None => assert_eq!(buf.len(), before, "a partial frame must not be consumed"),
        }
    }
    assert_eq!(frames.len(), 2, "both frames decoded byte by byte");
    assert_eq!(frames[0], syn(1, "error"));
    assert!(matches!(&frames[1], Frame::Data { data, .. } if data.len() == 300));
}

#[test]
fn malformed_frames_are_errors() {
    let cases: [(&str, &[u8]); 6] = [
        ("version 2", &[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]),
        ("ping length 5", &[0x80, 3, 0, 6, 0, 0, 0, 5, 0, 0, 0, 1, 0]),
        ("rst length 4", &[0x80, 3, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1]),
        (
            "window update length 4",
            &[0x80, 3, 0, 9, 0, 0, 0, 4, 0, 0, 0, 1],
        ),
        (
            "settings count mismatch",
            &[0x80, 3, 0, 4, 0, 0, 0, 4, 0, 0, 0, 1],
        ),
        (
            "syn_stream too short",
            &[0x80, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 1, 0, 0],
        ),
    ];
    for (name, bytes) in cases {
        let res = Decoder::new().decode(&mut BytesMut::from(bytes));
        assert!(
            matches!(
                res,
                Err(Error::UnsupportedVersion { .. } | Error::InvalidFrameLength { .. })
            ),
            "{name}: {res:?}"
        );
    }
    let mut garbage = vec![0x80, 3, 0, 2, 0, 0, 0, 10, 0, 0, 0, 1];
    garbage.extend_from_slice(&[0x78, 0xbb, 1, 2, 3, 4]);
    let res = Decoder::new().decode(&mut BytesMut::from(&garbage[..]));
    assert!(res.is_err(), "garbage header block: {res:?}");
}

#[test]
fn oversized_data_is_refused() {
    let data = Bytes::from(vec![0u8; MAX_FRAME_PAYLOAD + 1]);
    let res = Encoder::new().encode(
        &Frame::Data {
            stream_id: 1,
            flags: 0,
            data,
        },
        &mut Vec::new(),
    );
    assert!(matches!(res, Err(Error::FrameTooLarge { .. })), "{res:?}");
}
