//! Reading a CRI container log (`<RFC3339Nano> stdout|stderr P|F <text>` records, as
//! kubelet and crictl do) back into the lines the container wrote, also while it grows
//! and across rotation.
//!
//! ```
//! let mut reader = crust_ctl::cri_log::LogReader::new("/nonexistent.log");
//! assert!(reader.read_new().is_err());
//! ```

use std::{
    fs::File,
    io::{self, Read, Seek},
    os::unix::fs::MetadataExt,
    path::PathBuf,
};

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line as the container wrote it: `P` records joined, without the newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: Stream,
    /// The timestamp of the line's first record.
    pub timestamp: String,
    pub text: String,
}

/// Follows one log path: reads what was appended since the last call, keeps a line
/// whose record is still partial (`P`) until its final (`F`) record arrives, per
/// stream, and when the file is rotated (a new file at the path: kubelet renames the
/// old one and ReopenContainerLog makes a new one) reads the rest of the old file
/// before starting on the new one.
pub struct LogReader {
    path: PathBuf,
    file: Option<File>,
    /// (device, inode) of `file`.
    identity: (u64, u64),
    /// Bytes after the last complete record read.
    carry: Vec<u8>,
    /// Partial lines: (timestamp of the first part, bytes so far), stdout then stderr.
    /// Bytes, not text: the monitor splits long lines by bytes, so a character can be
    /// cut between two records.
    pending: [Option<(String, Vec<u8>)>; 2],
}

impl LogReader {
    pub fn new(path: impl Into<PathBuf>) -> LogReader {
        LogReader {
            path: path.into(),
            file: None,
            identity: (0, 0),
            carry: Vec::new(),
            pending: [None, None],
        }
    }

    /// The complete lines appended since the last call. Fails only when the path has
    /// never been readable.
    pub fn read_new(&mut self) -> io::Result<Vec<LogLine>> {
        let mut lines = Vec::new();
        if self.file.is_none() {
            let file = File::open(&self.path)?;
            let meta = file.metadata()?;
            self.identity = (meta.dev(), meta.ino());
            self.file = Some(file);
        }
        self.drain(&mut lines)?;
        // Rotated (another file at the path) or truncated (shorter than what we read):
        // the old file's rest is in; continue with the file now at the path.
        if let Ok(meta) = std::fs::metadata(&self.path) {
            let position = match self.file.as_mut() {
                Some(f) => f.stream_position()?,
                None => 0,
            };
            let rotated = (meta.dev(), meta.ino()) != self.identity;
            if rotated || meta.len() < position {
                if rotated {
                    // Whatever the monitor wrote to the old file after our drain above
                    // and before it reopened.
                    self.drain(&mut lines)?;
                }
                self.carry.clear();
                self.file = None;
                if let Ok(file) = File::open(&self.path) {
                    self.identity = (meta.dev(), meta.ino());
                    self.file = Some(file);
                    self.drain(&mut lines)?;
                }
            }
        }
        Ok(lines)
    }

    /// Lines still waiting for their final record (the container exited mid-line):
    /// what they have so far.
    pub fn flush(&mut self) -> Vec<LogLine> {
        let mut out = Vec::new();
        for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            if let Some((timestamp, bytes)) = self.pending[i].take() {
                out.push(LogLine {
                    stream,
                    timestamp,
                    text: String::from_utf8_lossy(&bytes).into_owned(),
                });
            }
        }
        out
    }

    fn drain(&mut self, lines: &mut Vec<LogLine>) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        self.carry.extend_from_slice(&buf);
        let complete = match self.carry.iter().rposition(|b| *b == b'\n') {
            Some(i) => i + 1,
            None => return Ok(()),
        };
        let records: Vec<u8> = self.carry.drain(..complete).collect();
        for record in records.split(|b| *b == b'\n') {
            if let Some(line) = self.take(record) {
                lines.push(line);
            }
        }
        Ok(())
    }

    /// Adds one record; returns the line it completes, if it does.
    fn take(&mut self, record: &[u8]) -> Option<LogLine> {
        let mut parts = record.splitn(4, |b| *b == b' ');
        let (timestamp, stream, tag) = (parts.next()?, parts.next()?, parts.next()?);
        let text = parts.next().unwrap_or(b"");
        let (slot, stream) = match stream {
            b"stdout" => (0, Stream::Stdout),
            b"stderr" => (1, Stream::Stderr),
            _ => return None,
        };
        let timestamp = String::from_utf8_lossy(timestamp);
        let pending =
            self.pending[slot].get_or_insert_with(|| (timestamp.into_owned(), Vec::new()));
        pending.1.extend_from_slice(text);
        if tag == b"P" {
            return None;
        }
        let (timestamp, bytes) = self.pending[slot].take()?;
        Some(LogLine {
            stream,
            timestamp,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn texts(lines: &[LogLine]) -> Vec<(Stream, &str)> {
        lines.iter().map(|l| (l.stream, l.text.as_str())).collect()
    }

    #[test]
    fn partial_records_join_per_stream_and_wait_for_their_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut f = File::create(&path).unwrap();
        let mut r = LogReader::new(&path);
        write!(
            f,
            "t1 stdout P hel\nt2 stderr F oops\nt3 stdout P lo, \nt4 std"
        )
        .unwrap();
        let got = r.read_new().unwrap();
        assert_eq!(
            texts(&got),
            [(Stream::Stderr, "oops")],
            "stdout still partial"
        );
        writeln!(f, "out F world").unwrap();
        let got = r.read_new().unwrap();
        assert_eq!(texts(&got), [(Stream::Stdout, "hello, world")]);
        assert_eq!(got[0].timestamp, "t1", "a line's time is its first part's");
        writeln!(f, "t5 stdout P cut").unwrap();
        assert!(r.read_new().unwrap().is_empty());
        assert_eq!(texts(&r.flush()), [(Stream::Stdout, "cut")]);
    }

    #[test]
    fn a_character_split_between_records_is_whole_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        // "é" is 0xC3 0xA9; the monitor split the line between its two bytes.
        let bytes = b"t1 stdout P caf\xC3\nt2 stdout F \xA9!\n".to_vec();
        std::fs::write(&path, bytes).unwrap();
        let mut r = LogReader::new(&path);
        assert_eq!(
            texts(&r.read_new().unwrap()),
            [(Stream::Stdout, "caf\u{e9}!")]
        );
    }

    #[test]
    fn rotation_reads_the_rest_of_the_old_file_then_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut f = File::create(&path).unwrap();
        writeln!(f, "t1 stdout F one").unwrap();
        let mut r = LogReader::new(&path);
        assert_eq!(texts(&r.read_new().unwrap()), [(Stream::Stdout, "one")]);
        writeln!(f, "t2 stdout F two").unwrap();
        std::fs::rename(&path, dir.path().join("c.log.1")).unwrap();
        let mut g = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .unwrap();
        writeln!(g, "t3 stdout F three").unwrap();
        assert_eq!(
            texts(&r.read_new().unwrap()),
            [(Stream::Stdout, "two"), (Stream::Stdout, "three")]
        );
        // Truncated in place (copytruncate): start over at the beginning.
        let h = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        drop(h);
        writeln!(g, "t4 stdout F four").unwrap();
        assert_eq!(texts(&r.read_new().unwrap()), [(Stream::Stdout, "four")]);
    }
}
