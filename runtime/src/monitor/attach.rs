//! Attach sessions in the monitor, and the frames they speak.
//!
//! After an ok reply to [`super::Request::Attach`] the connection carries frames
//! `[kind u8][len u32 BE][payload]` both ways:
//!
//! | kind | direction | payload |
//! |------|-----------|---------|
//! | [`STDOUT`] | monitor → crustd | output (with a terminal, all output) |
//! | [`STDERR`] | monitor → crustd | output |
//! | [`CLOSED`] | monitor → crustd | exit code, i32 BE (-1 if removed); the last frame |
//! | [`STDIN`] | crustd → monitor | input |
//! | [`STDIN_EOF`] | crustd → monitor | none: this session's stdin ended |
//! | [`RESIZE`] | crustd → monitor | width u16 BE, height u16 BE |
//!
//! crustd detaches by closing the connection. The monitor never waits on an attacher:
//! connections are non-blocking, output is queued per attacher, and an attacher whose
//! queue passes [`OUTPUT_LIMIT`] is dropped (the container and the log go on).
#![allow(unsafe_code)]

use std::{
    io::{ErrorKind, Write},
    os::{fd::AsRawFd, unix::net::UnixStream},
};

use super::{
    containers::{Containers, Event, STDIN_BUFFER},
    crilog::Stream,
};

pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const CLOSED: u8 = 3;
pub const STDIN: u8 = 16;
pub const STDIN_EOF: u8 = 17;
pub const RESIZE: u8 = 18;

/// Frame header length.
pub const HEADER: usize = 5;
/// Largest payload either side sends or accepts.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Output queued for one attacher before it is dropped as too slow.
pub const OUTPUT_LIMIT: usize = 4 << 20;

/// Appends one frame to `out`.
pub fn encode(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// A frame found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub payload: &'a [u8],
    /// Bytes it takes in the buffer, header included.
    pub len: usize,
}

/// Splits the first complete frame off `buf`: `Ok(None)` until one is complete, an
/// error for a payload over [`MAX_PAYLOAD`].
pub fn decode(buf: &[u8]) -> Result<Option<Frame<'_>>, String> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(format!("frame of {len} bytes"));
    }
    if buf.len() < HEADER + len {
        return Ok(None);
    }
    Ok(Some(Frame {
        kind: buf[0],
        payload: &buf[HEADER..HEADER + len],
        len: HEADER + len,
    }))
}

struct Attacher {
    conn: UnixStream,
    container: String,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    /// Bytes read but not yet a whole frame.
    input: Vec<u8>,
    /// Frames not yet written; `sent` of them are.
    output: Vec<u8>,
    sent: usize,
    /// This session's stdin ended (EOF frame or disconnect): told the container once.
    stdin_ended: bool,
    /// The closed frame is queued: go once it is written.
    closing: bool,
    gone: bool,
}

impl Attacher {
    fn queue(&mut self, kind: u8, payload: &[u8]) {
        encode(&mut self.output, kind, payload);
        if self.output.len() - self.sent > OUTPUT_LIMIT {
            eprintln!(
                "crust-monitor: attacher of {} reads too slowly; detached",
                self.container
            );
            self.gone = true;
        }
    }

    fn flush(&mut self) {
        while self.sent < self.output.len() && !self.gone {
            match (&self.conn).write(&self.output[self.sent..]) {
                Ok(0) => self.gone = true,
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => self.gone = true,
            }
        }
        if self.sent == self.output.len() {
            self.output.clear();
            self.sent = 0;
            if self.closing {
                self.gone = true;
            }
        } else if self.sent > OUTPUT_LIMIT / 4 {
            self.output.drain(..self.sent);
            self.sent = 0;
        }
    }
}

/// The attach sessions of this pod's containers.
#[derive(Default)]
pub(super) struct Attachers {
    list: Vec<Attacher>,
}

/// What to poll an attacher for.
pub(super) struct Interest {
    pub fd: std::os::fd::RawFd,
    pub read: bool,
    pub write: bool,
}

impl Attachers {
    /// Answers an attach request on `conn` and, if the container can be attached to,
    /// goes on with it as a session; `early` holds bytes read past the request line.
    pub(super) fn open(
        &mut self,
        containers: &mut Containers,
        mut conn: UnixStream,
        early: Vec<u8>,
        session: (String, bool, bool, bool),
    ) {
        let refusal = containers.attachable(&session.0, session.1).err();
        let reply = super::Reply {
            ok: refusal.is_none(),
            error: refusal,
            init_alive: None,
            pid: None,
            started_at: None,
            process: None,
        };
        // Still blocking, with the request's timeouts: one short line.
        let sent = writeln!(
            conn,
            "{}",
            serde_json::to_string(&reply).expect("reply serializes")
        );
        if reply.ok && sent.is_ok() {
            self.add(containers, conn, early, session);
        }
    }

    fn add(
        &mut self,
        containers: &mut Containers,
        conn: UnixStream,
        early: Vec<u8>,
        (id, stdin, stdout, stderr): (String, bool, bool, bool),
    ) {
        let _ = conn.set_nonblocking(true);
        containers.set_tee(&id, true);
        self.list.push(Attacher {
            conn,
            container: id,
            stdin,
            stdout,
            stderr,
            input: early,
            output: Vec::new(),
            sent: 0,
            stdin_ended: false,
            closing: false,
            gone: false,
        });
        let last = self.list.len() - 1;
        self.process_input(last, containers);
        self.sweep(containers);
    }

