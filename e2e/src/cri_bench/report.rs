//! What a run measured ([`Report`]) and how it prints: table, JSON, and the
//! side-by-side comparison.

use serde_json::{Value, json};

use super::smaps_rollup;
use crate::bench::percentile;

/// One latency row: samples in ms, sorted.
#[derive(Clone, Debug)]
pub struct Row {
    pub name: &'static str,
    pub samples: Vec<f64>,
}

impl Row {
    /// min, p50, p95, max.
    pub fn stats(&self) -> [f64; 4] {
        let s = &self.samples;
        if s.is_empty() {
            return [0.0; 4];
        }
        [
            s[0],
            percentile(s, 0.5),
            percentile(s, 0.95),
            s[s.len() - 1],
        ]
    }
}

/// Summed memory of some processes, KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub processes: usize,
    pub rss_kib: u64,
    pub pss_kib: u64,
}

impl Memory {
    pub fn of(pids: &[i32]) -> Memory {
        let mut m = Memory::default();
        for &pid in pids {
            let (rss, pss) = smaps_rollup(pid);
            if rss > 0 {
                m.processes += 1;
                m.rss_kib += rss;
                m.pss_kib += pss;
            }
        }
        m
    }
}

/// The density run's results.
#[derive(Clone, Debug)]
pub struct Density {
    pub pods: usize,
    pub concurrency: usize,
    pub start_s: f64,
    pub teardown_s: f64,
    pub daemon_idle: Memory,
    pub daemon: Memory,
    pub helpers: Memory,
    pub infra: Memory,
}

impl Density {
    /// (key, value, unit) rows, in output order.
    pub fn metrics(&self) -> Vec<(&'static str, f64, &'static str)> {
        let n = self.pods.max(1) as f64;
        let per = |kib: u64| kib as f64 / n;
        let growth = self.daemon.pss_kib as f64 - self.daemon_idle.pss_kib as f64;
        vec![
            ("all pods running", self.start_s, "s"),
            ("teardown", self.teardown_s, "s"),
            ("daemon RSS idle", self.daemon_idle.rss_kib as f64, "KiB"),
            ("daemon PSS idle", self.daemon_idle.pss_kib as f64, "KiB"),
            ("daemon RSS with pods", self.daemon.rss_kib as f64, "KiB"),
            ("daemon PSS with pods", self.daemon.pss_kib as f64, "KiB"),
            ("helper RSS per pod", per(self.helpers.rss_kib), "KiB"),
            ("helper PSS per pod", per(self.helpers.pss_kib), "KiB"),
            ("pod infra RSS per pod", per(self.infra.rss_kib), "KiB"),
            ("pod infra PSS per pod", per(self.infra.pss_kib), "KiB"),
            (
                "bytes per pod (PSS)",
                (growth + self.helpers.pss_kib as f64 + self.infra.pss_kib as f64) * 1024.0 / n,
                "B",
            ),
        ]
    }
}

/// Everything one run measured.
#[derive(Clone, Debug)]
pub struct Report {
    pub target: String,
    pub endpoint: String,
    pub version: String,
    pub iterations: usize,
    pub rows: Vec<Row>,
    pub density: Option<Density>,
    /// Pods and containers of this run that the runtime still listed after teardown.
    pub leftover_pods: usize,
    pub leftover_containers: usize,
}

impl Report {
    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let [min, p50, p95, max] = r.stats();
                json!({"name": r.name, "samples": r.samples.len(), "min_ms": min,
                       "p50_ms": p50, "p95_ms": p95, "max_ms": max})
            })
            .collect();
        let density = self.density.as_ref().map(|d| {
            let metrics: serde_json::Map<String, Value> = d
                .metrics()
                .into_iter()
                .map(|(k, v, unit)| (format!("{k} ({unit})"), json!(v)))
                .collect();
            json!({"pods": d.pods, "concurrency": d.concurrency,
                   "helper_processes": d.helpers.processes,
                   "infra_processes": d.infra.processes, "metrics": metrics})
        });
        json!({"target": self.target, "endpoint": self.endpoint, "version": self.version,
               "iterations": self.iterations, "latency": rows, "density": density,
               "leftover_pods": self.leftover_pods,
               "leftover_containers": self.leftover_containers})
    }

    pub fn print_table(&self) {
        println!("{} ({}) at {}", self.target, self.version, self.endpoint);
        println!(
            "  {:<34} {:>4} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "n", "min", "p50", "p95", "max"
        );
        for r in &self.rows {
            let [a, b, c, d] = r.stats();
            println!(
                "  {:<34} {:>4} {a:>9.2} {b:>9.2} {c:>9.2} {d:>9.2}",
                r.name,
                r.samples.len()
            );
        }
        if let Some(d) = &self.density {
            println!(
                "  density: {} pods x 1 sleep container, concurrency {} ({} helper, {} pod infra processes)",
                d.pods, d.concurrency, d.helpers.processes, d.infra.processes
            );
            for (k, v, unit) in d.metrics() {
                println!("  {k:<34} {v:>14.1} {unit}");
            }
        }
        println!(
            "  left after teardown: {} pods, {} containers",
            self.leftover_pods, self.leftover_containers
        );
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { f64::NAN } else { a / b }
}

/// crust/containerd per row and statistic.
pub fn ratio_json(a: &Report, b: &Report) -> Value {
    let mut out = serde_json::Map::new();
    for (ra, rb) in a.rows.iter().zip(&b.rows) {
        let (sa, sb) = (ra.stats(), rb.stats());
        out.insert(
            ra.name.to_string(),
            json!({"min": ratio(sa[0], sb[0]), "p50": ratio(sa[1], sb[1]),
                   "p95": ratio(sa[2], sb[2]), "max": ratio(sa[3], sb[3])}),
        );
    }
    if let (Some(da), Some(db)) = (&a.density, &b.density) {
        for ((k, va, unit), (_, vb, _)) in da.metrics().into_iter().zip(db.metrics()) {
            out.insert(format!("{k} ({unit})"), json!(ratio(va, vb)));
        }
    }
    Value::Object(out)
}

/// The side-by-side table: both p50s (or values) and the ratio, per row.
pub fn print_comparison(a: &Report, b: &Report) {
    println!(
        "{:<34} {:>12} {:>12} {:>9}   {}/{}",
        "", a.target, b.target, "ratio", a.target, b.target
    );
    for (ra, rb) in a.rows.iter().zip(&b.rows) {
        for (i, stat) in [(1, "p50"), (2, "p95")] {
            let (x, y) = (ra.stats()[i], rb.stats()[i]);
            println!(
                "{:<34} {x:>9.2} ms {y:>9.2} ms {:>9.3}",
                format!("{} {stat}", ra.name),
                ratio(x, y)
            );
        }
    }
    if let (Some(da), Some(db)) = (&a.density, &b.density) {
        for ((k, x, unit), (_, y, _)) in da.metrics().into_iter().zip(db.metrics()) {
            let (x, y, unit) = match unit {
                "KiB" if k.starts_with("daemon") => (x / 1024.0, y / 1024.0, "MiB"),
                "B" => (x / 1024.0, y / 1024.0, "KiB"),
                u => (x, y, u),
            };
            println!(
                "{:<34} {x:>9.2} {unit:<3}{y:>9.2} {unit:<3}{:>9.3}",
                k,
                ratio(x, y)
            );
        }
    }
}
