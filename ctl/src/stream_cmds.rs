//! Streaming verbs, as crictl has them: exec (streaming, or `--sync` for ExecSync),
//! attach, port-forward.

use std::{io::IsTerminal, time::Duration};

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use crust_ctl::stream_client::{self, StreamOpts, Transport};
use crust_proto::runtime::v1::{
    AttachRequest, ContainerStatusRequest, ExecRequest, ExecSyncRequest, PortForwardRequest,
    runtime_service_client::RuntimeServiceClient,
};
use rustix::termios::{self, OptionalActions, Termios};
use tokio::{io::AsyncWriteExt, net::TcpListener, sync::mpsc};
use tonic::transport::Channel;

#[derive(Subcommand)]
pub enum StreamCommand {
    /// Run a command in a running container (streaming Exec; `--sync` for ExecSync).
    Exec {
        /// Pass stdin to the command.
        #[arg(short, long)]
        interactive: bool,
        /// Allocate a terminal; the local one is put in raw mode.
        #[arg(short, long)]
        tty: bool,
        /// Run with ExecSync and print its output once it exits.
        #[arg(short, long)]
        sync: bool,
        /// Seconds ExecSync may run (0: no limit).
        #[arg(long, default_value_t = 0)]
        timeout: i64,
        #[arg(long, value_enum, default_value = "spdy")]
        transport: TransportArg,
        container_id: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Attach to a running container's stdio.
    Attach {
        /// Pass stdin to the container.
        #[arg(short, long)]
        interactive: bool,
        /// Attach as a terminal (also taken from the container's spec).
        #[arg(short, long)]
        tty: bool,
        #[arg(long, value_enum, default_value = "spdy")]
        transport: TransportArg,
        container_id: String,
    },
    /// Forward local ports to a pod: LOCAL:REMOTE (LOCAL 0 picks a free port) or PORT.
    PortForward {
        #[arg(long, value_enum, default_value = "spdy")]
        transport: TransportArg,
        pod_id: String,
        #[arg(required = true)]
        ports: Vec<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TransportArg {
    Spdy,
    Websocket,
}

impl From<TransportArg> for Transport {
    fn from(t: TransportArg) -> Transport {
        match t {
            TransportArg::Spdy => Transport::Spdy,
            TransportArg::Websocket => Transport::WebSocket,
        }
    }
}

/// Runs a streaming verb; returns the exit code crustctl should exit with.
pub async fn run(
    cmd: StreamCommand,
    mut client: RuntimeServiceClient<Channel>,
) -> anyhow::Result<i32> {
    match cmd {
        StreamCommand::Exec {
            interactive,
            tty,
            sync: true,
            timeout,
            container_id,
            cmd,
            ..
        } => {
            if interactive || tty {
                bail!("--sync runs without stdin or a terminal; drop -i/-t");
            }
            let r = client
                .exec_sync(ExecSyncRequest {
                    container_id,
                    cmd,
                    timeout,
                })
                .await
                .context("ExecSync")?
                .into_inner();
            let mut out = tokio::io::stdout();
            out.write_all(&r.stdout).await?;
            out.flush().await?;
            let mut err = tokio::io::stderr();
            err.write_all(&r.stderr).await?;
            err.flush().await?;
            Ok(r.exit_code)
        }
        StreamCommand::Exec {
            interactive,
            tty,
            transport,
            container_id,
            cmd,
            ..
        } => {
            let opts = stdio_opts(interactive, tty);
            let url = client
                .exec(ExecRequest {
                    container_id,
                    cmd,
                    tty: opts.tty,
                    stdin: opts.stdin,
                    stdout: opts.stdout,
                    stderr: opts.stderr,
                    ..Default::default()
                })
                .await
                .context("Exec")?
                .into_inner()
                .url;
            stdio_session(&url, transport.into(), opts).await
        }
        StreamCommand::Attach {
            interactive,
            tty,
            transport,
            container_id,
        } => {
            let tty = tty || container_has_tty(&mut client, &container_id).await?;
            let opts = stdio_opts(interactive, tty);
            let url = client
                .attach(AttachRequest {
                    container_id,
                    stdin: opts.stdin,
                    tty: opts.tty,
                    stdout: opts.stdout,
                    stderr: opts.stderr,
                    ..Default::default()
                })
                .await
                .context("Attach")?
                .into_inner()
                .url;
            stdio_session(&url, transport.into(), opts).await
        }
        StreamCommand::PortForward {
            transport,
            pod_id,
            ports,
        } => {
            port_forward(client, transport.into(), pod_id, &ports).await?;
            Ok(0)
        }
    }
}

/// crictl's streams: stdout always, stderr unless a terminal merges it.
fn stdio_opts(interactive: bool, tty: bool) -> StreamOpts {
    StreamOpts {
        stdin: interactive,
        stdout: true,
        stderr: !tty,
        tty,
    }
}

/// Whether the container was created with a terminal (`process.terminal` of the OCI
/// spec in the verbose status); false when the runtime does not say.
async fn container_has_tty(
    client: &mut RuntimeServiceClient<Channel>,
    id: &str,
) -> anyhow::Result<bool> {
    let r = client
        .container_status(ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        })
        .await
        .context("ContainerStatus")?
        .into_inner();
    Ok(r.info
        .get("info")
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|v| v["runtimeSpec"]["process"]["terminal"].as_bool())
        .unwrap_or(false))
}

async fn stdio_session(url: &str, transport: Transport, opts: StreamOpts) -> anyhow::Result<i32> {
    let mut resize = None;
    // Restored on drop, so also when the session fails.
    let _raw = if opts.tty && std::io::stdin().is_terminal() {
        let (tx, rx) = mpsc::channel(4);
        resize = Some(rx);
        watch_size(tx);
        Some(RawMode::enter().context("put the terminal in raw mode")?)
    } else {
        None
    };
    let code = stream_client::exec_stream(
        url,
        transport,
        opts,
        tokio::io::stdin(),
        tokio::io::stdout(),
        tokio::io::stderr(),
        resize,
    )
    .await?;
    Ok(code)
}

/// Sends the terminal's size now and on every SIGWINCH.
fn watch_size(tx: mpsc::Sender<(u16, u16)>) {
    tokio::spawn(async move {
        let size = || {
            termios::tcgetwinsize(std::io::stdout())
                .ok()
                .filter(|w| w.ws_col > 0 && w.ws_row > 0)
                .map(|w| (w.ws_col, w.ws_row))
        };
        if let Some(s) = size()
            && tx.send(s).await.is_err()
        {
            return;
        }
        let Ok(mut winch) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        else {
            return;
        };
        while winch.recv().await.is_some() {
            if let Some(s) = size()
                && tx.send(s).await.is_err()
            {
                return;
            }
        }
    });
}

/// The local terminal in raw mode until dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> std::io::Result<RawMode> {
        let saved = termios::tcgetattr(std::io::stdin())?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// `LOCAL:REMOTE` or `PORT` (both the same), as kubectl and crictl take them.
fn parse_port_spec(spec: &str) -> anyhow::Result<(u16, u16)> {
    let (local, remote) = spec.split_once(':').unwrap_or((spec, spec));
    let local: u16 = local
        .parse()
        .with_context(|| format!("invalid local port in {spec:?}"))?;
    let remote: u16 = remote
        .parse()
        .with_context(|| format!("invalid remote port in {spec:?}"))?;
    if remote == 0 {
        bail!("remote port in {spec:?} must be 1-65535");
    }
    Ok((local, remote))
}

/// Listens on 127.0.0.1 for each spec and forwards every accepted connection through
/// a fresh PortForward URL (tokens are single-use). Runs until interrupted.
async fn port_forward(
    client: RuntimeServiceClient<Channel>,
    transport: Transport,
    pod_id: String,
    specs: &[String],
) -> anyhow::Result<()> {
    let mut listeners = Vec::new();
    for spec in specs {
        let (local, remote) = parse_port_spec(spec)?;
        let listener = TcpListener::bind(("127.0.0.1", local))
            .await
            .with_context(|| format!("listen on 127.0.0.1:{local}"))?;
        let addr = listener.local_addr()?;
        println!("Forwarding from {addr} -> {remote}");
        listeners.push((listener, remote));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (listener, remote) in listeners {
        let (client, pod_id) = (client.clone(), pod_id.clone());
        tasks.spawn(async move {
            loop {
                let tcp = match listener.accept().await {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        eprintln!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (mut client, pod_id) = (client.clone(), pod_id.clone());
                tokio::spawn(async move {
                    println!("Handling connection for {remote}");
                    let url = match client
                        .port_forward(PortForwardRequest {
                            pod_sandbox_id: pod_id,
                            port: vec![i32::from(remote)],
                        })
                        .await
                    {
                        Ok(r) => r.into_inner().url,
                        Err(e) => {
                            eprintln!("PortForward: {}", e.message());
                            return;
                        }
                    };
                    if let Err(e) =
                        stream_client::port_forward_conn(&url, transport, remote, tcp).await
                    {
                        eprintln!("{}", crate::error_chain(&anyhow::Error::new(e)));
                    }
                });
            }
        });
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = tasks.join_next() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs() {
        assert_eq!(parse_port_spec("8080:80").unwrap(), (8080, 80));
        assert_eq!(parse_port_spec("0:80").unwrap(), (0, 80), "0 picks a port");
        assert_eq!(parse_port_spec("5432").unwrap(), (5432, 5432));
        for bad in ["80:0", "x:80", "80:", "70000:80", ""] {
            assert!(parse_port_spec(bad).is_err(), "{bad:?}");
        }
    }
}