    /// One entry per attacher, in order, for the poll set.
    pub(super) fn interests(&self, containers: &Containers) -> Vec<Interest> {
        self.list
            .iter()
            .map(|a| Interest {
                fd: a.conn.as_raw_fd(),
                // A full stdin leaves input unread (the peer's writes then block);
                // hangups are reported whatever we ask for.
                read: !a.closing && containers.stdin_has_room(&a.container),
                write: a.sent < a.output.len(),
            })
            .collect()
    }

    /// Handles readiness of the attacher at `index` (as in [`Attachers::interests`]).
    pub(super) fn on_ready(
        &mut self,
        index: usize,
        readable: bool,
        writable: bool,
        containers: &mut Containers,
    ) {
        let Some(a) = self.list.get_mut(index) else {
            return;
        };
        if writable {
            a.flush();
        }
        if readable && !a.closing && !a.gone {
            loop {
                match super::containers::read_appending(a.conn.as_raw_fd(), &mut a.input, 64 * 1024)
                {
                    Ok(0) => {
                        a.gone = true;
                        break;
                    }
                    Ok(_) => {
                        if a.input.len() > STDIN_BUFFER {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        a.gone = true;
                        break;
                    }
                }
            }
            self.process_input(index, containers);
        }
    }

    /// Acts on the complete frames an attacher sent.
    fn process_input(&mut self, index: usize, containers: &mut Containers) {
        let a = &mut self.list[index];
        let mut used = 0;
        loop {
            let Frame { kind, payload, len } = match decode(&a.input[used..]) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("crust-monitor: attacher of {}: {e}", a.container);
                    a.gone = true;
                    break;
                }
            };
            match kind {
                STDIN if a.stdin && !a.stdin_ended => containers.write_stdin(&a.container, payload),
                STDIN_EOF if a.stdin && !a.stdin_ended => {
                    a.stdin_ended = true;
                    containers.end_stdin(&a.container);
                }
                RESIZE if payload.len() == 4 => {
                    let width = u16::from_be_bytes([payload[0], payload[1]]);
                    let height = u16::from_be_bytes([payload[2], payload[3]]);
                    containers.resize(&a.container, width, height);
                }
                _ => {}
            }
            used += len;
        }
        a.input.drain(..used);
    }

    /// Passes output and exits on to the attachers, then drops those that are done.
    pub(super) fn dispatch(&mut self, containers: &mut Containers) {
        for event in std::mem::take(&mut containers.events) {
            match event {
                Event::Output(id, stream, data) => {
                    for a in self.list.iter_mut().filter(|a| a.container == id) {
                        let (wanted, kind) = match stream {
                            Stream::Stdout => (a.stdout, STDOUT),
                            Stream::Stderr => (a.stderr, STDERR),
                        };
                        if wanted && !a.closing && !a.gone {
                            for chunk in data.chunks(MAX_PAYLOAD) {
                                a.queue(kind, chunk);
                            }
                            a.flush();
                        }
                    }
                }
                Event::Exited(id, code) => {
                    for a in self.list.iter_mut().filter(|a| a.container == id) {
                        if !a.closing {
                            a.closing = true;
                            a.stdin_ended = true;
                            encode(&mut a.output, CLOSED, &code.to_be_bytes());
                            a.flush();
                        }
                    }
                }
            }
        }
        self.sweep(containers);
    }

    /// Drops finished attachers: a session with stdin that ends without saying EOF
    /// ends stdin too (for `stdin_once`, its end is what closes it).
    fn sweep(&mut self, containers: &mut Containers) {
        let mut i = 0;
        while i < self.list.len() {
            if !self.list[i].gone {
                i += 1;
                continue;
            }
            let a = self.list.swap_remove(i);
            if a.stdin && !a.stdin_ended {
                containers.end_stdin(&a.container);
            }
            if !self.list.iter().any(|o| o.container == a.container) {
                containers.set_tee(&a.container, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_wait_for_their_payload() {
        let mut buf = Vec::new();
        encode(&mut buf, STDIN, b"hello");
        encode(&mut buf, STDIN_EOF, b"");
        assert_eq!(
            &buf[..5],
            &[STDIN, 0, 0, 0, 5],
            "header is kind + u32 BE length"
        );
        assert_eq!(decode(&buf[..7]), Ok(None), "incomplete payload waits");
        let first = decode(&buf).unwrap().unwrap();
        let want = Frame {
            kind: STDIN,
            payload: b"hello",
            len: 10,
        };
        assert_eq!(first, want);
        let second = Frame {
            kind: STDIN_EOF,
            payload: b"",
            len: 5,
        };
        assert_eq!(decode(&buf[first.len..]), Ok(Some(second)));
        let mut huge = vec![STDOUT];
        huge.extend_from_slice(&((MAX_PAYLOAD as u32) + 1).to_be_bytes());
        assert!(decode(&huge).is_err(), "oversized frames are refused");
    }
}
