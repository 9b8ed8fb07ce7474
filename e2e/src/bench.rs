//! Small helpers the benchmark binaries share.

use std::fs;

/// The `p` quantile (0.0..=1.0) of already sorted samples (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A memory field of process `pid` in KiB: `Pss:` from `smaps_rollup`, anything else
/// (`VmRSS:`, `VmHWM:`...) from `status`. 0 if the process or field is gone.
pub fn proc_kib(pid: i32, field: &str) -> u64 {
    let file = if field == "Pss:" {
        "smaps_rollup"
    } else {
        "status"
    };
    fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .map(|v| v.trim().trim_end_matches(" kB").parse().unwrap_or(0))
        })
        .unwrap_or(0)
}
