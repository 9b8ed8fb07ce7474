//! Any `:authority` on the CRI socket, as containerd accepts.
//!
//! gRPC C-core clients (Python grpcio, C++, Ruby; grpc-java too) send the unix socket's
//! path, %-encoded, as `:authority`. h2 refuses that as a malformed header and resets
//! every stream with PROTOCOL_ERROR (hyperium/h2#487), so those clients could not call
//! crustd at all. A socket has no host to name, so the authority carries nothing.
//!
//! `AuthorityFix` sits between the accepted socket and tonic and reads the client's
//! HTTP/2 frames. When the first header block's authority is one h2 takes (grpc-go,
//! tonic, kubelet, crictl), it steps aside for the connection's life: bytes pass
//! untouched. Otherwise it decodes every header block of the connection (HPACK keeps a
//! table per connection, so it must see them all) and re-encodes it with `localhost`,
//! what grpc-go sends on a unix socket, in place of an authority h2 would refuse.
//! Responses pass untouched.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// The client connection preface (RFC 9113 §3.4), passed through before any frame.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
/// h2's SETTINGS_MAX_FRAME_SIZE (tonic keeps the default): a larger frame is h2's to
/// refuse, so the adaptor steps aside rather than buffer it.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is passed on for h2 to refuse (its own limit is
/// lower), so one client cannot make the adaptor buffer without bound.
const MAX_BLOCK: usize = 1 << 20;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// What replaces an authority h2 refuses.
const LOCALHOST: &[u8] = b"localhost";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Before the first header block: frames pass, the block decides.
    Sniff,
    /// The client's authorities are fine: every byte passes untouched.
    Pass,
    /// Every header block is decoded and re-encoded.
    Rewrite,
}

/// A header block being collected (HEADERS then CONTINUATION frames).
struct Block {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames as received, for passing them on unchanged.
    raw: Vec<u8>,
}

