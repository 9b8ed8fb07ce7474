//! Name/value header blocks: the SPDY/3 plaintext layout (32-bit counts and
//! lengths) and the per-direction zlib contexts that compress it.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::SPDY3_DICTIONARY;
use crate::Error;

/// A decompressed header block inflating past this is refused: the 24-bit
/// frame length bounds what is on the wire, not what zlib expands it to.
pub const MAX_HEADER_BLOCK: usize = 1 << 20;

/// SPDY headers: lower-case names, possibly repeated. On the wire repeated
/// names travel as one entry with the values NUL-joined (SPDY/3 2.6.10).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a value; the name is lower-cased (spdystream lower-cases
    /// Go's canonical `Streamtype` to `streamtype` the same way).
    pub fn insert(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((name.to_ascii_lowercase(), value.into()));
    }

    /// Builder form of [`Headers::insert`].
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.insert(name, value);
        self
    }

    /// The first value of `name`, compared case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Plaintext block: names in first-seen order, repeated values NUL-joined.
    pub(crate) fn to_block(&self) -> Vec<u8> {
        let mut names: Vec<&str> = Vec::new();
        for (n, _) in &self.0 {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
        let mut out = Vec::with_capacity(64);
        put_u32(&mut out, names.len());
        for name in names {
            let value = self.get_all(name).collect::<Vec<_>>().join("\0");
            put_u32(&mut out, name.len());
            out.extend_from_slice(name.as_bytes());
            put_u32(&mut out, value.len());
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    pub(crate) fn from_block(block: &[u8]) -> Result<Self, Error> {
        let mut rest = block;
        let count = take_u32(&mut rest)?;
        let mut headers = Headers::new();
        for _ in 0..count {
            let name = take_str(&mut rest)?;
            if name.is_empty() {
                return Err(Error::MalformedHeaders {
                    reason: "empty header name",
                });
            }
            let value = take_str(&mut rest)?;
            for v in value.split('\0') {
                headers.insert(name, v);
            }
        }
        if !rest.is_empty() {
            return Err(Error::MalformedHeaders {
                reason: "trailing bytes after last header",
            });
        }
        Ok(headers)
    }
}

impl<N: AsRef<str>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut h = Headers::new();
        for (n, v) in iter {
            h.insert(n.as_ref(), v);
        }
        h
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Callers bound n by the 24-bit frame length, far below u32::MAX.
    out.extend_from_slice(&(n as u32).to_be_bytes());
}

fn take_u32(rest: &mut &[u8]) -> Result<u32, Error> {
    let Some((head, tail)) = rest.split_first_chunk::<4>() else {
        return Err(Error::MalformedHeaders {
            reason: "truncated length",
        });
    };
    *rest = tail;
    Ok(u32::from_be_bytes(*head))
}

fn take_str<'a>(rest: &mut &'a [u8]) -> Result<&'a str, Error> {
    let len = take_u32(rest)? as usize;
    if rest.len() < len {
        return Err(Error::MalformedHeaders {
            reason: "truncated name or value",
        });
    }
    let (s, tail) = rest.split_at(len);
    *rest = tail;
    std::str::from_utf8(s).map_err(|_| Error::MalformedHeaders {
        reason: "name or value not UTF-8",
    })
}

/// The sending direction's zlib stream: one for the whole connection, each
/// block ended with a SYNC_FLUSH so the peer can inflate it on arrival.
pub struct HeaderCompressor {
    z: Compress,
}

impl HeaderCompressor {
    pub fn new() -> Self {
        // spdystream writes with zlib.BestCompression; any level inflates alike.
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(SPDY3_DICTIONARY)
            .expect("deflateSetDictionary on a fresh stream cannot fail");
        Self { z }
    }

    pub fn compress(&mut self, headers: &Headers, out: &mut Vec<u8>) -> Result<(), Error> {
        let plain = headers.to_block();
        let mut input = &plain[..];
        loop {
            out.reserve(input.len() + 64);
            let before = self.z.total_in();
            self.z
                .compress_vec(input, out, FlushCompress::Sync)
                .map_err(Error::Compress)?;
            input = &input[(self.z.total_in() - before) as usize..];
            // zlib: a sync flush is complete once it returns with output space left.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        Self::new()
    }
}

/// The receiving direction's single streaming inflate context; the preset
/// dictionary is supplied when inflate asks for it (Z_NEED_DICT).
pub struct HeaderDecompressor {
    z: Decompress,
}

impl HeaderDecompressor {
    pub fn new() -> Self {
        Self {
            z: Decompress::new(true),
        }
    }

    pub fn decompress(&mut self, block: &[u8]) -> Result<Headers, Error> {
        if block.is_empty() {
            // A frame that ends before its header block carries no headers.
            return Ok(Headers::new());
        }
        let mut input = block;
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(Error::HeadersTooLarge {
                        limit: MAX_HEADER_BLOCK,
                    });
                }
                out.reserve(out.capacity());
            }
            let (before_in, before_out) = (self.z.total_in(), self.z.total_out());
            let res = self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.z.total_in() - before_in) as usize..];
            match res {
                Ok(Status::StreamEnd) => {
                    return Err(Error::MalformedHeaders {
                        reason: "zlib stream ended",
                    });
                }
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(SPDY3_DICTIONARY)
                        .map_err(Error::Decompress)?;
                    continue;
                }
                Err(e) => return Err(Error::Decompress(e)),
            }
            let progressed = self.z.total_out() != before_out || self.z.total_in() != before_in;
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if !progressed && out.len() < out.capacity() {
                return Err(Error::MalformedHeaders {
                    reason: "zlib made no progress",
                });
            }
        }
        if out.len() > MAX_HEADER_BLOCK {
            return Err(Error::HeadersTooLarge {
                limit: MAX_HEADER_BLOCK,
            });
        }
        Headers::from_block(&out)
    }
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}
