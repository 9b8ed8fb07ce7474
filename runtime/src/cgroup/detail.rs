//! The detailed counters of one cgroup that the cAdvisor-style metrics
//! (ListPodSandboxMetrics) report: CPU split by mode and CFS throttling, the memory
//! breakdown, faults and OOM kills, the limits in force, task counts, PSI.
//!
//! Both versions' files are read, hierarchy by hierarchy, and the first hierarchy that
//! has a figure gives it (on a hybrid host the v1 controllers come before `unified`, so
//! the v2 mount without controllers only adds what v1 lacks: PSI).

use std::path::Path;

use super::{
    Cgroupfs, Psi, parse_psi,
    stats::{read_kv, read_u64},
};

/// v1 files write "no limit" as a huge number (`PAGE_COUNTER_MAX` pages); anything
/// from here up is no limit.
const V1_UNLIMITED: u64 = 1 << 62;

/// `USER_HZ`, the unit of `cpuacct.stat`: fixed at 100 by the kernel's user ABI on
/// the architectures we build for (include/asm-generic/param.h).
const USER_HZ: u64 = 100;

/// One cgroup's counters (children included, as the kernel counts them). `None`: no
/// hierarchy here has the file (controller not mounted or not enabled).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupDetail {
    /// CPU time in nanoseconds: total, user and system.
    pub cpu_usage_ns: Option<u64>,
    pub cpu_user_ns: Option<u64>,
    pub cpu_system_ns: Option<u64>,
    /// CFS bandwidth: enforcement periods elapsed, periods throttled, time throttled (ns).
    pub cfs_periods: Option<u64>,
    pub cfs_throttled_periods: Option<u64>,
    pub cfs_throttled_ns: Option<u64>,
    /// Bytes charged (v1 `memory.usage_in_bytes`, v2 `memory.current`) and its peak.
    pub memory_usage: Option<u64>,
    pub memory_max_usage: Option<u64>,
    /// Usage minus inactive file pages (what kubelet evicts on).
    pub working_set: Option<u64>,
    /// Anonymous memory, page cache, mapped files and swap, in bytes.
    pub rss: Option<u64>,
    pub cache: Option<u64>,
    pub mapped_file: Option<u64>,
    pub swap: Option<u64>,
    /// Times usage hit the limit (v1 `memory.failcnt`, v2 `memory.events` `max`).
    pub memory_failcnt: Option<u64>,
    /// Page faults of the cgroup's own processes and of its whole subtree (v1 tells
    /// them apart; v2 counts the subtree in both).
    pub pgfault: Option<u64>,
    pub pgmajfault: Option<u64>,
    pub hierarchy_pgfault: Option<u64>,
    pub hierarchy_pgmajfault: Option<u64>,
    /// Processes the OOM killer killed in it.
    pub oom_kills: Option<u64>,
    /// Memory limit in bytes, 0 for none (as cAdvisor reports it).
    pub memory_limit: Option<u64>,
    /// CFS quota and period in microseconds; the quota is `None` without a quota.
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: Option<u64>,
    /// v1 `cpu.shares`, or v2 `cpu.weight` turned back into shares.
    pub cpu_shares: Option<u64>,
    /// Tasks (threads) in it and the most allowed, 0 for no limit.
    pub pids_current: Option<u64>,
    pub pids_max: Option<u64>,
    pub cpu_psi: Option<Psi>,
    pub memory_psi: Option<Psi>,
    pub io_psi: Option<Psi>,
}

/// v2 `cpu.weight` (1..=10000) to v1 shares (2..=262144): the inverse of the mapping
/// runc and kubelet use the other way (`1 + ((shares - 2) * 9999) / 262142`), so a
/// pod's requested shares read back as asked, give or take rounding.
pub fn weight_to_shares(weight: u64) -> u64 {
    if weight == 0 {
        return 0;
    }
    2 + (weight.min(10000) - 1) * 262142 / 9999
}

/// `"max 100000"` / `"50000 100000"` (v2 `cpu.max`): (quota, period) in microseconds.
fn parse_cpu_max(text: &str) -> Option<(Option<u64>, u64)> {
    let mut words = text.split_whitespace();
    let quota = match words.next()? {
        "max" => None,
        q => Some(q.parse().ok()?),
    };
    let period = words.next().map_or(Some(100_000), |p| p.parse().ok())?;
    Some((quota, period))
}

