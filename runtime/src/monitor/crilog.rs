//! Container output in the CRI log format kubelet reads:
//! `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>\n`, where `P` marks a
//! partial line (split because it was longer than the maximum, or cut by EOF without a
//! newline... which is written as a full line, as containerd does) and `F` a full one.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    time::SystemTime,
};

/// Which stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Writes one container's log file; reopenable for log rotation.
pub struct CriLog {
    path: PathBuf,
    file: Option<File>,
    partial: [Vec<u8>; 2],
    max_line: usize,
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl CriLog {
    /// Opens (creating) `path`. Lines longer than `max_line` bytes are split into `P`
    /// records.
    pub fn open(path: &Path, max_line: usize) -> io::Result<CriLog> {
        Ok(CriLog {
            path: path.to_path_buf(),
            file: Some(open(path)?),
            partial: [Vec::new(), Vec::new()],
            max_line,
        })
    }

    /// Reopens the file at the same path (after kubelet rotated it away).
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = Some(open(&self.path)?);
        Ok(())
    }

    /// Appends one record to `out`; `prefix` is `<timestamp> <stream> `.
    fn record(out: &mut Vec<u8>, prefix: &[u8], tag: u8, content: &[u8]) {
        out.extend_from_slice(prefix);
        out.push(tag);
        out.push(b' ');
        out.extend_from_slice(content);
        out.push(b'\n');
    }

    /// Writes `records` in one call. A full disk must not stop the container; the
    /// bytes are lost, as with containerd's logger.
    fn emit(&mut self, records: &[u8]) {
        if let (Some(file), false) = (self.file.as_mut(), records.is_empty()) {
            let _ = file.write_all(records);
        }
    }

    /// `<timestamp> <stream> `: one timestamp for everything read at once.
    fn prefix(stream: Stream) -> Vec<u8> {
        let ts = humantime::format_rfc3339_nanos(SystemTime::now());
        format!("{ts} {} ", stream.name()).into_bytes()
    }

    /// Adds output: complete lines become `F` records, overlong ones `P` records, and
    /// the rest waits for more.
    ///
    /// The records of one call share a timestamp (the time the chunk was read) and go
    /// to the file in one write: a container printing 2-byte lines as fast as it can
    /// must cost the monitor a few memcpys per line, not a clock read, a format and a
    /// syscall each (issue 13, item 8).
    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        let i = stream as usize;
        let max = self.max_line.max(1);
        let prefix = Self::prefix(stream);
        let mut out = Vec::with_capacity(data.len() + data.len() / 2 + prefix.len() + 8);
        let mut pending = std::mem::take(&mut self.partial[i]);
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = (&rest[..nl], &rest[nl + 1..]);
            rest = tail;
            if pending.is_empty() {
                Self::line(&mut out, &prefix, max, line);
            } else {
                pending.extend_from_slice(line);
                Self::line(&mut out, &prefix, max, &pending);
                pending.clear();
            }
        }
        // No newline in what is left: cut whole P records off, keep the remainder.
        pending.extend_from_slice(rest);
        let whole = pending.len() / max * max;
        for chunk in pending[..whole].chunks(max) {
            Self::record(&mut out, &prefix, b'P', chunk);
        }
        pending.drain(..whole);
        self.partial[i] = pending;
        self.emit(&out);
    }

    /// One complete line: `P` records of `max` bytes, then the rest (maybe empty) `F`.
    fn line(out: &mut Vec<u8>, prefix: &[u8], max: usize, line: &[u8]) {
        let mut line = line;
        while line.len() > max {
            Self::record(out, prefix, b'P', &line[..max]);
            line = &line[max..];
        }
        Self::record(out, prefix, b'F', line);
    }

    /// The stream ended: what is left is written as a full line.
    pub fn finish(&mut self, stream: Stream) {
        let rest = std::mem::take(&mut self.partial[stream as usize]);
        if !rest.is_empty() {
            let mut out = Vec::new();
            Self::record(&mut out, &Self::prefix(stream), b'F', &rest);
            self.emit(&out);
        }
        if let Some(f) = self.file.as_mut() {
            let _ = f.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(path: &Path) -> Vec<(String, String, String)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let mut parts = l.splitn(4, ' ');
                let ts = parts.next().unwrap();
                assert!(humantime::parse_rfc3339(ts).is_ok(), "timestamp {ts}");
                (
                    parts.next().unwrap().into(),
                    parts.next().unwrap().into(),
                    parts.next().unwrap_or("").into(),
                )
            })
            .collect()
    }

    #[test]
    fn lines_partials_and_streams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = CriLog::open(&path, 8).unwrap();
        log.write(Stream::Stdout, b"hello\nwor");
        log.write(Stream::Stderr, b"oops\n");
        log.write(Stream::Stdout, b"ld\n0123456789abc\n");
        log.write(Stream::Stdout, b"tail-without-newline");
        log.finish(Stream::Stdout);
        let r = records(&path);
        let want: Vec<(String, String, String)> = [
            ("stdout", "F", "hello"),
            ("stderr", "F", "oops"),
            ("stdout", "F", "world"),
            ("stdout", "P", "01234567"),
            ("stdout", "F", "89abc"),
            ("stdout", "P", "tail-wit"),
            ("stdout", "P", "hout-new"),
            ("stdout", "F", "line"),
        ]
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
        assert_eq!(r, want);
    }

    #[test]
    fn a_chunk_of_many_lines_shares_one_timestamp_and_keeps_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = CriLog::open(&path, 4).unwrap();
        log.write(Stream::Stdout, &b"y\n".repeat(1000));
        log.write(Stream::Stdout, b"abcd\nabcdefgh\n\n");
        let text = std::fs::read_to_string(&path).unwrap();
        let stamps: std::collections::HashSet<&str> = text
            .lines()
            .take(1000)
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(stamps.len(), 1, "one read, one timestamp");
        let r = records(&path);
        assert_eq!(r.len(), 1004, "every line is a record");
        assert!(
            r[..1000]
                .iter()
                .all(|(s, t, c)| (s, t, c.as_str()) == (&"stdout".into(), &"F".into(), "y"))
        );
        let tail: Vec<(&str, &str)> = r[1000..]
            .iter()
            .map(|(_, t, c)| (t.as_str(), c.as_str()))
            .collect();
        assert_eq!(
            tail,
            [("F", "abcd"), ("P", "abcd"), ("F", "efgh"), ("F", "")],
            "a line of exactly the maximum is one F record; an empty line is an empty F"
        );
    }

    #[test]
    fn reopen_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = CriLog::open(&path, 1024).unwrap();
        log.write(Stream::Stdout, b"before\n");
        std::fs::rename(&path, dir.path().join("c.log.1")).unwrap();
        log.reopen().unwrap();
        log.write(Stream::Stdout, b"after\n");
        assert_eq!(records(&path).len(), 1);
        assert_eq!(records(&dir.path().join("c.log.1"))[0].2, "before");
    }
}
