//! `bench-cri --churn SECONDS`: pods created and removed without pause for a while,
//! `concurrency` at a time, each with one `sleep` container: what a node sees when
//! jobs come and go. Throughput, per-cycle latency, and the daemon's RSS before and
//! after (growth would be a leak: every pod of the run is gone at the end).

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use futures::future::try_join_all;
use serde_json::{Value, json};

use super::{Bench, Options, Target, ms, prepare, unique};
use crate::bench::{percentile, proc_kib};

/// What a churn run measured.
#[derive(Clone, Debug)]
pub struct Churn {
    pub target: String,
    pub seconds: f64,
    pub concurrency: usize,
    /// Pods created, started a container, and removed again.
    pub cycles: usize,
    /// RunPodSandbox through StartContainer, ms, sorted.
    pub start_ms: Vec<f64>,
    /// StopContainer through RemovePodSandbox, ms, sorted.
    pub teardown_ms: Vec<f64>,
    /// Daemon RSS (KiB) before the first pod and after the last is removed.
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    /// (pods removed so far, daemon RSS KiB), sampled after every
    /// [`RSS_SAMPLE_EVERY`] pods: a leak grows with the count, a bounded cache or the
    /// allocator's high-water mark flattens.
    pub rss_samples: Vec<(usize, u64)>,
    pub leftover_pods: usize,
}

/// Pods between two RSS samples of a churn run.
pub const RSS_SAMPLE_EVERY: usize = 100;

impl Churn {
    pub fn print(&self) {
        println!(
            "churn ({}): {:.0} s, concurrency {}: {} pods, {:.1} pods/s",
            self.target,
            self.seconds,
            self.concurrency,
            self.cycles,
            self.cycles as f64 / self.seconds
        );
        for (name, s) in [
            ("pod+container start", &self.start_ms),
            ("container+pod teardown", &self.teardown_ms),
        ] {
            if !s.is_empty() {
                println!(
                    "  {name:<24} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
                    percentile(s, 0.5),
                    percentile(s, 0.99),
                    s[s.len() - 1]
                );
            }
        }
        println!(
            "  daemon RSS {:.1} MiB at start, {:.1} MiB at end ({:+.1} MiB); {} pods left over",
            self.rss_start_kib as f64 / 1024.0,
            self.rss_end_kib as f64 / 1024.0,
            (self.rss_end_kib as f64 - self.rss_start_kib as f64) / 1024.0,
            self.leftover_pods
        );
        if !self.rss_samples.is_empty() {
            let samples: Vec<String> = self
                .rss_samples
                .iter()
                .map(|(pods, kib)| format!("{pods}: {:.1}", *kib as f64 / 1024.0))
                .collect();
            println!(
                "  daemon RSS (MiB) after N pods removed: {}",
                samples.join(", ")
            );
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "target": self.target,
            "seconds": self.seconds,
            "concurrency": self.concurrency,
            "pods": self.cycles,
            "pods_per_s": self.cycles as f64 / self.seconds,
            "start_p50_ms": percentile_or_zero(&self.start_ms, 0.5),
            "start_p99_ms": percentile_or_zero(&self.start_ms, 0.99),
            "teardown_p50_ms": percentile_or_zero(&self.teardown_ms, 0.5),
            "teardown_p99_ms": percentile_or_zero(&self.teardown_ms, 0.99),
            "daemon_rss_start_kib": self.rss_start_kib,
            "daemon_rss_end_kib": self.rss_end_kib,
            "daemon_rss_samples": self.rss_samples,
            "leftover_pods": self.leftover_pods,
        })
    }
}

fn percentile_or_zero(s: &[f64], p: f64) -> f64 {
    if s.is_empty() { 0.0 } else { percentile(s, p) }
}

/// Runs the churn against `target` for `seconds`.
pub async fn churn(target: &Target, opts: &Options, seconds: f64) -> anyhow::Result<Churn> {
    let (mut rt, _version, daemon_pid) = prepare(target, opts).await?;
    let bench = Bench {
        run_id: format!("{}-{}", std::process::id(), unique()),
        opts: opts.clone(),
        endpoint: target.endpoint.clone(),
    };
    let rss = || daemon_pid.map_or(0, |pid| proc_kib(pid, "VmRSS:"));
    // One unrecorded cycle first, as the latency rounds have a warm-up.
    let warm = bench.cycle(&mut rt, "churn-warmup").await;
    let rss_start_kib = rss();
    let concurrency = opts.concurrency.max(1);
    let done = AtomicUsize::new(0);
    let rss_samples = std::sync::Mutex::new(Vec::new());
    let t = Instant::now();
    let deadline = t + Duration::from_secs_f64(seconds);
    let result = if let Err(e) = warm {
        Err(e)
    } else {
        try_join_all((0..concurrency).map(|w| {
            let mut rt = rt.clone();
            let (bench, done, rss_samples, rss) = (&bench, &done, &rss_samples, &rss);
            async move {
                let mut samples = Vec::new();
                let mut i = 0;
                while Instant::now() < deadline {
                    samples.push(bench.cycle(&mut rt, &format!("churn-{w}-{i}")).await?);
                    i += 1;
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if n % RSS_SAMPLE_EVERY == 0 {
                        rss_samples.lock().unwrap().push((n, rss()));
                    }
                }
                anyhow::Ok(samples)
            }
        }))
        .await
    };
    let elapsed = t.elapsed().as_secs_f64();
    let (leftover_pods, _) = bench.cleanup(&mut rt).await?;
    let rss_end_kib = rss();
    let samples: Vec<(f64, f64)> = result?.into_iter().flatten().collect();
    let mut start_ms: Vec<f64> = samples.iter().map(|s| s.0).collect();
    let mut teardown_ms: Vec<f64> = samples.iter().map(|s| s.1).collect();
    start_ms.sort_by(f64::total_cmp);
    teardown_ms.sort_by(f64::total_cmp);
    Ok(Churn {
        target: target.name.clone(),
        seconds: elapsed,
        concurrency,
        cycles: samples.len(),
        start_ms,
        teardown_ms,
        rss_start_kib,
        rss_end_kib,
        rss_samples: rss_samples.into_inner().unwrap(),
        leftover_pods,
    })
}

impl Bench {
    /// One pod through its life: (start ms, teardown ms).
    async fn cycle(&self, rt: &mut super::Runtime, name: &str) -> anyhow::Result<(f64, f64)> {
        let config = self.pod_config(name)?;
        let t = Instant::now();
        let pod = self.run_pod(rt, &config).await?;
        let ctr = self.start_container(rt, &pod, &config).await?;
        let start = ms(t);
        let t = Instant::now();
        self.remove_container(rt, &ctr).await?;
        self.remove_pod(rt, &pod).await?;
        let teardown = ms(t);
        // The pod's log directory, so a long run does not leave thousands.
        let _ = std::fs::remove_dir_all(self.opts.log_dir.join(name));
        Ok((start, teardown))
    }
}
