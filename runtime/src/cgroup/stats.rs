//! Reading usage out of a cgroup (v1 or v2 files, whichever the host has).

use std::{collections::HashMap, fs};

use super::Cgroupfs;

/// One line of a PSI file (`some avg10=0.00 avg60=0.00 avg300=0.00 total=0`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiLine {
    /// Percent of wall time stalled over the last 10, 60 and 300 seconds.
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Cumulative stall time, microseconds (as the kernel writes it).
    pub total_us: u64,
}

/// A cgroup v2 `<resource>.pressure` file (Documentation/accounting/psi.rst): `some`
/// (at least one task stalled) and `full` (all non-idle tasks stalled; the kernel
/// writes it for cpu too since 5.13, as zeros at the root).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Psi {
    pub some: PsiLine,
    pub full: Option<PsiLine>,
}

/// Parses a pressure file; `None` when it has no `some` line.
pub fn parse_psi(text: &str) -> Option<Psi> {
    let mut psi = Psi::default();
    let mut some = false;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let kind = words.next();
        let mut l = PsiLine::default();
        for word in words {
            let (key, value) = word.split_once('=')?;
            match key {
                "avg10" => l.avg10 = value.parse().ok()?,
                "avg60" => l.avg60 = value.parse().ok()?,
                "avg300" => l.avg300 = value.parse().ok()?,
                "total" => l.total_us = value.parse().ok()?,
                // Newer kernels may add keys; they are not ours to refuse.
                _ => {}
            }
        }
        match kind {
            Some("some") => {
                psi.some = l;
                some = true;
            }
            Some("full") => psi.full = Some(l),
            _ => {}
        }
    }
    some.then_some(psi)
}

/// CPU and memory use of one cgroup, as CRI stats report them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
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
    /// Swap in use: v2 `memory.swap.current`; v1 memory+swap minus memory.
    pub swap_usage: Option<u64>,
    /// Swap limit minus swap in use, when there is a limit.
    pub swap_available: Option<u64>,
    /// Pressure stall information (cgroup v2 only; any v2 hierarchy, also the hybrid
    /// one, which has no controllers but keeps the pressure files).
    pub cpu_psi: Option<Psi>,
    pub memory_psi: Option<Psi>,
    pub io_psi: Option<Psi>,
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

pub(super) fn read_u64(path: &std::path::Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub(super) fn read_kv(path: &std::path::Path) -> HashMap<String, u64> {
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
                let psi = |name: &str| {
                    fs::read_to_string(dir.join(name))
                        .ok()
                        .and_then(|t| parse_psi(&t))
                };
                u.cpu_psi = u.cpu_psi.or_else(|| psi("cpu.pressure"));
                u.memory_psi = u.memory_psi.or_else(|| psi("memory.pressure"));
                u.io_psi = u.io_psi.or_else(|| psi("io.pressure"));
                if let Some(swap) = read_u64(&dir.join("memory.swap.current")) {
                    u.swap_usage.get_or_insert(swap);
                    // "max" (no limit) does not parse: no available figure.
                    if let Some(limit) = read_u64(&dir.join("memory.swap.max")) {
                        u.swap_available.get_or_insert(limit.saturating_sub(swap));
                    }
                }
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
                    // v1 counts memory+swap together (cadvisor subtracts the same way).
                    if let Some(memsw) = read_u64(&dir.join("memory.memsw.usage_in_bytes")) {
                        let swap = memsw.saturating_sub(usage);
                        u.swap_usage.get_or_insert(swap);
                        if let (Some(limit), Some(mem_limit)) = (
                            read_u64(&dir.join("memory.memsw.limit_in_bytes")),
                            read_u64(&dir.join("memory.limit_in_bytes")),
                        ) && limit < (1 << 62)
                        {
                            let swap_limit = limit.saturating_sub(mem_limit);
                            u.swap_available
                                .get_or_insert(swap_limit.saturating_sub(swap));
                        }
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_files_parse() {
        let cpu = "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\n\
                   full avg10=0.00 avg60=0.00 avg300=0.00 total=42\n";
        let p = parse_psi(cpu).unwrap();
        assert_eq!(p.some.avg10, 1.5, "avg10");
        assert_eq!(p.some.avg60, 0.25, "avg60");
        assert_eq!(p.some.total_us, 123456, "total");
        assert_eq!(p.full.unwrap().total_us, 42, "full total");
        // Kernels before 5.13 have no cpu `full` line.
        let old = parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n").unwrap();
        assert_eq!((old.some.total_us, old.full), (7, None), "some only");
        for bad in [
            "",
            "full avg10=0.00 avg60=0 avg300=0 total=1",
            "some avg10=x total=1",
        ] {
            assert_eq!(parse_psi(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn v2_usage_has_psi_and_swap() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pod/c");
        std::fs::create_dir_all(&dir).unwrap();
        for (file, value) in [
            (
                "cpu.pressure",
                "some avg10=0.00 avg60=0.00 avg300=0.00 total=10\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=5\n",
            ),
            (
                "memory.pressure",
                "some avg10=2.00 avg60=0.00 avg300=0.00 total=20\nfull avg10=1.00 avg60=0.00 avg300=0.00 total=8\n",
            ),
            (
                "io.pressure",
                "some avg10=0.00 avg60=3.00 avg300=0.00 total=30\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=9\n",
            ),
            ("memory.swap.current", "4096\n"),
            ("memory.swap.max", "65536\n"),
            ("memory.current", "1000\n"),
        ] {
            std::fs::write(dir.join(file), value).unwrap();
        }
        let u = Cgroupfs::unified_at(tmp.path()).usage("/pod/c");
        assert_eq!(u.cpu_psi.unwrap().full.unwrap().total_us, 5, "cpu");
        assert_eq!(u.memory_psi.unwrap().some.avg10, 2.0, "memory");
        assert_eq!(u.io_psi.unwrap().some.avg60, 3.0, "io");
        assert_eq!(u.swap_usage, Some(4096), "swap usage");
        assert_eq!(u.swap_available, Some(65536 - 4096), "swap available");
        std::fs::write(dir.join("memory.swap.max"), "max\n").unwrap();
        let u = Cgroupfs::unified_at(tmp.path()).usage("/pod/c");
        assert_eq!(
            (u.swap_usage, u.swap_available),
            (Some(4096), None),
            "no swap limit"
        );
    }

    #[test]
    fn v1_swap_is_memsw_minus_memory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("memory/pod");
        std::fs::create_dir_all(&dir).unwrap();
        for (file, value) in [
            ("memory.usage_in_bytes", "1000"),
            ("memory.memsw.usage_in_bytes", "1500"),
            ("memory.limit_in_bytes", "4000"),
            ("memory.memsw.limit_in_bytes", "6000"),
        ] {
            std::fs::write(dir.join(file), value).unwrap();
        }
        let u = Cgroupfs::legacy_at(&[tmp.path().join("memory")]).usage("/pod");
        assert_eq!(u.swap_usage, Some(500), "usage");
        assert_eq!(u.swap_available, Some(1500), "2000 of swap, 500 used");
        assert_eq!(u.cpu_psi, None, "no PSI on v1");
    }
}
