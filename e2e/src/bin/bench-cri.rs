//! CRI benchmark: pod, container and exec latency plus pod density and memory, through
//! the CRI API only, so the same code measures crust and containerd (see
//! `crust_e2e::cri_bench` for what each row is).
//!
//! - `bench-cri --endpoint unix:///run/x.sock`: measures any running CRI runtime. It
//!   pulls `--image` (default: a busybox image pushed to a loopback registry started
//!   here, which the runtime must be able to pull over plain HTTP).
//! - `bench-cri --compare`: starts a loopback registry, then crustd from this build
//!   (temp root, state, socket, its own CNI bridge network) and Debian's containerd
//!   with its CRI plugin (private config, root, state, socket; runc, cgroupfs, the same
//!   kind of CNI conflist, the registry through `hosts.toml`), runs the benchmark
//!   against both at once with their latency rounds alternated (`--sequential`: one
//!   after the other), and prints both tables and crust/containerd per row.
//!
//! Options: `-n N` latency rounds (50), `--pods M` density pods (100, 0 to skip),
//! `--concurrency C` (10), `--json` (one JSON document instead of tables).
//! `--fresh-connections`: each timed group of RPCs on a new connection, made while
//! the clock runs (what a CLI such as crictl sees), instead of one connection for the
//! run (what kubelet keeps). `--breakdown` (crust only): crustd writes its step spans
//! (`CRUST_SPAN_TIMINGS`), printed as p50/p90 per step of RunPodSandbox,
//! StopPodSandbox, RemovePodSandbox, StopContainer, RemoveContainer and ExecSync over
//! the latency rounds, followed by the CNI
//! floor: the same conflist's ADD and DEL through the network crate alone, N times.
//! `--churn SECONDS`: instead of the latency and density runs, pods (one `sleep`
//! container each) created and removed continuously, `--concurrency` at a time;
//! prints pods/s, p50/p99 and the daemon's RSS before and after.
//!
//! `cargo build --release --bins && ./target/release/bench-cri --compare` (as root;
//! needs `docker-registry`, `busybox-static`, `containernetworking-plugins`, and for
//! `--compare` `containerd` and `runc`). Prints numbers; never passes or fails on them.

use anyhow::{Context, bail};
use crust_e2e::{
    Sandbox,
    bench::percentile,
    cni::TestNetwork,
    containerd::{Containerd, ContainerdOptions, which},
    cri_bench::{self, Options, Report, Target, breakdown},
    registry::Registry,
};
use serde_json::json;

struct Args {
    endpoint: Option<String>,
    compare: bool,
    json: bool,
    image: Option<String>,
    iterations: usize,
    pods: usize,
    concurrency: usize,
    fresh_connections: bool,
    breakdown: bool,
    churn: Option<f64>,
    /// `--compare` one runtime after the other instead of alternating rounds.
    sequential: bool,
}

const USAGE: &str = "usage: bench-cri (--endpoint unix:///PATH | --compare | --crust) [-n N] [--pods M] [--concurrency C] [--image REF] [--json] [--fresh-connections] [--breakdown] [--churn SECONDS] [--sequential]";

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        endpoint: None,
        compare: false,
        json: false,
        image: None,
        iterations: 50,
        pods: 100,
        concurrency: 10,
        fresh_connections: false,
        breakdown: false,
        churn: None,
        sequential: false,
    };
    let mut crust_only = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--endpoint" | "-r" => a.endpoint = Some(value("--endpoint")?),
            "--compare" => a.compare = true,
            "--crust" => crust_only = true,
            "--fresh-connections" => a.fresh_connections = true,
            "--breakdown" => a.breakdown = true,
            "--sequential" => a.sequential = true,
            "--churn" => a.churn = Some(value("--churn")?.parse()?),
            "--json" => a.json = true,
            "--image" => a.image = Some(value("--image")?),
            "-n" | "--iterations" => a.iterations = value("-n")?.parse()?,
            "--pods" => a.pods = value("--pods")?.parse()?,
            "--concurrency" => a.concurrency = value("--concurrency")?.parse()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if [a.compare, a.endpoint.is_some(), crust_only]
        .iter()
        .filter(|&&x| x)
        .count()
        != 1
    {
        bail!("give exactly one of --endpoint, --compare and --crust\n{USAGE}");
    }
    if a.breakdown && a.endpoint.is_some() {
        bail!("--breakdown needs a crustd this benchmark starts (--crust or --compare)");
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    // On Ctrl-C the benchmark future is dropped, so the daemons are killed and their
    // pods, mounts and temp dirs removed by their guards.
    tokio::select! {
        result = bench(args) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

fn log_dir() -> anyhow::Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix("crust-bench-logs-")
        .tempdir_in("/var/tmp")?)
}