/// A v2 limit file: a number, or `max` for none (0, as cAdvisor reports it).
fn read_v2_limit(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    match text.trim() {
        "max" => Some(0),
        n => n.parse().ok(),
    }
}

fn set(slot: &mut Option<u64>, value: Option<u64>) {
    if slot.is_none() {
        *slot = value;
    }
}

fn read_v2(dir: &Path, d: &mut CgroupDetail) {
    let psi = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .and_then(|t| parse_psi(&t))
    };
    d.cpu_psi = d.cpu_psi.or_else(|| psi("cpu.pressure"));
    d.memory_psi = d.memory_psi.or_else(|| psi("memory.pressure"));
    d.io_psi = d.io_psi.or_else(|| psi("io.pressure"));

    let cpu = read_kv(&dir.join("cpu.stat"));
    let usec = |key: &str| cpu.get(key).map(|v| v.saturating_mul(1000));
    set(&mut d.cpu_usage_ns, usec("usage_usec"));
    set(&mut d.cpu_user_ns, usec("user_usec"));
    set(&mut d.cpu_system_ns, usec("system_usec"));
    // Only with the cpu controller enabled (the keys below are absent otherwise).
    set(&mut d.cfs_periods, cpu.get("nr_periods").copied());
    set(
        &mut d.cfs_throttled_periods,
        cpu.get("nr_throttled").copied(),
    );
    set(&mut d.cfs_throttled_ns, usec("throttled_usec"));
    if let Some((quota, period)) = std::fs::read_to_string(dir.join("cpu.max"))
        .ok()
        .and_then(|t| parse_cpu_max(&t))
        && d.cpu_period_us.is_none()
    {
        d.cpu_quota_us = quota;
        d.cpu_period_us = Some(period);
    }
    set(
        &mut d.cpu_shares,
        read_u64(&dir.join("cpu.weight")).map(weight_to_shares),
    );

    if let Some(current) = read_u64(&dir.join("memory.current"))
        && d.memory_usage.is_none()
    {
        let stat = read_kv(&dir.join("memory.stat"));
        let get = |k: &str| stat.get(k).copied();
        d.memory_usage = Some(current);
        d.memory_max_usage = read_u64(&dir.join("memory.peak"));
        d.working_set = Some(current.saturating_sub(get("inactive_file").unwrap_or(0)));
        d.rss = get("anon");
        d.cache = get("file");
        d.mapped_file = get("file_mapped");
        d.swap = read_u64(&dir.join("memory.swap.current"));
        d.pgfault = get("pgfault");
        d.pgmajfault = get("pgmajfault");
        d.hierarchy_pgfault = get("pgfault");
        d.hierarchy_pgmajfault = get("pgmajfault");
        d.memory_limit = read_v2_limit(&dir.join("memory.max"));
        let events = read_kv(&dir.join("memory.events"));
        d.memory_failcnt = events.get("max").copied();
        d.oom_kills = events.get("oom_kill").copied();
    }
    set(&mut d.pids_current, read_u64(&dir.join("pids.current")));
    set(&mut d.pids_max, read_v2_limit(&dir.join("pids.max")));
}

