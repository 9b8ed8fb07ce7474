//! Attach: a live session with a running container's own stdio (`kubectl attach`,
//! `kubectl run -i`). The pod's monitor holds the container's stdio; crustd opens an
//! attach connection to it and turns the frames it speaks (see
//! [`crate::monitor::attach`]) into a [`StdioSession`].

use std::{path::Path, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{
        UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{mpsc, oneshot},
    task::AbortHandle,
};

use super::{OUTPUT_QUEUE, StdioEnd, StdioOutput, StdioRequest, StdioSession, TerminalSize};
use crate::{
    error::RuntimeError,
    monitor::{MonitorError, Reply, Request, attach as frame},
    sandbox::SandboxManager,
};

/// How long the monitor may take to accept an attach.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);

impl SandboxManager {
    /// Attaches to the stdio of the running container `id` (or unique prefix).
    ///
    /// `req.tty` must match the container's `tty` (kubelet checks the same); stdin can
    /// only be asked of a container created with `stdin`. With `stdin_once`, the end
    /// of this session's stdin (the sender dropped, or the session dropped) closes the
    /// container's stdin for good. Output is what the container writes while attached;
    /// it also goes to the log as always. Dropping the session detaches; the container
    /// keeps running. An attacher that falls more than 4 MiB behind is detached by the
    /// monitor (the session then ends with [`StdioEnd::Closed`]), so it never slows
    /// the container down.
    ///
    /// ```no_run
    /// # async fn demo(pods: &crust_runtime::sandbox::SandboxManager)
    /// #     -> Result<(), crust_runtime::RuntimeError> {
    /// use crust_runtime::container::StdioRequest;
    /// let want = StdioRequest { stdout: true, stderr: true, ..Default::default() };
    /// let mut session = pods.attach("3f2a", want).await?;
    /// while let Some(chunk) = session.output.recv().await {
    ///     println!("{chunk:?}");
    /// }
    /// println!("{:?}", session.end.await);
    /// # Ok(()) }
    /// ```
    pub async fn attach(&self, id: &str, req: StdioRequest) -> Result<StdioSession, RuntimeError> {
        let c = self.running_container(id)?;
        if req.stdin && !c.spec.stdin {
            return Err(RuntimeError::InvalidArgument {
                field: "stdin",
                reason: format!("container {} was not created with stdin", c.id),
            });
        }
        if req.tty != c.spec.tty {
            return Err(RuntimeError::InvalidArgument {
                field: "tty",
                reason: format!(
                    "tty {} requested, but container {} has tty {}",
                    req.tty, c.id, c.spec.tty
                ),
            });
        }
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(RuntimeError::InvalidArgument {
                field: "stdin/stdout/stderr",
                reason: "one of them must be requested".into(),
            });
        }
        let socket =
            self.snapshot(&c.pod_id)
                .map(|s| s.monitor_socket())
                .ok_or(RuntimeError::NotReady {
                    id: c.pod_id.clone(),
                })?;
        match attach_to_monitor(&socket, &c.id, req).await {
            Ok(session) => Ok(session),
            Err(MonitorError::Refused { reason, .. }) => {
                // Most likely it exited since we looked: say so as a state error.
                self.running_container(&c.id)?;
                Err(RuntimeError::Launch {
                    id: c.id,
                    message: reason,
                })
            }
            Err(source) => Err(RuntimeError::Monitor {
                kind: "container",
                id: c.id,
                source,
            }),
        }
    }
}

