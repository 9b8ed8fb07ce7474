//! `bench-cri --breakdown`: the per-step timings crustd writes with
//! `CRUST_SPAN_TIMINGS` (lines `<rpc> <step> <microseconds> <pod or container id>`), reduced to
//! p50/p90 per RPC and step; and the CNI floor, the same conflist's ADD and DEL run
//! through the network crate alone, so crust's own share of a pod start is what lies
//! above it.

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, bail};
use crust_network::{CniManager, PodNetworkRequest};

use crate::bench::percentile;

/// The RPCs the breakdown is about, in the order they print.
const RPCS: [&str; 6] = [
    "RunPodSandbox",
    "StopPodSandbox",
    "RemovePodSandbox",
    "StopContainer",
    "RemoveContainer",
    "ExecSync",
];

/// One step's samples, ms, sorted.
#[derive(Clone, Debug)]
pub struct Step {
    pub rpc: String,
    pub step: String,
    /// How many of the rounds ran this step at least once (a step may run several
    /// times in one RPC, e.g. two cache writes: its samples are the per-RPC sums).
    pub samples: Vec<f64>,
}

/// Reads `file` and keeps the latency rounds' calls: the pods of the `skip`+`rounds`
/// first RunPodSandbox calls less the first `skip` (the warm-up), the containers of
/// as many StopContainer calls, and as many ExecSync calls (the rounds exec in one
/// container, so those are told apart by call, not by object).
pub fn read(file: &Path, skip: usize, rounds: usize) -> anyhow::Result<Vec<Step>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    let lines: Vec<[&str; 4]> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 4).then(|| [f[0], f[1], f[2], f[3]])
        })
        .collect();
    let rounds_of = |rpc: &'static str| {
        lines
            .iter()
            .filter(move |l| l[0] == rpc && l[1] == "rpc")
            .map(|l| l[3])
            .skip(skip)
            .take(rounds)
    };
    let pods: HashSet<&str> = rounds_of("RunPodSandbox")
        .chain(rounds_of("StopContainer"))
        .collect();
    // An RPC's line comes first, its steps' lines right after it (one write): number
    // the calls so a step is summed within its own call.
    let mut call = 0usize;
    let mut execs = 0usize;
    let mut kept = false;
    // (rpc, step) -> call -> summed ms
    let mut sums: BTreeMap<(usize, String, String), BTreeMap<usize, f64>> = BTreeMap::new();
    for [rpc, step, us, pod] in &lines {
        if *step == "rpc" {
            call += 1;
            kept = if *rpc == "ExecSync" {
                execs += 1;
                execs > skip && execs <= skip + rounds
            } else {
                pods.contains(pod)
            };
        }
        let Some(order) = RPCS.iter().position(|r| r == rpc) else {
            continue;
        };
        if !kept {
            continue;
        }
        let ms = us.parse::<f64>().unwrap_or(0.0) / 1000.0;
        // The RPC's own line first, then its steps by name.
        let key = if *step == "rpc" {
            (order, String::new(), rpc.to_string())
        } else {
            (order, step.to_string(), rpc.to_string())
        };
        *sums.entry(key).or_default().entry(call).or_default() += ms;
    }
    if pods.is_empty() {
        bail!("no RunPodSandbox timings in {}", file.display());
    }
    Ok(sums
        .into_iter()
        .map(|((_, step, rpc), per_call)| {
            let mut samples: Vec<f64> = per_call.into_values().collect();
            samples.sort_by(f64::total_cmp);
            Step {
                rpc,
                step: if step.is_empty() {
                    "(whole RPC, server side)".into()
                } else {
                    step
                },
                samples,
            }
        })
        .collect())
}

pub fn print(steps: &[Step]) {
    println!(
        "{:<18} {:<38} {:>6} {:>9} {:>9}",
        "RPC", "step", "n", "p50 ms", "p90 ms"
    );
    for s in steps {
        println!(
            "{:<18} {:<38} {:>6} {:>9.2} {:>9.2}",
            s.rpc,
            s.step,
            s.samples.len(),
            percentile(&s.samples, 0.5),
            percentile(&s.samples, 0.9)
        );
    }
}