/// The socket as tonic sees it; see the module comment.
pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    preface_left: usize,
    /// Bytes read from the client, not yet a whole frame.
    raw: Vec<u8>,
    /// Bytes ready for h2, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    block: Option<Block>,
    decoder: hpack::Decoder<'static>,
    // The encoder's table is 4096 bytes, h2's default SETTINGS_HEADER_TABLE_SIZE (tonic
    // does not change it), so h2's decoder follows it.
    encoder: hpack::Encoder<'static>,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> AuthorityFix<S> {
        AuthorityFix {
            inner,
            mode: Mode::Sniff,
            preface_left: PREFACE_LEN,
            raw: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            block: None,
            decoder: hpack::Decoder::new(),
            encoder: hpack::Encoder::new(),
        }
    }

    /// Moves every whole frame in `raw` to `out`, rewritten where it must be.
    fn process(&mut self) {
        let n = self.preface_left.min(self.raw.len());
        self.out.extend(self.raw.drain(..n));
        self.preface_left -= n;
        while self.mode != Mode::Pass {
            let Some(header) = self.raw.get(..FRAME_HEADER_LEN) else {
                return;
            };
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let (kind, flags) = (header[3], header[4]);
            let stream_id =
                u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            if len > MAX_FRAME {
                return self.step_aside();
            }
            if self.raw.len() < FRAME_HEADER_LEN + len {
                return;
            }
            let frame: Vec<u8> = self.raw.drain(..FRAME_HEADER_LEN + len).collect();
            let payload = &frame[FRAME_HEADER_LEN..];
            match (kind, self.block.as_mut()) {
                (HEADERS, None) => {
                    let Some((priority, fragment)) = split_headers(flags, payload) else {
                        self.out.extend(&frame);
                        return self.step_aside();
                    };
                    self.block = Some(Block {
                        stream_id,
                        end_stream: flags & END_STREAM != 0,
                        priority,
                        fragment: fragment.to_vec(),
                        raw: frame.clone(),
                    });
                }
                (CONTINUATION, Some(b)) if b.stream_id == stream_id => {
                    b.fragment.extend_from_slice(payload);
                    b.raw.extend_from_slice(&frame);
                }
                (_, None) => {
                    self.out.extend(&frame);
                    continue;
                }
                // Anything else inside a header block is a protocol error: h2's to say.
                (_, Some(_)) => {
                    let b = self.block.take().expect("matched Some");
                    self.out.extend(&b.raw);
                    self.out.extend(&frame);
                    return self.step_aside();
                }
            }
            let b = self.block.as_ref().expect("a block was just added to");
            if b.fragment.len() > MAX_BLOCK {
                let b = self.block.take().expect("checked");
                self.out.extend(&b.raw);
                return self.step_aside();
            }
            if flags & END_HEADERS != 0 {
                let b = self.block.take().expect("checked");
                self.finish(b);
            }
        }
    }

    /// From here on, bytes pass untouched (what is buffered too).
    fn step_aside(&mut self) {
        self.mode = Mode::Pass;
        if let Some(b) = self.block.take() {
            self.out.extend(&b.raw);
        }
        self.out.append(&mut self.raw);
    }

    fn finish(&mut self, b: Block) {
        let Ok(mut headers) = self.decoder.decode(&b.fragment) else {
            // A block HPACK cannot read is h2's to refuse (COMPRESSION_ERROR).
            self.out.extend(&b.raw);
            return self.step_aside();
        };
        if self.mode == Mode::Sniff {
            if headers
                .iter()
                .all(|(k, v)| k != b":authority" || acceptable(v))
            {
                self.out.extend(&b.raw);
                return self.step_aside();
            }
            tracing::debug!("client sends an authority h2 refuses (a socket path?): rewriting");
            self.mode = Mode::Rewrite;
        }
        for (k, v) in &mut headers {
            if k == b":authority" && !acceptable(v) {
                *v = LOCALHOST.to_vec();
            }
        }
        let block = self
            .encoder
            .encode(headers.iter().map(|(k, v)| (&k[..], &v[..])));
        self.write_block(&b, &block);
    }

    /// Writes `block` as HEADERS then CONTINUATION frames, none over `MAX_FRAME`.
    fn write_block(&mut self, b: &Block, block: &[u8]) {
        let prio_len = if b.priority.is_some() { 5 } else { 0 };
        let first = block.len().min(MAX_FRAME - prio_len);
        let (head, mut rest) = block.split_at(first);
        let mut flags = if b.end_stream { END_STREAM } else { 0 };
        if b.priority.is_some() {
            flags |= PRIORITY;
        }
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        self.frame_header(prio_len + head.len(), HEADERS, flags, b.stream_id);
        if let Some(p) = b.priority {
            self.out.extend_from_slice(&p);
        }
        self.out.extend_from_slice(head);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
            rest = tail;
            let flags = if rest.is_empty() { END_HEADERS } else { 0 };
            self.frame_header(chunk.len(), CONTINUATION, flags, b.stream_id);
            self.out.extend_from_slice(chunk);
        }
    }

    fn frame_header(&mut self, len: usize, kind: u8, flags: u8, stream_id: u32) {
        let len = u32::try_from(len).expect("frames are at most MAX_FRAME long");
        self.out.extend_from_slice(&len.to_be_bytes()[1..]);
        self.out.extend_from_slice(&[kind, flags]);
        self.out.extend_from_slice(&stream_id.to_be_bytes());
    }
}

/// The priority fields and the header block fragment of a HEADERS payload; None when
/// the padding or priority fields do not fit (h2 refuses the frame).
fn split_headers(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut p = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        pad = usize::from(*p.first()?);
        p = &p[1..];
    }
    let priority = if flags & PRIORITY != 0 {
        let fields: [u8; 5] = p.get(..5)?.try_into().ok()?;
        p = &p[5..];
        Some(fields)
    } else {
        None
    };
    let end = p.len().checked_sub(pad)?;
    Some((priority, &p[..end]))
}