fn options(
    args: &Args,
    image: &str,
    pre_pull: Vec<String>,
    log_dir: &tempfile::TempDir,
) -> Options {
    Options {
        iterations: args.iterations,
        pods: args.pods,
        concurrency: args.concurrency,
        image: image.to_string(),
        pre_pull,
        log_dir: log_dir.path().to_path_buf(),
        fresh_connections: args.fresh_connections,
    }
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} CPUs, {mem_gib:.1} GiB, kernel {}, load average {}",
        kernel.trim(),
        load.split(' ').take(3).collect::<Vec<_>>().join(" ")
    )
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let registry = Registry::start().await?;
    let images = cri_bench::push_test_images(&registry).await?;
    let image = args.image.clone().unwrap_or(images.busybox.clone());
    if !args.json {
        println!("machine: {}", machine());
        println!(
            "latency: {} rounds (after 1 warm-up); density: {} pods, concurrency {}",
            args.iterations, args.pods, args.concurrency
        );
    }

    if let Some(endpoint) = &args.endpoint {
        let logs = log_dir()?;
        let target = Target {
            name: "runtime".into(),
            endpoint: endpoint.clone(),
            daemon_pid: None,
        };
        if let Some(seconds) = args.churn {
            let churn =
                cri_bench::churn(&target, &options(&args, &image, vec![], &logs), seconds).await?;
            print_churn(&args, &[churn])?;
            return Ok(());
        }
        let report = cri_bench::run(&target, &options(&args, &image, vec![], &logs)).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report.to_json())?);
        } else {
            report.print_table();
        }
        return Ok(());
    }

    if !args.compare {
        let crust = run_crust(&args, &image).await?;
        match crust {
            Outcome::Report(r) => {
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&r.to_json())?);
                } else {
                    r.print_table();
                }
            }
            Outcome::Churn(c) => print_churn(&args, &[c])?,
        }
        return Ok(());
    }
    if which("containerd").is_none() {
        bail!(
            "--compare needs containerd: apt-get install -y --no-install-recommends containerd runc"
        );
    }
    let (crust, ctrd) = if args.churn.is_some() || args.sequential {
        let crust = run_crust(&args, &image).await?;
        // The same kind of network (bridge + host-local + portmap), a bridge of its own.
        let ctrd = run_containerd(&args, &registry, &image, &images.pause).await?;
        match (crust, ctrd) {
            (Outcome::Report(a), Outcome::Report(b)) => (a, b),
            (Outcome::Churn(a), Outcome::Churn(b)) => return print_churn(&args, &[a, b]),
            _ => unreachable!("both runs are of the same kind"),
        }
    } else {
        compare_interleaved(&args, &registry, &image, &images.pause).await?
    };
    if !args.json {
        crust.print_table();
        println!();
    }
    if args.json {
        let doc = json!({
            "machine": machine(),
            "crust": crust.to_json(),
            "containerd": ctrd.to_json(),
            "ratio": cri_bench::ratio_json(&crust, &ctrd),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        ctrd.print_table();
        println!();
        cri_bench::print_comparison(&crust, &ctrd);
    }
    Ok(())
}

/// A latency and density report, or a churn run's.
enum Outcome {
    Report(Report),
    Churn(cri_bench::Churn),
}

async fn measure(
    args: &Args,
    target: &Target,
    opts: &cri_bench::Options,
) -> anyhow::Result<Outcome> {
    Ok(match args.churn {
        Some(seconds) => Outcome::Churn(cri_bench::churn(target, opts, seconds).await?),
        None => Outcome::Report(cri_bench::run(target, opts).await?),
    })
}

fn print_churn(args: &Args, runs: &[cri_bench::Churn]) -> anyhow::Result<()> {
    if args.json {
        let doc: Vec<_> = runs.iter().map(|c| c.to_json()).collect();
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for c in runs {
            c.print();
        }
    }
    Ok(())
}

/// crustd from this build with a private sandbox and network, serving.
struct CrustUnderTest {
    d: crust_e2e::Crustd,
    logs: tempfile::TempDir,
    timings: std::path::PathBuf,
    _net: TestNetwork,
    sb: Sandbox,
}

impl CrustUnderTest {
    async fn start(args: &Args) -> anyhow::Result<Self> {
        let sb = Sandbox::new()?;
        let net = TestNetwork::install(&sb, &[]);
        sb.write_config("")?;
        let logs = log_dir()?;
        let timings = logs.path().join("span-timings.tsv");
        let spawn = crust_e2e::SpawnOptions {
            env: if args.breakdown {
                vec![(
                    "CRUST_SPAN_TIMINGS".to_string(),
                    timings.display().to_string(),
                )]
            } else {
                vec![]
            },
            ..Default::default()
        };
        // The harness logs at debug; a node (and containerd here) logs at info.
        let mut d = crust_e2e::Crustd::spawn_with(&sb, &["--log-level", "info"], &spawn)?;
        d.wait_ready().await?;
        Ok(CrustUnderTest {
            d,
            logs,
            timings,
            _net: net,
            sb,
        })
    }

    fn target(&self) -> Target {
        Target {
            name: "crust".into(),
            endpoint: self.sb.endpoint(),
            daemon_pid: Some(self.d.pid().as_raw()),
        }
    }

    /// Stops crustd (before the sandbox and its store are removed); on a failed run,
    /// prints its log first. Returns the log directory, which holds the timings.
    async fn stop(mut self, failed: bool) -> tempfile::TempDir {
        if failed {
            eprintln!("crustd log:\n{}", self.d.logs());
        }
        let _ = self.d.terminate().await;
        self.logs
    }
}

/// containerd with its CRI plugin, a private config and the same kind of network.
struct ContainerdUnderTest {
    c: Containerd,
    logs: tempfile::TempDir,
    _net: TestNetwork,
    /// Only for its CNI conf dir and IPAM state.
    _net_sb: Sandbox,
}

impl ContainerdUnderTest {
    async fn start(registry: &Registry, pause: &str) -> anyhow::Result<Self> {
        let net_sb = Sandbox::new()?;
        let net = TestNetwork::install(&net_sb, &[]);
        let mut c = Containerd::start(&ContainerdOptions {
            registry_host: registry.host(),
            sandbox_image: Some(pause.to_string()),
            cni_conf_dir: Some(net_sb.cni_conf_dir()),
        })?;
        c.wait_ready().await?;
        Ok(ContainerdUnderTest {
            c,
            logs: log_dir()?,
            _net: net,
            _net_sb: net_sb,
        })
    }

    fn target(&self) -> Target {
        Target {
            name: "containerd".into(),
            endpoint: self.c.endpoint(),
            daemon_pid: Some(self.c.pid()),
        }
    }
}

async fn run_crust(args: &Args, image: &str) -> anyhow::Result<Outcome> {
    let crust = CrustUnderTest::start(args).await?;
    let target = crust.target();
    let outcome = measure(args, &target, &options(args, image, vec![], &crust.logs)).await;
    let timings = crust.timings.clone();
    let _logs = crust.stop(outcome.is_err()).await;
    let outcome = outcome?;
    if args.breakdown && !args.json && matches!(outcome, Outcome::Report(_)) {
        print_breakdown(args, &timings).await?;
    }
    Ok(outcome)
}

/// crustd's per-step timings of the latency rounds, and the CNI floor.
async fn print_breakdown(args: &Args, timings: &std::path::Path) -> anyhow::Result<()> {
    println!(
        "crust, per step (server side, span open to close) over the {} latency rounds:",
        args.iterations
    );
    breakdown::print(&breakdown::read(timings, 1, args.iterations)?);
    // The floor: the same conflist (a network of its own) with no crustd.
    let floor_sb = Sandbox::new()?;
    let _floor_net = TestNetwork::install(&floor_sb, &[]);
    let (add, del) = breakdown::cni_floor(
        &floor_sb.cni_conf_dir(),
        vec![std::path::PathBuf::from("/usr/lib/cni")],
        &floor_sb.path().join("cni-cache"),
        args.iterations.max(1),
    )
    .await?;
    println!(
        "CNI floor (network crate alone, {} rounds): ADD p50 {:.2} ms p90 {:.2} ms; DEL p50 {:.2} ms p90 {:.2} ms",
        add.len(),
        percentile(&add, 0.5),
        percentile(&add, 0.9),
        percentile(&del, 0.5),
        percentile(&del, 0.9)
    );
    Ok(())
}

async fn run_containerd(
    args: &Args,
    registry: &Registry,
    image: &str,
    pause: &str,
) -> anyhow::Result<Outcome> {
    let ctrd = ContainerdUnderTest::start(registry, pause).await?;
    let target = ctrd.target();
    let opts = options(args, image, vec![pause.to_string()], &ctrd.logs);
    let outcome = measure(args, &target, &opts).await;
    if outcome.is_err() {
        eprintln!("containerd log:\n{}", ctrd.c.log());
    }
    outcome
}

/// Both runtimes up at once, their latency rounds alternated (see
/// [`cri_bench::run_interleaved`]).
async fn compare_interleaved(
    args: &Args,
    registry: &Registry,
    image: &str,
    pause: &str,
) -> anyhow::Result<(Report, Report)> {
    let crust = CrustUnderTest::start(args).await?;
    let ctrd = match ContainerdUnderTest::start(registry, pause).await {
        Ok(c) => c,
        Err(e) => {
            crust.stop(true).await;
            return Err(e);
        }
    };
    let (a, b) = (crust.target(), ctrd.target());
    let opts_a = options(args, image, vec![], &crust.logs);
    let opts_b = options(args, image, vec![pause.to_string()], &ctrd.logs);
    let result = cri_bench::run_interleaved((&a, &opts_a), (&b, &opts_b)).await;
    if result.is_err() {
        eprintln!("containerd log:\n{}", ctrd.c.log());
    }
    let timings = crust.timings.clone();
    let _logs = crust.stop(result.is_err()).await;
    drop(ctrd);
    let reports = result?;
    if args.breakdown && !args.json {
        print_breakdown(args, &timings).await?;
    }
    Ok(reports)
}
