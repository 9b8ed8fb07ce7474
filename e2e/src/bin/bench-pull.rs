//! Image pull benchmark: crust against containerd, pulling the same image from the
//! same registry in the same run.
//!
//! Builds a ~200 MB (compressed), 10-layer gzip image once (busybox-static plus files
//! of seeded pseudo-random data that gzip shrinks only to ~3/4), pushes it to a real
//! `docker-registry` on loopback, then N times each, alternating, into an empty store
//! every time:
//! - crustd on a fresh temp root (the e2e harness), `PullImage` over its socket;
//! - containerd (Debian's package, its CRI plugin) started here as a child with its
//!   own config, root, state, socket, CNI conf dir and `hosts.toml` marking the
//!   registry plain HTTP; `PullImage` over its socket with the same CRI client.
//!
//! Measures the wall time of the `PullImage` RPC and the daemon's peak RSS (`VmHWM`
//! from /proc, read after the pull; the daemon is fresh each run). Runs `sync` between
//! runs so one side's writeback does not land in the other's time. Prints numbers;
//! never passes or fails on them.
//!
//! `cargo build --release --bins && ./target/release/bench-pull [N]` (as root; N
//! defaults to 3; needs the `docker-registry`, `busybox-static` and `containerd`
//! packages).

use crust_e2e::{
    bench::proc_kib,
    containerd::{Containerd, ContainerdOptions, which},
};
use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use crust_e2e::{
    Sandbox,
    image_builder::{Compression, Image, Layer, LayerBuilder, host_arch},
    registry::Registry,
};
use crust_proto::runtime::v1::{ImageSpec, PullImageRequest};
use serde_json::json;

const LAYERS: usize = 10;
/// Uncompressed bytes of generated data per layer: with 6 bits of entropy per byte,
/// gzip brings it to ~20 MB, so ~200 MB for the image.
const LAYER_DATA: usize = 26 * 1024 * 1024;
const SEED: u64 = 0x6372_7573_745f_6263; // "crust_bc"
const REPO: &str = "bench/pull";
const TAG: &str = "v1";
/// Bound on each RPC, including the pull.
const RPC_TIMEOUT: Duration = Duration::from_secs(600);

/// splitmix64: small, fast and reproducible.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `len` bytes drawn uniformly from a 64-symbol alphabet: "incompressible-ish"
    /// (gzip gets ~76%), yet real deflate work, not stored blocks.
    fn data(&mut self, len: usize) -> Vec<u8> {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            let word = self.next();
            out.extend((0..8).map(|i| ALPHABET[((word >> (i * 8)) & 63) as usize]));
        }
        out.truncate(len);
        out
    }
}

/// Layer `n`: many small files in a few directories (metadata work) and a handful of
/// large ones (bulk data), `LAYER_DATA` bytes in all; layer 0 also has busybox.
fn build_layer(n: usize) -> anyhow::Result<Layer> {
    let mut rng = Prng(SEED ^ (n as u64).wrapping_mul(0x1000_0000_01B3));
    let mut b = LayerBuilder::new();
    if n == 0 {
        b.busybox(&["sh", "ls", "cat", "true"])?;
    }
    let top = format!("data{n:02}");
    b.dir(&top, 0o755);
    for d in 0..8 {
        b.dir(&format!("{top}/d{d}"), 0o755);
    }
    let mut written = 0usize;
    for i in 0..500 {
        let len = 512 + rng.below(16 * 1024) as usize;
        let data = rng.data(len);
        b.file(&format!("{top}/d{}/small-{i:04}", i % 8), &data, 0o644);
        written += len;
    }
    let mut i = 0;
    while written < LAYER_DATA {
        let len = ((1024 * 1024 + rng.below(3 * 1024 * 1024)) as usize).min(LAYER_DATA - written);
        let data = rng.data(len);
        b.file(&format!("{top}/big-{i:02}.bin"), &data, 0o644);
        written += len;
        i += 1;
    }
    Ok(b.finish(Compression::Gzip))
}

