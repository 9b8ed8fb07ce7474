//! `crustctl`: a CRI client with crictl's verbs and flags.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use crust_ctl::output::{self, Format};
use crust_proto::runtime::v1::{StatusRequest, VersionRequest};

mod ctr_cmds;
mod events_cmd;
mod image_cmds;
mod pod_cmds;
mod ps_cmd;
mod pull_progress;
mod stats_cmd;
mod stream_cmds;

const DEFAULT_ENDPOINT: &str = "unix:///run/crust/crust.sock";

#[derive(Parser)]
#[command(
    name = "crustctl",
    version,
    about = "A CRI client for crust (and any other CRI runtime)"
)]
struct Cli {
    /// Runtime endpoint: unix:///path/to/socket.
    #[arg(short = 'r', long = "runtime-endpoint", visible_alias = "endpoint", env = "CONTAINER_RUNTIME_ENDPOINT", default_value = DEFAULT_ENDPOINT, global = true)]
    endpoint: String,
    /// Timeout for connecting and for each call (e.g. 2s, 500ms, 1m).
    #[arg(short = 't', long, default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The Go template `-o go-template` prints with, over the `-o json` document
    /// (e.g. '{{.status.id}}'); crustctl's subset of text/template, see docs/crustctl.md.
    #[arg(long, global = true)]
    template: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the runtime's name and CRI version.
    Version {
        /// Output format; `table` is crictl's text form.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Show the runtime's status conditions and debug information.
    Info {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "json")]
        output: Format,
        /// Only the status conditions, without verbose information.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print the runtime's container and pod events as they happen (GetContainerEvents),
    /// one JSON object a line (or YAML, a table, go-template), until interrupted.
    Events {
        #[arg(short, long, value_enum, default_value = "json")]
        output: Format,
    },
    /// List the descriptors of the pod metrics the runtime exposes.
    Metricdescs {
        #[arg(short, long, value_enum, default_value = "json")]
        output: Format,
    },
    /// Show crustctl's connection settings as crictl's config file has them
    /// (runtime-endpoint, image-endpoint, timeout); `--get KEY` prints one.
    Config {
        #[arg(long)]
        get: Option<String>,
    },
    /// Print a shell completion script: `source <(crustctl completion bash)`.
    Completion {
        #[arg(value_enum, default_value = "bash")]
        shell: clap_complete::Shell,
    },
    #[command(flatten)]
    Pod(pod_cmds::PodCommand),
    #[command(flatten)]
    Container(ctr_cmds::ContainerCommand),
    #[command(flatten)]
    Image(image_cmds::ImageCommand),
    #[command(flatten)]
    Stream(stream_cmds::StreamCommand),
}

