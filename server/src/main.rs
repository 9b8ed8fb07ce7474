//! `crustd`: the crust CRI daemon.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use crust_server::config::{self, DEFAULT_CONFIG_PATH, LogFormat, Overrides};

#[derive(Parser)]
#[command(name = "crustd", version, about = "crust: a Kubernetes CRI container runtime")]
struct Cli {
    /// Main configuration file; drop-ins are read from `<FILE>.d/*.toml`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Persistent state directory (overrides `root`).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Volatile state directory (overrides `state`).
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// CRI socket path (overrides `socket`; default `<state>/crust.sock`).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Log filter, e.g. `info` or `crust_server=debug,info` (overrides `log_level`).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Log format (overrides `log_format`).
    #[arg(long, value_enum)]
    log_format: Option<FormatArg>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the full default configuration, commented.
    Default,
    /// Validate a configuration file and its drop-ins as crustd would load them.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        root: cli.root.clone(),
        state: cli.state.clone(),
        socket: cli.socket.clone(),
        log_level: cli.log_level.clone(),
        log_format: cli.log_format.map(|f| match f {
            FormatArg::Text => LogFormat::Text,
            FormatArg::Json => LogFormat::Json,
        }),
    };
    match cli.command {
        Some(Command::Config { action: ConfigAction::Default }) => {
            print!("{}", config::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
        Some(Command::Config { action: ConfigAction::Check { file } }) => {
            match config::load(&file, true, &Overrides::default()) {
                Ok(loaded) => {
                    for f in &loaded.files {
                        println!("{}: ok", f.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("crustd: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            let (path, required) = match &cli.config {
                Some(p) => (p.clone(), true),
                None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
            };
            let loaded = match config::load(&path, required, &overrides) {
                Ok(loaded) => loaded,
                Err(e) => {
                    eprintln!("crustd: {e}");
                    return ExitCode::from(2);
                }
            };
            crust_server::logging::init(&loaded.config.log_level, loaded.config.log_format);
            match run(loaded) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "crustd failed");
                    eprintln!("crustd: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(loaded: config::Loaded) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("crustd")
        .build()
        .context("start async runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal().context("install signal handlers")?;
        crust_server::serve::serve(loaded.config, loaded.files, shutdown).await
    })
}

/// Resolves on the first SIGTERM or SIGINT.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "received"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "received"),
        }
    })
}