/// The CNI floor: `rounds` ADD and DEL of the default network in `conf_dir`, each in a
/// fresh network namespace (`ip netns add`), through [`CniManager`] with no crustd.
/// Returns (ADD ms, DEL ms), sorted.
pub async fn cni_floor(
    conf_dir: &Path,
    bin_dirs: Vec<PathBuf>,
    cache_dir: &Path,
    rounds: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let cni = CniManager {
        conf_dir: conf_dir.to_path_buf(),
        bin_dirs,
        cache_dir: cache_dir.to_path_buf(),
        plugin_timeout: std::time::Duration::from_secs(60),
    };
    let (mut add, mut del) = (Vec::new(), Vec::new());
    // One unrecorded warm-up round, as the CRI rounds have.
    for i in 0..=rounds {
        let name = format!("crust-bench-cni-{}-{i}", std::process::id());
        let ns = NetNs::add(&name)?;
        let req = PodNetworkRequest {
            pod_id: format!("{:0>64x}", (std::process::id() as u64) << 20 | i as u64),
            name: format!("cni-floor-{i}"),
            namespace: "bench".into(),
            uid: format!("cni-floor-{i}"),
            netns: ns.path(),
            ..Default::default()
        };
        let t = Instant::now();
        cni.setup(&req).await.context("CNI ADD")?;
        let a = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        cni.teardown(&req.pod_id, &req.netns)
            .await
            .context("CNI DEL")?;
        let d = t.elapsed().as_secs_f64() * 1000.0;
        if i > 0 {
            add.push(a);
            del.push(d);
        }
        drop(ns);
    }
    add.sort_by(f64::total_cmp);
    del.sort_by(f64::total_cmp);
    Ok((add, del))
}

/// A named network namespace of this benchmark, deleted on drop.
struct NetNs(String);

impl NetNs {
    fn add(name: &str) -> anyhow::Result<NetNs> {
        let ok = Command::new("ip")
            .args(["netns", "add", name])
            .status()?
            .success();
        if !ok {
            bail!("ip netns add {name} failed");
        }
        Ok(NetNs(name.to_string()))
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.0)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_kept_by_round_and_steps_summed_within_their_call() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("timings.tsv");
        // A warm-up round and two recorded ones: each runs a pod, stops and removes a
        // container, and execs twice in the same container.
        let mut text = String::new();
        for (round, pod, ctr) in [(0, "p0", "c0"), (1, "p1", "c1"), (2, "p2", "c2")] {
            let base = 1000 * (round + 1);
            text += &format!("RunPodSandbox\trpc\t{base}\t{pod}\n");
            text += &format!("RunPodSandbox\tpod.record\t1000\t{pod}\n");
            text += &format!("RunPodSandbox\tpod.record\t500\t{pod}\n");
            text += &format!("ExecSync\trpc\t{}\t{ctr}\n", base + 1);
            text += &format!("ExecSync\texec.run\t{}\t{ctr}\n", base + 2);
            text += &format!("StopContainer\trpc\t{}\t{ctr}\n", base + 3);
            text += "Version\trpc\t5\t-\n";
        }
        std::fs::write(&file, text).unwrap();
        let steps = read(&file, 1, 2).unwrap();
        let get = |rpc: &str, step: &str| {
            steps
                .iter()
                .find(|s| s.rpc == rpc && s.step == step)
                .map(|s| s.samples.clone())
                .unwrap_or_else(|| panic!("{rpc} {step} missing: {steps:?}"))
        };
        assert_eq!(get("RunPodSandbox", "(whole RPC, server side)"), [2.0, 3.0]);
        assert_eq!(
            get("RunPodSandbox", "pod.record"),
            [1.5, 1.5],
            "summed per call"
        );
        assert_eq!(get("ExecSync", "(whole RPC, server side)"), [2.001, 3.001]);
        assert_eq!(get("ExecSync", "exec.run"), [2.002, 3.002]);
        assert_eq!(
            get("StopContainer", "(whole RPC, server side)"),
            [2.003, 3.003]
        );
        assert!(
            steps.iter().all(|s| s.rpc != "Version"),
            "not an RPC of the breakdown"
        );
    }
}