fn read_v1(dir: &Path, d: &mut CgroupDetail) {
    set(&mut d.cpu_usage_ns, read_u64(&dir.join("cpuacct.usage")));
    if d.cpu_user_ns.is_none() {
        match (
            read_u64(&dir.join("cpuacct.usage_user")),
            read_u64(&dir.join("cpuacct.usage_sys")),
        ) {
            (Some(user), Some(sys)) => {
                d.cpu_user_ns = Some(user);
                d.cpu_system_ns = Some(sys);
            }
            // Kernels before 4.7 have only the tick counts.
            _ => {
                let stat = read_kv(&dir.join("cpuacct.stat"));
                let ns = |k: &str| stat.get(k).map(|t| t * (1_000_000_000 / USER_HZ));
                d.cpu_user_ns = ns("user");
                d.cpu_system_ns = ns("system");
            }
        }
    }
    // cpu.stat exists in the cpu hierarchy only; cpuacct's directory has none.
    let cpu = read_kv(&dir.join("cpu.stat"));
    set(&mut d.cfs_periods, cpu.get("nr_periods").copied());
    set(
        &mut d.cfs_throttled_periods,
        cpu.get("nr_throttled").copied(),
    );
    set(&mut d.cfs_throttled_ns, cpu.get("throttled_time").copied());
    if let Some(period) = read_u64(&dir.join("cpu.cfs_period_us"))
        && d.cpu_period_us.is_none()
    {
        d.cpu_period_us = Some(period);
        // -1 (no quota) does not parse as u64.
        d.cpu_quota_us = read_u64(&dir.join("cpu.cfs_quota_us"));
    }
    set(&mut d.cpu_shares, read_u64(&dir.join("cpu.shares")));

    if let Some(usage) = read_u64(&dir.join("memory.usage_in_bytes"))
        && d.memory_usage.is_none()
    {
        let stat = read_kv(&dir.join("memory.stat"));
        let get = |k: &str| stat.get(k).copied();
        d.memory_usage = Some(usage);
        d.memory_max_usage = read_u64(&dir.join("memory.max_usage_in_bytes"));
        d.working_set = Some(usage.saturating_sub(get("total_inactive_file").unwrap_or(0)));
        // The `total_` figures count the subtree, as usage_in_bytes does (cAdvisor
        // reports these).
        d.rss = get("total_rss");
        d.cache = get("total_cache");
        d.mapped_file = get("total_mapped_file");
        d.swap = get("total_swap");
        d.pgfault = get("pgfault");
        d.pgmajfault = get("pgmajfault");
        d.hierarchy_pgfault = get("total_pgfault");
        d.hierarchy_pgmajfault = get("total_pgmajfault");
        d.memory_failcnt = read_u64(&dir.join("memory.failcnt"));
        d.memory_limit = read_u64(&dir.join("memory.limit_in_bytes"))
            .map(|l| if l >= V1_UNLIMITED { 0 } else { l });
        d.oom_kills = read_kv(&dir.join("memory.oom_control"))
            .get("oom_kill")
            .copied();
    }
    set(&mut d.pids_current, read_u64(&dir.join("pids.current")));
    set(&mut d.pids_max, read_v2_limit(&dir.join("pids.max")));
}

