//! A live stdio session with a process in a container: what the streaming server
//! (Exec, Attach) plugs its client streams into. Both an interactive exec and an attach
//! to the container's own stdio hand out the same type, so the server treats them alike.

use tokio::sync::{mpsc, oneshot};

/// A terminal size, in characters (kubelet's `remotecommand.TerminalSize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

/// Which streams a session wants, and whether the process has a terminal (then stderr
/// is merged into stdout, as with a pty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StdioRequest {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Output of the process, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StdioOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StdioEnd {
    /// The process exited with this code (128 + signal when killed by one).
    Exited(i32),
    /// The session ended without an exit code (attach: the container exited or was
    /// removed; or the connection to the monitor broke), with why.
    Closed(String),
}

/// One session. Dropping it ends the session: for an exec, the exec's whole process tree
/// is killed; for an attach, the client is detached and the container keeps running.
#[derive(Debug)]
pub struct StdioSession {
    /// Bytes for the process's stdin; dropping the sender closes stdin (EOF). `None`
    /// when stdin was not requested.
    pub stdin: Option<mpsc::Sender<Vec<u8>>>,
    /// Terminal resizes; `None` without a tty.
    pub resize: Option<mpsc::Sender<TerminalSize>>,
    /// The process's output. Bounded: a slow reader slows the process down, nothing is
    /// dropped. Closed after the last output, before `end` resolves.
    pub output: mpsc::Receiver<StdioOutput>,
    /// Resolves once, when the session is over and all output was delivered.
    pub end: oneshot::Receiver<StdioEnd>,
    /// Held for its Drop: ends what the session runs (kills an exec's cgroup).
    pub guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// How many output chunks may wait for the client before the process is slowed down.
pub const OUTPUT_QUEUE: usize = 16;