fn build_image() -> anyhow::Result<Image> {
    // One thread per layer: gzip is the slow part.
    let layers = std::thread::scope(|s| {
        let handles: Vec<_> = (0..LAYERS)
            .map(|n| s.spawn(move || build_layer(n)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("layer builder panicked"))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    Ok(Image::build(
        layers,
        host_arch(),
        json!({"Cmd": ["/bin/sh"]}),
    ))
}

/// One pull's numbers.
struct Sample {
    seconds: f64,
    /// Peak RSS of the daemon (VmHWM), KiB.
    peak_kib: u64,
    /// RSS of the daemon when it was ready, before the pull, KiB.
    idle_kib: u64,
    /// Bytes of regular files under the daemon's root after the pull.
    store_bytes: u64,
}

/// Bytes of the regular files under `dir` (symlinks not followed).
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            total += tree_bytes(&entry.path());
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    total
}

async fn pull(
    endpoint: &str,
    pid: i32,
    root: &Path,
    image: &str,
    expect_id: &str,
) -> anyhow::Result<Sample> {
    let channel = crust_ctl::connect(endpoint, RPC_TIMEOUT).await?;
    let mut client = crust_ctl::image_client(channel);
    let idle_kib = proc_kib(pid, "VmRSS:");
    let request = PullImageRequest {
        image: Some(ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        auth: None,
        sandbox_config: None,
    };
    let start = Instant::now();
    let image_ref = client
        .pull_image(request)
        .await
        .with_context(|| format!("PullImage {image} on {endpoint}"))?
        .into_inner()
        .image_ref;
    let seconds = start.elapsed().as_secs_f64();
    let peak_kib = proc_kib(pid, "VmHWM:");
    if image_ref != expect_id {
        bail!("PullImage on {endpoint} returned {image_ref}, expected the image id {expect_id}");
    }
    Ok(Sample {
        seconds,
        peak_kib,
        idle_kib,
        store_bytes: tree_bytes(root),
    })
}

async fn run_crust(image: &str, expect_id: &str) -> anyhow::Result<Sample> {
    let sb = Sandbox::new()?;
    let mut d = sb.start()?;
    d.wait_ready().await?;
    let sample = pull(
        &sb.endpoint(),
        d.pid().as_raw(),
        &sb.root(),
        image,
        expect_id,
    )
    .await;
    if sample.is_err() {
        eprintln!("crustd log:\n{}", d.logs());
    }
    // Stop crustd before the sandbox (and its store) is removed.
    let _ = d.terminate().await;
    sample
}

async fn run_containerd(
    registry_host: &str,
    image: &str,
    expect_id: &str,
) -> anyhow::Result<Sample> {
    let mut c = Containerd::start(&ContainerdOptions {
        registry_host: registry_host.to_string(),
        ..Default::default()
    })?;
    c.wait_ready().await?;
    let sample = pull(&c.endpoint(), c.pid(), &c.root(), image, expect_id).await;
    if sample.is_err() {
        eprintln!("containerd log:\n{}", c.log());
    }
    sample
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

const MIB: f64 = 1024.0 * 1024.0;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()
        .context("usage: bench-pull [N]")?
        .unwrap_or(3);
    if n == 0 {
        bail!("usage: bench-pull [N], N >= 1");
    }
    // On Ctrl-C the benchmark future is dropped, so the daemons are killed and their
    // mounts and temp dirs removed by their guards.
    tokio::select! {
        result = bench(n) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

async fn bench(n: usize) -> anyhow::Result<()> {
    if which("containerd").is_none() {
        bail!("containerd not found: apt-get install -y --no-install-recommends containerd");
    }

    let started = Instant::now();
    let image = tokio::task::spawn_blocking(build_image).await??;
    let compressed: usize = image.layers.iter().map(|l| l.blob.len()).sum();
    let uncompressed: usize = image.layers.iter().map(|l| l.tar.len()).sum();
    let build_s = started.elapsed().as_secs_f64();

    let registry = Registry::start().await?;
    let started = Instant::now();
    registry.push_image(REPO, &[TAG], &image).await?;
    let push_s = started.elapsed().as_secs_f64();
    let name = format!("{}/{REPO}:{TAG}", registry.host());
    let id = image.id();
    let version = Containerd::version();

    println!(
        "image {name}: {LAYERS} gzip layers, {:.1} MiB compressed, {:.1} MiB of tar (built in {build_s:.1}s, pushed in {push_s:.1}s)",
        compressed as f64 / MIB,
        uncompressed as f64 / MIB,
    );
    println!("containerd: {version}");
    println!(
        "{n} pull(s) each into an empty store, alternating, sync between runs; {} CPUs, load average {}",
        num_cpus(),
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let mut crust = Vec::new();
    let mut ctrd = Vec::new();
    for i in 0..n {
        // Alternate who goes first, so neither always pulls right after the other.
        for side in if i % 2 == 0 {
            ["crust", "containerd"]
        } else {
            ["containerd", "crust"]
        } {
            let sample = if side == "crust" {
                run_crust(&name, &id).await?
            } else {
                run_containerd(&registry.host(), &name, &id).await?
            };
            println!(
                "  run {} {side:<10} {:>7.2} s   peak RSS {:>7.1} MiB   (idle before pull {:.1} MiB; store after {:.0} MiB)",
                i + 1,
                sample.seconds,
                sample.peak_kib as f64 / 1024.0,
                sample.idle_kib as f64 / 1024.0,
                sample.store_bytes as f64 / MIB,
            );
            if side == "crust" {
                crust.push(sample)
            } else {
                ctrd.push(sample)
            }
            // Flush the pulled data now, so its writeback does not fall into the next
            // run's time (the temp root is already removed).
            nix::unistd::sync();
        }
    }

    let secs = |v: &[Sample]| v.iter().map(|s| s.seconds).collect::<Vec<_>>();
    let peaks = |v: &[Sample]| {
        v.iter()
            .map(|s| s.peak_kib as f64 / 1024.0)
            .collect::<Vec<_>>()
    };
    println!();
    println!(
        "{:<12} {:>10} {:>10} {:>18} {:>14}",
        "", "median s", "min s", "peak RSS MiB med", "peak RSS max"
    );
    for (label, v) in [("crustd", &crust), ("containerd", &ctrd)] {
        println!(
            "{label:<12} {:>10.2} {:>10.2} {:>18.1} {:>14.1}",
            median(&secs(v)),
            min(&secs(v)),
            median(&peaks(v)),
            max(&peaks(v))
        );
    }
    println!(
        "{:<12} {:>9.2}x {:>9.2}x {:>17.2}x {:>13.2}x",
        "crust/ctrd",
        median(&secs(&crust)) / median(&secs(&ctrd)),
        min(&secs(&crust)) / min(&secs(&ctrd)),
        median(&peaks(&crust)) / median(&peaks(&ctrd)),
        max(&peaks(&crust)) / max(&peaks(&ctrd)),
    );
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
