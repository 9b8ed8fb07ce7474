//! Reading usage out of a cgroup (v1 or v2 files, whichever the host has).

use std::{collections::HashMap, fs};

use super::Cgroupfs;

/// CPU and memory use of one cgroup, as CRI stats report them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// Cumulative CPU time in nanoseconds.
    pub cpu_ns: Option<u64>,
    pub memory_usage: Option<u64>,
    /// Usage minus inactive file cache: what kubelet evicts on.
    pub working_set: Option<u64>,
    pub rss: Option<u64>,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
    /// Limit minus working set, when there is a limit.
    pub available: Option<u64>,
}

/// How many processes the OOM killer has killed in the cgroup at `dirs` (one per
/// hierarchy): v1 `memory.oom_control` and v2 `memory.events` both have an
/// `oom_kill N` line. 0 when no file says.
pub fn oom_kills(dirs: &[std::path::PathBuf]) -> u64 {
    dirs.iter()
        .flat_map(|dir| {
            ["memory.oom_control", "memory.events"].map(|f| {
                fs::read_to_string(dir.join(f))
                    .unwrap_or_default()
                    .lines()
                    .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            })
        })
        .max()
        .unwrap_or(0)
}

fn read_u64(path: &std::path::Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_kv(path: &std::path::Path) -> HashMap<String, u64> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once(' ')
                .and_then(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        })
        .collect()
}

impl Cgroupfs {
    /// Usage of `path` (children included, as both cgroup versions count them).
    pub fn usage(&self, path: &str) -> CgroupUsage {
        let mut u = CgroupUsage::default();
        for (dir, v2) in self.dirs_with_version(path) {
            if v2 {
                if let Some(usec) = read_kv(&dir.join("cpu.stat")).get("usage_usec") {
                    u.cpu_ns.get_or_insert(usec * 1000);
                }
                if let Some(current) = read_u64(&dir.join("memory.current")) {
                    let stat = read_kv(&dir.join("memory.stat"));
                    u.memory_usage.get_or_insert(current);
                    u.working_set.get_or_insert(
                        current.saturating_sub(stat.get("inactive_file").copied().unwrap_or(0)),
                    );
                    u.rss = u.rss.or(stat.get("anon").copied());
                    u.page_faults = u.page_faults.or(stat.get("pgfault").copied());
                    u.major_page_faults = u.major_page_faults.or(stat.get("pgmajfault").copied());
                    if let (Some(limit), Some(ws)) =
                        (read_u64(&dir.join("memory.max")), u.working_set)
                    {
                        u.available.get_or_insert(limit.saturating_sub(ws));
                    }
                }
            } else {
                if let Some(ns) = read_u64(&dir.join("cpuacct.usage")) {
                    u.cpu_ns.get_or_insert(ns);
                }
                if let Some(usage) = read_u64(&dir.join("memory.usage_in_bytes")) {
                    let stat = read_kv(&dir.join("memory.stat"));
                    u.memory_usage.get_or_insert(usage);
                    let inactive = stat.get("total_inactive_file").copied().unwrap_or(0);
                    u.working_set.get_or_insert(usage.saturating_sub(inactive));
                    u.rss = u.rss.or(stat.get("total_rss").copied());
                    u.page_faults = u.page_faults.or(stat.get("total_pgfault").copied());
                    u.major_page_faults = u
                        .major_page_faults
                        .or(stat.get("total_pgmajfault").copied());
                    // v1 reports "no limit" as a huge number; only a real limit counts.
                    if let (Some(limit), Some(ws)) =
                        (read_u64(&dir.join("memory.limit_in_bytes")), u.working_set)
                        && limit < (1 << 62)
                    {
                        u.available.get_or_insert(limit.saturating_sub(ws));
                    }
                }
            }
        }
        u
    }
}
