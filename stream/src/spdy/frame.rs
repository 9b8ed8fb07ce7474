//! SPDY/3.1 frames: encode into a byte buffer, decode from one that may hold
//! a partial frame.
//!
//! ```text
//! control: |1| version(15) | type(16) | flags(8) | length(24) | payload
//! data:    |0| stream-id(31)          | flags(8) | length(24) | payload
//! ```

use bytes::{Buf, Bytes, BytesMut};

pub use super::headers::{HeaderCompressor, HeaderDecompressor, Headers, MAX_HEADER_BLOCK};
use crate::Error;

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
pub const FLAG_SETTINGS_CLEAR: u8 = 0x01;
/// SETTINGS id whose value is the sender's per-stream receive window.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
/// Largest value the 24-bit length field holds.
pub const MAX_FRAME_PAYLOAD: usize = (1 << 24) - 1;
/// Every stream's window, and the SPDY/3.1 connection window, start here.
pub const DEFAULT_WINDOW: u32 = 64 * 1024;

const HEADER_LEN: usize = 8;
const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;
const ID_MASK: u32 = 0x7fff_ffff;

/// RST_STREAM status codes (SPDY/3.1 2.6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RstStatus;

impl RstStatus {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const UNSUPPORTED_VERSION: u32 = 4;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
    pub const FRAME_TOO_LARGE: u32 = 11;
}

/// One SETTINGS entry: flags(8) id(24) value(32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_id: u32,
        /// 0 (highest) to 7; spdystream sends 0.
        priority: u8,
        slot: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control type this implementation does not know; the spec says ignore.
    Unknown {
        kind: u16,
        flags: u8,
    },
}

/// Frame encoder for one direction of a connection; owns that direction's
/// header compression context, so frames must be encoded in send order.
#[derive(Default)]
pub struct Encoder {
    headers: HeaderCompressor,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), Error> {
        let start = out.len();
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() > MAX_FRAME_PAYLOAD {
                    return Err(Error::FrameTooLarge { length: data.len() });
                }
                out.extend_from_slice(&(stream_id & ID_MASK).to_be_bytes());
                out.push(*flags);
                out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                out.extend_from_slice(data);
                return Ok(());
            }
            Frame::SynStream {
                stream_id,
                associated_id,
                priority,
                slot,
                flags,
                headers,
            } => {
                control_header(out, TYPE_SYN_STREAM, *flags);
                put(out, stream_id & ID_MASK);
                put(out, associated_id & ID_MASK);
                out.push((priority & 0x7) << 5);
                out.push(*slot);
                self.headers.compress(headers, out)?;
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                control_header(out, TYPE_SYN_REPLY, *flags);
                put(out, stream_id & ID_MASK);
                self.headers.compress(headers, out)?;
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                control_header(out, TYPE_HEADERS, *flags);
                put(out, stream_id & ID_MASK);
                self.headers.compress(headers, out)?;
            }
            Frame::RstStream { stream_id, status } => {
                control_header(out, TYPE_RST_STREAM, 0);
                put(out, stream_id & ID_MASK);
                put(out, *status);
            }
            Frame::Settings { flags, entries } => {
                control_header(out, TYPE_SETTINGS, *flags);
                put(out, entries.len() as u32);
                for e in entries {
                    put(out, (u32::from(e.flags) << 24) | (e.id & 0x00ff_ffff));
                    put(out, e.value);
                }
            }
            Frame::Ping { id } => {
                control_header(out, TYPE_PING, 0);
                put(out, *id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control_header(out, TYPE_GOAWAY, 0);
                put(out, last_good_stream_id & ID_MASK);
                put(out, *status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control_header(out, TYPE_WINDOW_UPDATE, 0);
                put(out, stream_id & ID_MASK);
                put(out, delta & ID_MASK);
            }
            Frame::Unknown { kind, flags } => control_header(out, *kind, *flags),
        }
        let length = out.len() - start - HEADER_LEN;
        if length > MAX_FRAME_PAYLOAD {
            out.truncate(start);
            return Err(Error::FrameTooLarge { length });
        }
        out[start + 5..start + 8].copy_from_slice(&(length as u32).to_be_bytes()[1..]);
        Ok(())
    }
}

fn control_header(out: &mut Vec<u8>, kind: u16, flags: u8) {
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&[0, 0, 0]); // length, patched once known
}

fn put(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Frame decoder for one direction; owns that direction's inflate context.
#[derive(Default)]
pub struct Decoder {
    headers: HeaderDecompressor,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one whole frame off the front of `buf`; `Ok(None)` when `buf`
    /// holds only part of one (nothing is consumed then). After an error the
    /// connection is unusable: the header context may be out of step.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let length = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < HEADER_LEN + length {
            buf.reserve(HEADER_LEN + length - buf.len());
            return Ok(None);
        }
        let word = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        buf.advance(HEADER_LEN);
        let mut p = buf.split_to(length);
        if word & 0x8000_0000 == 0 {
            let data = p.freeze();
            return Ok(Some(Frame::Data {
                stream_id: word & ID_MASK,
                flags,
                data,
            }));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        let kind = (word & 0xffff) as u16;
        if version != VERSION {
            return Err(Error::UnsupportedVersion { version });
        }
        let bad_len = || Error::InvalidFrameLength { kind, length };
        let frame = match kind {
            TYPE_SYN_STREAM => {
                if length < 10 {
                    return Err(bad_len());
                }
                let stream_id = p.get_u32() & ID_MASK;
                let associated_id = p.get_u32() & ID_MASK;
                let priority = p.get_u8() >> 5;
                let slot = p.get_u8();
                let headers = self.headers.decompress(&p)?;
                Frame::SynStream {
                    stream_id,
                    associated_id,
                    priority,
                    slot,
                    flags,
                    headers,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                if length < 4 {
                    return Err(bad_len());
                }
                let stream_id = p.get_u32() & ID_MASK;
                let headers = self.headers.decompress(&p)?;
                if kind == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                if length != 8 {
                    return Err(bad_len());
                }
                Frame::RstStream {
                    stream_id: p.get_u32() & ID_MASK,
                    status: p.get_u32(),
                }
            }
            TYPE_SETTINGS => {
                if length < 4 {
                    return Err(bad_len());
                }
                let count = p.get_u32() as usize;
                if length != 4 + count.checked_mul(8).ok_or_else(bad_len)? {
                    return Err(bad_len());
                }
                let entries = (0..count)
                    .map(|_| {
                        let word = p.get_u32();
                        let value = p.get_u32();
                        Setting {
                            flags: (word >> 24) as u8,
                            id: word & 0x00ff_ffff,
                            value,
                        }
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            TYPE_PING => {
                if length != 4 {
                    return Err(bad_len());
                }
                Frame::Ping { id: p.get_u32() }
            }
            TYPE_GOAWAY => {
                if length != 8 {
                    return Err(bad_len());
                }
                Frame::GoAway {
                    last_good_stream_id: p.get_u32() & ID_MASK,
                    status: p.get_u32(),
                }
            }
            TYPE_WINDOW_UPDATE => {
                if length != 8 {
                    return Err(bad_len());
                }
                Frame::WindowUpdate {
                    stream_id: p.get_u32() & ID_MASK,
                    delta: p.get_u32() & ID_MASK,
                }
            }
            _ => Frame::Unknown { kind, flags },
        };
        Ok(Some(frame))
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