impl Command {
    /// How long the runtime may take on purpose beyond an ordinary call: `stop -t N`
    /// waits up to N seconds for the container to exit before SIGKILL. Added to
    /// `--timeout` for the call's deadline, as crictl (k8s cri-client) does.
    fn waits_for(&self) -> Duration {
        match self {
            Command::Container(ctr_cmds::ContainerCommand::Stop { timeout, .. }) => {
                Duration::from_secs(u64::try_from(*timeout).unwrap_or(0))
            }
            _ => Duration::ZERO,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crustctl: start async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // A blocking read of stdin (exec -i) may still be pending; do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok((text, code)) => {
            print!("{text}");
            // Remote exit codes are 0-255 (a shell's); anything else is a failure.
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Err(e) => {
            eprintln!("crustctl: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The completion script for `shell`, generated from the command definitions, so it
/// offers every verb and flag this build has.
fn completion(shell: clap_complete::Shell) -> String {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "crustctl", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// What to print and the exit code.
async fn run(cli: Cli) -> anyhow::Result<(String, i32)> {
    if let Command::Config { get } = &cli.command {
        return Ok((config_text(&cli, get.as_deref())?, 0));
    }
    if let Command::Completion { shell } = cli.command {
        return Ok((completion(shell), 0));
    }
    if let Some(t) = &cli.template {
        output::set_template(t.clone());
        output::check_template()?;
    }
    let call_timeout = cli.timeout + cli.command.waits_for();
    let channel =
        crust_ctl::connect_with_deadline(&cli.endpoint, cli.timeout, call_timeout).await?;
    let mut runtime = crust_ctl::runtime_client(channel.clone());
    if let Command::Stream(cmd) = cli.command {
        return Ok((String::new(), stream_cmds::run(cmd, runtime).await?));
    }
    if let Command::Events { output } = cli.command {
        if output == Format::GoTemplate {
            output::check_template()?;
        }
        events_cmd::events(output, runtime).await?;
        return Ok((String::new(), 0));
    }
    let text = match cli.command {
        Command::Stream(_)
        | Command::Config { .. }
        | Command::Completion { .. }
        | Command::Events { .. } => {
            unreachable!("handled above")
        }
        Command::Metricdescs { output } => events_cmd::metric_descriptors(output, runtime).await?,
        Command::Pod(cmd) => pod_cmds::run(cmd, runtime).await?,
        Command::Container(cmd) => ctr_cmds::run(cmd, channel).await?,
        Command::Image(cmd) => image_cmds::run(cmd, channel, &cli.endpoint).await?,
        Command::Version { output: format } => {
            let v = runtime
                .version(VersionRequest {
                    version: "v1".into(),
                })
                .await
                .context("Version")?
                .into_inner();
            match format {
                Format::Table => output::version_table(&v),
                _ => output::render(&serde_json::to_value(&v)?, format)?,
            }
        }
        Command::Info {
            output: format,
            quiet,
        } => {
            let s = runtime
                .status(StatusRequest { verbose: !quiet })
                .await
                .context("Status")?
                .into_inner();
            match format {
                Format::Table => output::info_table(&s),
                _ => output::render(&output::info_value(&s, quiet), format)?,
            }
        }
    };
    Ok((text, 0))
}

/// `config`: the settings in effect, with crictl's keys. crustctl reads no config file:
/// they come from the flags and `CONTAINER_RUNTIME_ENDPOINT`; images are served on the
/// runtime endpoint.
fn config_text(cli: &Cli, get: Option<&str>) -> anyhow::Result<String> {
    let settings = [
        ("runtime-endpoint", cli.endpoint.clone()),
        ("image-endpoint", cli.endpoint.clone()),
        ("timeout", cli.timeout.as_secs().to_string()),
    ];
    match get {
        None => Ok(settings
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect()),
        Some(key) => match settings.iter().find(|(k, _)| *k == key) {
            Some((_, v)) => Ok(format!("{v}\n")),
            None => anyhow::bail!(
                "no setting {key:?}: crustctl has {}",
                settings.map(|(k, _)| k).join(", ")
            ),
        },
    }
}

/// The error and its causes, each once: transport errors repeat their source in their
/// own message, which `{:#}` would print twice. A gRPC status ends the chain, printed
/// as grpc-go (and so crictl) prints it: `rpc error: code = NotFound desc = ...`.
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = match cause.downcast_ref::<tonic::Status>() {
            Some(status) => grpc_error(status),
            None => cause.to_string(),
        };
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
        if cause.is::<tonic::Status>() {
            break;
        }
    }
    text
}

/// grpc-go's `status.Error` text. tonic reports its own client deadline as CANCELLED
/// "Timeout expired"; grpc-go (crictl) reports DEADLINE_EXCEEDED for it.
fn grpc_error(status: &tonic::Status) -> String {
    use std::error::Error;
    use tonic::Code;
    let mut cause = status.source();
    let mut timed_out = false;
    while let Some(e) = cause {
        timed_out |= e.is::<tonic::TimeoutExpired>();
        cause = e.source();
    }
    if timed_out {
        return "rpc error: code = DeadlineExceeded desc = context deadline exceeded".into();
    }
    let code = match status.code() {
        // grpc-go spells it with one l.
        Code::Cancelled => "Canceled".to_string(),
        other => format!("{other:?}"),
    };
    format!("rpc error: code = {code} desc = {}", status.message())
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_completion_offers_the_verbs_and_flags() {
        let script = completion(clap_complete::Shell::Bash);
        assert!(script.contains("complete -F _crustctl"), "{script}");
        for word in [
            "runp",
            "inspectp",
            "exec",
            "port-forward",
            "--runtime-endpoint",
        ] {
            assert!(script.contains(word), "{word} missing");
        }
        assert!(completion(clap_complete::Shell::Zsh).contains("#compdef crustctl"));
    }

    #[test]
    fn grpc_errors_print_as_crictl_prints_them() {
        use tonic::{Code, Status};
        let cases = [
            (
                anyhow::Error::new(Status::not_found("container \"x\" not found"))
                    .context("stop x"),
                "stop x: rpc error: code = NotFound desc = container \"x\" not found",
            ),
            (
                anyhow::Error::new(Status::failed_precondition("profile is not loaded"))
                    .context("CreateContainer"),
                "CreateContainer: rpc error: code = FailedPrecondition desc = profile is not loaded",
            ),
            (
                anyhow::Error::new(Status::new(Code::Cancelled, "gone")),
                "rpc error: code = Canceled desc = gone",
            ),
            (
                anyhow::Error::new(Status::from_error(Box::new(tonic::TimeoutExpired(()))))
                    .context("stop x"),
                "stop x: rpc error: code = DeadlineExceeded desc = context deadline exceeded",
            ),
            (
                anyhow::anyhow!("container \"x\" not found"),
                "container \"x\" not found",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(error_chain(&err), want, "{err:?}");
        }
    }

    #[test]
    fn config_shows_the_settings_in_effect() {
        let cli =
            Cli::try_parse_from(["crustctl", "-r", "/run/x.sock", "-t", "5s", "config"]).unwrap();
        assert_eq!(
            config_text(&cli, None).unwrap(),
            "runtime-endpoint: /run/x.sock\nimage-endpoint: /run/x.sock\ntimeout: 5\n"
        );
        assert_eq!(config_text(&cli, Some("timeout")).unwrap(), "5\n");
        assert!(config_text(&cli, Some("debug")).is_err());
    }

    #[test]
    fn stop_timeout_extends_the_call_deadline() {
        for (args, want) in [
            (&["crustctl", "stop", "-t", "30", "abc"][..], 30),
            (&["crustctl", "stop", "abc"][..], 10),
            (&["crustctl", "stop", "-t", "0", "abc"][..], 0),
            (&["crustctl", "ps"][..], 0),
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert_eq!(
                cli.command.waits_for(),
                Duration::from_secs(want),
                "{args:?}"
            );
        }
    }
}