/// Whether h2 takes this authority (it parses it as a URI authority).
fn acceptable(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.mode == Mode::Pass {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // End of stream: whatever is buffered goes as it is, then EOF.
                this.step_aside();
                if this.out.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            this.raw.extend_from_slice(read.filled());
            this.process();
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn request(enc: &mut hpack::Encoder<'_>, authority: &[u8], path: &[u8]) -> Vec<u8> {
        enc.encode(vec![
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", path),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
        ])
    }

    /// Everything the adaptor hands on for `input`, fed in `chunk`-byte writes.
    async fn through(input: Vec<u8>, chunk: usize) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let writer = tokio::spawn(async move {
            for c in input.chunks(chunk) {
                client.write_all(c).await.unwrap();
            }
            client.shutdown().await.unwrap();
        });
        let mut out = Vec::new();
        AuthorityFix::new(server)
            .read_to_end(&mut out)
            .await
            .unwrap();
        writer.await.unwrap();
        out
    }

    /// The frames after the preface, as (type, flags, stream, payload).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert_eq!(&bytes[..PREFACE_LEN], PREFACE);
        bytes = &bytes[PREFACE_LEN..];
        let mut v = Vec::new();
        while !bytes.is_empty() {
            let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
            let stream = u32::from_be_bytes(bytes[5..9].try_into().unwrap());
            v.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
            bytes = &bytes[9 + len..];
        }
        v
    }

    #[tokio::test]
    async fn a_valid_authority_passes_byte_for_byte() {
        let mut enc = hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &request(&mut enc, b"localhost", b"/a"),
        ));
        input.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0"));
        input.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            3,
            &request(&mut enc, b"%zz/bad", b"/b"),
        ));
        for chunk in [1, 7, 4096] {
            assert_eq!(through(input.clone(), chunk).await, input, "chunk {chunk}");
        }
    }

    #[tokio::test]
    async fn a_socket_path_authority_becomes_localhost_on_every_request() {
        let mut enc = hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        // Padded, with priority, split over a CONTINUATION: all of it must be read.
        let block = request(
            &mut enc,
            b"var%2Frun%2Fcrust.sock",
            b"/runtime.v1.RuntimeService/Version",
        );
        let (a, b) = block.split_at(10);
        let mut payload = vec![3u8];
        payload.extend_from_slice(&[0, 0, 0, 0, 16]);
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0, 0, 0]);
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &payload));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        input.extend(frame(0x8, 0, 0, &[0, 0, 1, 0]));
        // The second request reuses the client's table for the bad authority.
        let block = request(
            &mut enc,
            b"var%2Frun%2Fcrust.sock",
            b"/runtime.v1.RuntimeService/Status",
        );
        input.extend(frame(HEADERS, END_HEADERS, 3, &block));
        for chunk in [1, 5, 4096] {
            let out = through(input.clone(), chunk).await;
            let f = frames(&out);
            assert_eq!(f.len(), 4, "{f:?}");
            assert_eq!((f[0].0, f[2].0), (0x4, 0x8), "other frames pass in order");
            let mut dec = hpack::Decoder::new();
            for (i, path) in [
                (1, &b"/runtime.v1.RuntimeService/Version"[..]),
                (3, b"/runtime.v1.RuntimeService/Status"),
            ] {
                let (kind, flags, stream, payload) = &f[i];
                assert_eq!(*kind, HEADERS);
                assert_ne!(flags & END_HEADERS, 0);
                let mut p = &payload[..];
                if i == 1 {
                    assert_eq!(
                        flags & (END_STREAM | PRIORITY | PADDED),
                        END_STREAM | PRIORITY
                    );
                    assert_eq!(&p[..5], &[0, 0, 0, 0, 16]);
                    p = &p[5..];
                    assert_eq!(*stream, 1);
                }
                let headers = dec.decode(p).unwrap();
                let get = |k: &[u8]| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                assert_eq!(get(b":authority").as_deref(), Some(&b"localhost"[..]));
                assert_eq!(get(b":path").as_deref(), Some(path));
                assert_eq!(
                    get(b"content-type").as_deref(),
                    Some(&b"application/grpc"[..])
                );
            }
        }
    }

    #[tokio::test]
    async fn a_huge_rewritten_block_is_split_into_continuations() {
        let mut enc = hpack::Encoder::new();
        let big = vec![b'x'; 40_000];
        let block = enc.encode(vec![
            (&b":authority"[..], &b"/a/b"[..]),
            (b"x-big", &big[..]),
        ]);
        let mut input = PREFACE.to_vec();
        for (i, c) in block.chunks(MAX_FRAME).enumerate() {
            let last = (i + 1) * MAX_FRAME >= block.len();
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            input.extend(frame(kind, if last { END_HEADERS } else { 0 }, 1, c));
        }
        let f = frames(&through(input, 4096).await);
        assert!(
            f.len() >= 3 && f.iter().all(|x| x.3.len() <= MAX_FRAME),
            "{}",
            f.len()
        );
        assert_eq!(f[0].0, HEADERS);
        assert!(f[1..].iter().all(|x| x.0 == CONTINUATION));
        let block: Vec<u8> = f.iter().flat_map(|x| x.3.clone()).collect();
        let headers = hpack::Decoder::new().decode(&block).unwrap();
        assert_eq!(headers[0], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(headers[1].1.len(), 40_000);
    }

    #[tokio::test]
    async fn an_oversized_frame_is_left_for_h2_to_refuse() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x0, 0, 1, &vec![0; MAX_FRAME + 1]));
        input.extend(frame(HEADERS, END_HEADERS, 3, b"\xff\xff\xff"));
        assert_eq!(through(input.clone(), 1000).await, input);
    }
}
