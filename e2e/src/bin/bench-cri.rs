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
//!   against each, and prints both tables and crust/containerd per row.
//!
//! Options: `-n N` latency rounds (50), `--pods M` density pods (100, 0 to skip),
//! `--concurrency C` (10), `--json` (one JSON document instead of tables).
//!
//! `cargo build --release --bins && ./target/release/bench-cri --compare` (as root;
//! needs `docker-registry`, `busybox-static`, `containernetworking-plugins`, and for
//! `--compare` `containerd` and `runc`). Prints numbers; never passes or fails on them.

use anyhow::{Context, bail};
use crust_e2e::{
    Sandbox,
    cni::TestNetwork,
    containerd::{Containerd, ContainerdOptions, which},
    cri_bench::{self, Options, Report, Target},
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
}

const USAGE: &str = "usage: bench-cri (--endpoint unix:///PATH | --compare) [-n N] [--pods M] [--concurrency C] [--image REF] [--json]";

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        endpoint: None,
        compare: false,
        json: false,
        image: None,
        iterations: 50,
        pods: 100,
        concurrency: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--endpoint" | "-r" => a.endpoint = Some(value("--endpoint")?),
            "--compare" => a.compare = true,
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
    if a.compare == a.endpoint.is_some() {
        bail!("give exactly one of --endpoint and --compare\n{USAGE}");
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
        let report = cri_bench::run(&target, &options(&args, &image, vec![], &logs)).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report.to_json())?);
        } else {
            report.print_table();
        }
        return Ok(());
    }

    if which("containerd").is_none() {
        bail!(
            "--compare needs containerd: apt-get install -y --no-install-recommends containerd runc"
        );
    }
    let crust = run_crust(&args, &image).await?;
    if !args.json {
        crust.print_table();
        println!();
    }
    // The same kind of network (bridge + host-local + portmap), a bridge of its own.
    let ctrd = run_containerd(&args, &registry, &image, &images.pause).await?;
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

async fn run_crust(args: &Args, image: &str) -> anyhow::Result<Report> {
    let sb = Sandbox::new()?;
    let _net = TestNetwork::install(&sb, &[]);
    sb.write_config("")?;
    // The harness logs at debug; a node (and containerd here) logs at info.
    let mut d = crust_e2e::Crustd::spawn(&sb, &["--log-level", "info"])?;
    d.wait_ready().await?;
    let logs = log_dir()?;
    let target = Target {
        name: "crust".into(),
        endpoint: sb.endpoint(),
        daemon_pid: Some(d.pid().as_raw()),
    };
    let report = cri_bench::run(&target, &options(args, image, vec![], &logs)).await;
    if report.is_err() {
        eprintln!("crustd log:\n{}", d.logs());
    }
    // Stop crustd before the sandbox (and its store) is removed.
    let _ = d.terminate().await;
    report
}

async fn run_containerd(
    args: &Args,
    registry: &Registry,
    image: &str,
    pause: &str,
) -> anyhow::Result<Report> {
    // A sandbox only for its CNI conf dir and IPAM state.
    let net_sb = Sandbox::new()?;
    let _net = TestNetwork::install(&net_sb, &[]);
    let mut c = Containerd::start(&ContainerdOptions {
        registry_host: registry.host(),
        sandbox_image: Some(pause.to_string()),
        cni_conf_dir: Some(net_sb.cni_conf_dir()),
    })?;
    c.wait_ready().await?;
    let logs = log_dir()?;
    let target = Target {
        name: "containerd".into(),
        endpoint: c.endpoint(),
        daemon_pid: Some(c.pid()),
    };
    let opts = options(args, image, vec![pause.to_string()], &logs);
    let report = cri_bench::run(&target, &opts).await;
    if report.is_err() {
        eprintln!("containerd log:\n{}", c.log());
    }
    report
}
