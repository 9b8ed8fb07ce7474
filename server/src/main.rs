//! `crustd`: the crust CRI daemon.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use crust_server::config::{self, DEFAULT_CONFIG_PATH, LogFormat, Overrides};

#[derive(Parser)]
#[command(
    name = "crustd",
    version,
    about = "crust: a Kubernetes CRI container runtime"
)]
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
    /// Work with the CNI pod network configuration.
    Cni {
        #[command(subcommand)]
        action: CniAction,
    },
}

#[derive(Subcommand)]
enum CniAction {
    /// Write crust's default pod network (bridge crust0, 10.88.0.0/16, portmap) into
    /// the configured CNI config dir, unless it already holds a network config.
    InstallDefault,
    /// Print crust's default pod network conflist.
    Default,
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
    // Before anything else runs (no thread, no child yet): whatever we inherited
    // without close-on-exec must not reach monitors, containers, execs, runc or CNI
    // plugins (CVE-2024-21626 class). It stays usable here; nothing of ours needs it.
    crust_runtime::fds::mark_cloexec_from(3);
    // What we create (pod files, records, CNI caches, image store files) gets the
    // modes we ask for minus 022, whatever the init system or shell handed us: under
    // umask 000 every file made without an explicit mode was world-writable. Before
    // any thread exists, so nothing races the change; monitors and helpers inherit it.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
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
        Some(Command::Config {
            action: ConfigAction::Default,
        }) => {
            print!("{}", config::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
        Some(Command::Config {
            action: ConfigAction::Check { file },
        }) => match config::load(&file, true, &Overrides::default()) {
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
        },
        Some(Command::Cni {
            action: CniAction::Default,
        }) => {
            print!("{}", crust_network::DEFAULT_CONFLIST);
            ExitCode::SUCCESS
        }
        Some(Command::Cni {
            action: CniAction::InstallDefault,
        }) => {
            let (path, required) = match &cli.config {
                Some(p) => (p.clone(), true),
                None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
            };
            match config::load(&path, required, &overrides)
                .map_err(anyhow::Error::from)
                .and_then(|l| install_default_cni(&l.config))
            {
                Ok(message) => {
                    println!("{message}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("crustd: {e:#}");
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

/// Installs the default conflist when the config dir has no network config file.
fn install_default_cni(config: &config::Config) -> anyhow::Result<String> {
    let dir = &config.network.cni_conf_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let existing: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist" | "json")
            )
        })
        .collect();
    if let Some(first) = existing.first() {
        return Ok(format!(
            "{} already has a network config ({}); left unchanged",
            dir.display(),
            first.display()
        ));
    }
    let file = dir.join(crust_network::DEFAULT_CONFLIST_NAME);
    std::fs::write(&file, crust_network::DEFAULT_CONFLIST)
        .with_context(|| format!("write {}", file.display()))?;
    Ok(format!("installed {}", file.display()))
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