/// Opens an attach session to container `id` on the monitor listening at `socket`
/// (what [`SandboxManager::attach`] does after its checks; the monitor still refuses
/// a container that is not running, or stdin of one created without it).
pub async fn attach_to_monitor(
    socket: &Path,
    id: &str,
    req: StdioRequest,
) -> Result<StdioSession, MonitorError> {
    let unreachable = |reason: String| MonitorError::Unreachable {
        socket: socket.to_path_buf(),
        reason,
    };
    let handshake = async {
        let mut stream = UnixStream::connect(socket)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let request = Request::Attach {
            id: id.to_string(),
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        };
        let mut line = serde_json::to_vec(&request).expect("request serializes");
        line.push(b'\n');
        stream
            .write_all(&line)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        // Byte by byte: frames follow the reply line on the same stream, and a
        // buffered reader would swallow them.
        let mut answer = Vec::new();
        loop {
            let byte = stream
                .read_u8()
                .await
                .map_err(|e| unreachable(format!("read reply: {e}")))?;
            if byte == b'\n' {
                break;
            }
            answer.push(byte);
            if answer.len() > 64 * 1024 {
                return Err(unreachable("reply line too long".into()));
            }
        }
        let reply: Reply = serde_json::from_slice(&answer).map_err(|e| {
            unreachable(format!(
                "bad reply {:?}: {e}",
                String::from_utf8_lossy(&answer)
            ))
        })?;
        if !reply.ok {
            return Err(MonitorError::Refused {
                socket: socket.to_path_buf(),
                reason: reply.error.unwrap_or_default(),
            });
        }
        Ok(stream)
    };
    let stream = tokio::time::timeout(ATTACH_TIMEOUT, handshake)
        .await
        .map_err(|_| unreachable(format!("no reply within {ATTACH_TIMEOUT:?}")))??;
    let (rd, wr) = stream.into_split();

    let (output_tx, output) = mpsc::channel(OUTPUT_QUEUE);
    let (end_tx, end) = oneshot::channel();
    let (stdin, stdin_rx) = if req.stdin {
        let (tx, rx) = mpsc::channel(OUTPUT_QUEUE);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let (resize, resize_rx) = if req.tty {
        let (tx, rx) = mpsc::channel(4);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let reader = tokio::spawn(read_frames(rd, output_tx, end_tx));
    let writer = tokio::spawn(write_frames(wr, stdin_rx, resize_rx));
    Ok(StdioSession {
        stdin,
        resize,
        output,
        end,
        guard: Some(Box::new(Detach([
            reader.abort_handle(),
            writer.abort_handle(),
        ]))),
    })
}

/// Ends both relay tasks, which closes the connection: the monitor detaches us.
struct Detach([AbortHandle; 2]);

impl Drop for Detach {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Reads one frame; `Ok(None)` at a clean end of stream before a header.
async fn read_frame(rd: &mut (impl AsyncRead + Unpin)) -> std::io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; frame::HEADER];
    rd.read_exact(&mut header).await?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > frame::MAX_PAYLOAD {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut payload = vec![0u8; len];
    rd.read_exact(&mut payload).await?;
    Ok((header[0], payload))
}

/// Monitor → session: output in order, then how it ended.
async fn read_frames(
    mut rd: OwnedReadHalf,
    output: mpsc::Sender<StdioOutput>,
    end: oneshot::Sender<StdioEnd>,
) {
    let mut output = Some(output);
    let why = loop {
        let (kind, payload) = match read_frame(&mut rd).await {
            Ok(f) => f,
            Err(e) => break format!("connection to the monitor ended: {e}"),
        };
        let chunk = match kind {
            frame::STDOUT => StdioOutput::Stdout(payload),
            frame::STDERR => StdioOutput::Stderr(payload),
            frame::CLOSED => {
                let code = payload
                    .get(..4)
                    .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(-1);
                break if code >= 0 {
                    format!("container exited with code {code}")
                } else {
                    "container was removed".to_string()
                };
            }
            _ => continue,
        };
        // Nobody reads output any more: keep reading for the end only.
        if let Some(tx) = &output
            && tx.send(chunk).await.is_err()
        {
            output = None;
        }
    };
    drop(output);
    let _ = end.send(StdioEnd::Closed(why));
}

async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Session → monitor: stdin, its end, and resizes.
async fn write_frames(
    mut wr: OwnedWriteHalf,
    mut stdin: Option<mpsc::Receiver<Vec<u8>>>,
    mut resize: Option<mpsc::Receiver<TerminalSize>>,
) {
    let mut buf = Vec::new();
    while stdin.is_some() || resize.is_some() {
        buf.clear();
        tokio::select! {
            data = recv(&mut stdin) => match data {
                Some(data) => {
                    for chunk in data.chunks(frame::MAX_PAYLOAD) {
                        frame::encode(&mut buf, frame::STDIN, chunk);
                    }
                }
                None => {
                    frame::encode(&mut buf, frame::STDIN_EOF, &[]);
                    stdin = None;
                }
            },
            size = recv(&mut resize) => match size {
                Some(size) => {
                    let mut payload = [0u8; 4];
                    payload[..2].copy_from_slice(&size.width.to_be_bytes());
                    payload[2..].copy_from_slice(&size.height.to_be_bytes());
                    frame::encode(&mut buf, frame::RESIZE, &payload);
                }
                None => resize = None,
            },
        }
        if wr.write_all(&buf).await.is_err() {
            break;
        }
    }
    // Dropping the write half shuts our side down, which the monitor takes as a
    // detach: hold it until the session is dropped (which aborts this task).
    std::future::pending::<()>().await;
    drop(wr);
}
