//! crustd's side: starting a monitor and talking to it.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixStream,
    process::Command,
};

use super::{MonitorPids, Reply, Request, StartMessage};

/// How long a monitor may take to set a pod up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("start monitor {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("monitor setup failed: {0}")]
    Setup(String),
    #[error("monitor did not report within {0:?}")]
    Timeout(Duration),
    #[error("monitor at {socket}: {reason}")]
    Unreachable { socket: PathBuf, reason: String },
    /// The monitor answered, and said no.
    #[error("monitor at {socket} refused: {reason}")]
    Refused { socket: PathBuf, reason: String },
}

/// Starts `crust-monitor --spec <spec>` with stderr appended to `log`, and waits for
/// its start message. On success the monitor is running detached from us.
pub async fn spawn(bin: &Path, spec: &Path, log: &Path) -> Result<MonitorPids, MonitorError> {
    let spawn_err = |source| MonitorError::Spawn {
        bin: bin.to_path_buf(),
        source,
    };
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(spawn_err)?;
    let mut child = Command::new(bin)
        .arg("--spec")
        .arg(spec)
        .env(super::daemon::PARENT_ENV, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_err)?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    let read =
        tokio::time::timeout(START_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await;
    // The process we started is only the launcher half; it exits right after
    // reporting. Reap it so it does not linger as a zombie.
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    match read {
        Err(_) => Err(MonitorError::Timeout(START_TIMEOUT)),
        Ok(Err(e)) => Err(MonitorError::Setup(format!("read start message: {e}"))),
        Ok(Ok(_)) => match serde_json::from_str::<StartMessage>(line.trim()) {
            Ok(StartMessage::Ready(pids)) => Ok(pids),
            Ok(StartMessage::Error(reason)) => Err(MonitorError::Setup(reason)),
            Err(_) => Err(MonitorError::Setup(format!("unexpected output {line:?}"))),
        },
    }
}

/// Sends one request to the monitor listening on `socket`.
pub async fn request(
    socket: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<Reply, MonitorError> {
    let unreachable = |reason: String| MonitorError::Unreachable {
        socket: socket.to_path_buf(),
        reason,
    };
    let exchange = async {
        let mut stream = UnixStream::connect(socket)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let mut line = serde_json::to_string(req).expect("request serializes");
        line.push('\n');
        stream
            .write_all(line.as_bytes())
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let mut answer = String::new();
        BufReader::new(stream)
            .read_line(&mut answer)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        serde_json::from_str::<Reply>(answer.trim())
            .map_err(|e| unreachable(format!("bad reply {answer:?}: {e}")))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| unreachable(format!("no reply within {timeout:?}")))?
}
