//! Crash injection benchmark: for every mutating RPC, N trials that SIGKILL crustd a
//! stratified random delay into the call, restart it on the same root and state, and
//! check that what the call touched is whole and usable or wholly gone, and that
//! cleaning everything up through the CRI leaves no mount, netns pin, veth, IPAM
//! lease, cgroup, directory or process. Prints a table and every violation; exits 1
//! if any was found (a correctness check, never a timing one).
//!
//! `cargo build --bins && ./target/debug/crash-inject [--trials N] [--seed S]
//! [--span-scale F] [--rpc NAME]...` (as root). Delays are spread over each RPC's
//! duration measured without a crash, times F (default 3).

use anyhow::{Context, bail};
use crust_e2e::crash::{Injector, Rng, Rpc, table};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut trials = 20u32;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    let mut only = Vec::new();
    let mut span_scale = 3.0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--trials" => trials = value()?.parse().context("--trials")?,
            "--seed" => seed = value()?.parse().context("--seed")?,
            "--span-scale" => span_scale = value()?.parse().context("--span-scale")?,
            "--rpc" => {
                let name = value()?;
                let rpc = Rpc::ALL
                    .into_iter()
                    .find(|r| r.name().eq_ignore_ascii_case(&name))
                    .with_context(|| format!("unknown RPC {name}"))?;
                only.push(rpc);
            }
            other => {
                bail!("unknown argument {other} (--trials N, --seed S, --span-scale F, --rpc NAME)")
            }
        }
    }
    let rpcs = if only.is_empty() {
        Rpc::ALL.to_vec()
    } else {
        only
    };
    println!("crash-inject: {trials} trials per RPC, seed {seed}");
    let mut rng = Rng::new(seed);
    let mut injector = Injector::new().await;
    injector.span_scale = span_scale;
    let mut tallies = Vec::new();
    for rpc in rpcs {
        let tally = injector.run(rpc, trials, &mut rng).await;
        eprintln!(
            "{}: {} trials, {} with violations",
            rpc.name(),
            tally.trials.len(),
            tally.violations().count()
        );
        tallies.push(tally);
    }
    print!("{}", table(&tallies));
    if tallies.iter().any(|t| t.violations().next().is_some()) {
        std::process::exit(1);
    }
    Ok(())
}
