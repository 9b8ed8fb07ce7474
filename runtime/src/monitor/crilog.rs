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

    fn record(&mut self, stream: Stream, tag: char, content: &[u8]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let ts = humantime::format_rfc3339_nanos(SystemTime::now());
        let mut line = Vec::with_capacity(content.len() + 48);
        line.extend_from_slice(format!("{ts} {} {tag} ", stream.name()).as_bytes());
        line.extend_from_slice(content);
        line.push(b'\n');
        // A full disk must not stop the container; the bytes are lost, as with
        // containerd's logger.
        let _ = file.write_all(&line);
    }

    /// Adds output: complete lines become `F` records, overlong ones `P` records, and
    /// the rest waits for more.
    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        let i = stream as usize;
        let mut buf = std::mem::take(&mut self.partial[i]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + nl];
            for chunk in line
                .chunks(self.max_line.max(1))
                .collect::<Vec<_>>()
                .iter()
                .rev()
                .skip(1)
                .rev()
            {
                self.record(stream, 'P', chunk);
            }
            let last = line.chunks(self.max_line.max(1)).last().unwrap_or(&[]);
            self.record(stream, 'F', last);
            start += nl + 1;
        }
        let mut rest = buf.split_off(start);
        while rest.len() >= self.max_line {
            let tail = rest.split_off(self.max_line);
            self.record(stream, 'P', &rest);
            rest = tail;
        }
        self.partial[i] = rest;
    }

    /// The stream ended: what is left is written as a full line.
    pub fn finish(&mut self, stream: Stream) {
        let rest = std::mem::take(&mut self.partial[stream as usize]);
        if !rest.is_empty() {
            self.record(stream, 'F', &rest);
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
