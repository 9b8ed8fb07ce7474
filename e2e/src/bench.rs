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

/// RSS and PSS in KiB of process `pid` by kind of mapping, from `/proc/<pid>/smaps`:
/// its own executable, other files (shared libraries), `[heap]`, `[stack]`, and
/// anonymous memory. Where a process's memory goes, for the memory goals.
pub fn memory_by_mapping(pid: i32) -> Vec<(String, u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut sums: Vec<(String, u64, u64)> = Vec::new();
    let mut kind = String::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let path = line.split_whitespace().nth(5).unwrap_or("");
            kind = match path {
                "" => "anonymous".to_string(),
                "[heap]" | "[stack]" => path.to_string(),
                p if p == exe => "executable".to_string(),
                p if p.starts_with('[') => "kernel ([vdso], [vvar])".to_string(),
                _ => "other files (libraries)".to_string(),
            };
            continue;
        }
        let value = |prefix: &str| {
            line.strip_prefix(prefix)
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        };
        let slot = match sums.iter().position(|(k, _, _)| *k == kind) {
            Some(i) => i,
            None => {
                sums.push((kind.clone(), 0, 0));
                sums.len() - 1
            }
        };
        if let Some(v) = value("Rss:") {
            sums[slot].1 += v;
        } else if let Some(v) = value("Pss:") {
            sums[slot].2 += v;
        }
    }
    sums.retain(|(_, rss, _)| *rss > 0);
    sums.sort_by_key(|(_, rss, _)| std::cmp::Reverse(*rss));
    sums
}