impl Cgroupfs {
    /// The detailed counters of `path` (see [`CgroupDetail`]). Reads files only;
    /// a cgroup that is gone gives all `None`.
    ///
    /// ```no_run
    /// # let cgroups = crust_runtime::cgroup::Cgroupfs::open("/sys/fs/cgroup".as_ref()).unwrap();
    /// let d = cgroups.detail("/kubepods/pod1/c1");
    /// println!("{:?} ns of CPU, {:?} bytes", d.cpu_usage_ns, d.memory_usage);
    /// ```
    pub fn detail(&self, path: &str) -> CgroupDetail {
        let mut d = CgroupDetail::default();
        for (dir, v2) in self.dirs_with_version(path) {
            if v2 {
                read_v2(&dir, &mut d);
            } else {
                read_v1(&dir, &mut d);
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (file, text) in files {
            std::fs::write(dir.join(file), text).unwrap();
        }
    }

    /// A pure v2 cgroup with every controller, files as kernel 6.x writes them.
    #[test]
    fn v2_counters_limits_and_psi() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pod/c");
        write(
            &dir,
            &[
                (
                    "cpu.stat",
                    "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n\
                     nr_periods 40\nnr_throttled 7\nthrottled_usec 350000\nnr_bursts 0\nburst_usec 0\n",
                ),
                ("cpu.max", "50000 100000\n"),
                ("cpu.weight", "79\n"),
                ("memory.current", "73400320\n"),
                ("memory.peak", "80000000\n"),
                (
                    "memory.stat",
                    "anon 52428800\nfile 20971520\nkernel 1000\nfile_mapped 4096\n\
                     inactive_file 10485760\npgfault 1234\npgmajfault 5\n",
                ),
                ("memory.swap.current", "8192\n"),
                ("memory.max", "134217728\n"),
                (
                    "memory.events",
                    "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\noom_group_kill 0\n",
                ),
                ("pids.current", "4\n"),
                ("pids.max", "max\n"),
                (
                    "cpu.pressure",
                    "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500000\n\
                     full avg10=0.00 avg60=0.00 avg300=0.00 total=250000\n",
                ),
                (
                    "memory.pressure",
                    "some avg10=0.00 avg60=0.00 avg300=0.00 total=30\n\
                     full avg10=0.00 avg60=0.00 avg300=0.00 total=20\n",
                ),
            ],
        );
        let d = Cgroupfs::unified_at(tmp.path()).detail("/pod/c");
        let cases = [
            ("cpu usage", d.cpu_usage_ns, Some(2_500_000_000)),
            ("cpu user", d.cpu_user_ns, Some(2_000_000_000)),
            ("cpu system", d.cpu_system_ns, Some(500_000_000)),
            ("periods", d.cfs_periods, Some(40)),
            ("throttled periods", d.cfs_throttled_periods, Some(7)),
            ("throttled ns", d.cfs_throttled_ns, Some(350_000_000)),
            ("quota", d.cpu_quota_us, Some(50_000)),
            ("period", d.cpu_period_us, Some(100_000)),
            // Weight 79 is what runc writes for 2048 shares; integer division loses 2.
            ("shares", d.cpu_shares, Some(2046)),
            ("usage", d.memory_usage, Some(73_400_320)),
            ("peak", d.memory_max_usage, Some(80_000_000)),
            ("working set", d.working_set, Some(73_400_320 - 10_485_760)),
            ("rss", d.rss, Some(52_428_800)),
            ("cache", d.cache, Some(20_971_520)),
            ("mapped", d.mapped_file, Some(4096)),
            ("swap", d.swap, Some(8192)),
            ("failcnt = events max", d.memory_failcnt, Some(3)),
            ("pgfault", d.pgfault, Some(1234)),
            ("hierarchy pgmajfault", d.hierarchy_pgmajfault, Some(5)),
            ("oom kills", d.oom_kills, Some(1)),
            ("memory limit", d.memory_limit, Some(134_217_728)),
            ("pids", d.pids_current, Some(4)),
            ("pids max: none", d.pids_max, Some(0)),
        ];
        for (what, got, want) in cases {
            assert_eq!(got, want, "{what}");
        }
        assert_eq!(d.cpu_psi.unwrap().some.total_us, 1_500_000, "cpu some");
        assert_eq!(
            d.cpu_psi.unwrap().full.unwrap().total_us,
            250_000,
            "cpu full"
        );
        assert_eq!(d.memory_psi.unwrap().full.unwrap().total_us, 20, "memory");
        assert_eq!(d.io_psi, None, "no io.pressure file");

        write(
            &dir,
            &[("cpu.max", "max 100000\n"), ("memory.max", "max\n")],
        );
        let d = Cgroupfs::unified_at(tmp.path()).detail("/pod/c");
        assert_eq!(
            (d.cpu_quota_us, d.cpu_period_us),
            (None, Some(100_000)),
            "no quota"
        );
        assert_eq!(d.memory_limit, Some(0), "no memory limit reads 0");
    }

    /// A v2 hierarchy without controllers (this host's hybrid `unified`): only the
    /// CPU times the kernel always keeps, and PSI.
    #[test]
    fn v2_without_controllers_has_cpu_times_only() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            &tmp.path().join("c"),
            &[
                ("cpu.stat", "usage_usec 10\nuser_usec 6\nsystem_usec 4\n"),
                (
                    "io.pressure",
                    "some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n\
                     full avg10=0.00 avg60=0.00 avg300=0.00 total=3\n",
                ),
            ],
        );
        let d = Cgroupfs::unified_at(tmp.path()).detail("/c");
        assert_eq!(d.cpu_usage_ns, Some(10_000));
        assert_eq!(d.cpu_user_ns, Some(6_000));
        assert_eq!(d.cfs_periods, None, "no cpu controller, no CFS figures");
        assert_eq!(d.memory_usage, None);
        assert_eq!(d.rss, None);
        assert_eq!(d.io_psi.unwrap().full.unwrap().total_us, 3);
    }

    /// v1 controllers in hierarchies of their own (as here: cpu, cpuacct, memory and
    /// pids mounted separately), then the hybrid `unified` that only adds PSI.
    #[test]
    fn v1_hierarchies_then_unified_psi() {
        let tmp = tempfile::tempdir().unwrap();
        let h = |name: &str| tmp.path().join(name);
        write(
            &h("cpu").join("pod/c"),
            &[
                (
                    "cpu.stat",
                    "nr_periods 11\nnr_throttled 2\nthrottled_time 123456789\n",
                ),
                ("cpu.cfs_period_us", "100000\n"),
                ("cpu.cfs_quota_us", "-1\n"),
                ("cpu.shares", "512\n"),
            ],
        );
        write(
            &h("cpuacct").join("pod/c"),
            &[
                ("cpuacct.usage", "3000000000\n"),
                ("cpuacct.usage_user", "2000000000\n"),
                ("cpuacct.usage_sys", "1000000000\n"),
            ],
        );
        write(
            &h("memory").join("pod/c"),
            &[
                ("memory.usage_in_bytes", "60000000\n"),
                ("memory.max_usage_in_bytes", "70000000\n"),
                ("memory.failcnt", "9\n"),
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                (
                    "memory.stat",
                    "cache 100\nrss 200\nmapped_file 300\nswap 400\npgfault 10\npgmajfault 1\n\
                     inactive_file 50\ntotal_cache 1000\ntotal_rss 2000\ntotal_mapped_file 3000\n\
                     total_swap 4000\ntotal_pgfault 100\ntotal_pgmajfault 11\n\
                     total_inactive_file 5000000\n",
                ),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                ),
            ],
        );
        write(
            &h("pids").join("pod/c"),
            &[("pids.current", "3\n"), ("pids.max", "1024\n")],
        );
        write(
            &h("unified").join("pod/c"),
            &[
                ("cpu.stat", "usage_usec 1\nuser_usec 1\nsystem_usec 0\n"),
                (
                    "cpu.pressure",
                    "some avg10=0.00 avg60=0.00 avg300=0.00 total=77\n",
                ),
            ],
        );
        let d = Cgroupfs::hybrid_at(
            &[h("cpu"), h("cpuacct"), h("memory"), h("pids")],
            &h("unified"),
        )
        .detail("/pod/c");
        let cases = [
            (
                "v1 cpuacct wins over unified",
                d.cpu_usage_ns,
                Some(3_000_000_000),
            ),
            ("user", d.cpu_user_ns, Some(2_000_000_000)),
            ("system", d.cpu_system_ns, Some(1_000_000_000)),
            ("periods", d.cfs_periods, Some(11)),
            ("throttled", d.cfs_throttled_periods, Some(2)),
            ("throttled ns", d.cfs_throttled_ns, Some(123_456_789)),
            ("quota -1: none", d.cpu_quota_us, None),
            ("period", d.cpu_period_us, Some(100_000)),
            ("shares", d.cpu_shares, Some(512)),
            ("usage", d.memory_usage, Some(60_000_000)),
            ("max usage", d.memory_max_usage, Some(70_000_000)),
            ("working set", d.working_set, Some(55_000_000)),
            ("rss is total_rss", d.rss, Some(2000)),
            ("cache", d.cache, Some(1000)),
            ("mapped", d.mapped_file, Some(3000)),
            ("swap", d.swap, Some(4000)),
            ("own pgfault", d.pgfault, Some(10)),
            ("hierarchy pgfault", d.hierarchy_pgfault, Some(100)),
            ("hierarchy pgmajfault", d.hierarchy_pgmajfault, Some(11)),
            ("failcnt", d.memory_failcnt, Some(9)),
            ("huge limit is none", d.memory_limit, Some(0)),
            ("oom kills", d.oom_kills, Some(2)),
            ("pids", d.pids_current, Some(3)),
            ("pids max", d.pids_max, Some(1024)),
        ];
        for (what, got, want) in cases {
            assert_eq!(got, want, "{what}");
        }
        assert_eq!(d.cpu_psi.unwrap().some.total_us, 77, "PSI from unified");
    }

    #[test]
    fn v1_old_kernels_split_cpu_from_ticks() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            &tmp.path().join("cpuacct/c"),
            &[
                ("cpuacct.usage", "5\n"),
                ("cpuacct.stat", "user 150\nsystem 25\n"),
            ],
        );
        let d = Cgroupfs::legacy_at(&[tmp.path().join("cpuacct")]).detail("/c");
        assert_eq!(d.cpu_user_ns, Some(1_500_000_000), "150 ticks of 10 ms");
        assert_eq!(d.cpu_system_ns, Some(250_000_000));
    }

    #[test]
    fn a_missing_cgroup_has_no_figures() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(
            Cgroupfs::unified_at(tmp.path()).detail("/gone"),
            CgroupDetail::default()
        );
    }

    #[test]
    fn cpu_max_and_weight_conversions() {
        for (text, want) in [
            ("max 100000", Some((None, 100_000))),
            ("20000 50000\n", Some((Some(20_000), 50_000))),
            ("max", Some((None, 100_000))),
            ("x 1", None),
            ("", None),
        ] {
            assert_eq!(parse_cpu_max(text), want, "{text:?}");
        }
        for (weight, shares) in [(1, 2), (100, 2597), (10000, 262144), (0, 0)] {
            assert_eq!(weight_to_shares(weight), shares, "weight {weight}");
        }
    }
}
