//! OCI resources as systemd unit properties, the ones runc's systemd driver sets
//! (libcontainer/cgroups/systemd/v2.go `genV2ResourcesProperties`, common.go
//! `addCpuQuota`, `addCpuset`). Pure conversion: the D-Bus encoding is in `dbus.rs`.
//!
//! systemd owns these values: it writes them into the unit's cgroup files again
//! whenever it re-realizes the unit (a daemon-reload, any property change), so a limit
//! written only into a file could be reset. What systemd has no property for is still
//! written into the files (see `Cgroupfs::apply_resources`), with the same values.

use oci_spec::runtime::LinuxResources;

use crate::cgroup::CgroupError;

/// One property value, in the D-Bus types systemd declares for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prop {
    /// `t`
    U64(u64),
    /// `b`
    Bool(bool),
    /// `s`
    Str(String),
    /// `ay`: a CPU or NUMA-node bitmask, byte 0 holding bits 0-7.
    Bytes(Vec<u8>),
    /// `au`: process ids.
    Pids(Vec<u32>),
}

/// systemd's "infinity" for `t` limits.
pub const INFINITY: u64 = u64::MAX;

/// The default CFS period (the kernel's, and CRI's when none is given).
const DEFAULT_PERIOD_US: u64 = 100_000;

/// Properties every crust scope carries: its cgroup is delegated (crust writes the
/// files systemd has no property for, and makes exec cgroups below it), with every
/// controller's accounting on so the limits apply (runc sets the same).
pub fn scope_base(description: &str, slice: &str, pids: &[u32]) -> Vec<(&'static str, Prop)> {
    vec![
        ("Description", Prop::Str(description.to_string())),
        ("Slice", Prop::Str(slice.to_string())),
        ("Delegate", Prop::Bool(true)),
        // No ordering after basic.target, and shutdown does not wait for the scope:
        // kubelet and runc create theirs the same way.
        ("DefaultDependencies", Prop::Bool(false)),
        ("MemoryAccounting", Prop::Bool(true)),
        ("CPUAccounting", Prop::Bool(true)),
        ("IOAccounting", Prop::Bool(true)),
        ("TasksAccounting", Prop::Bool(true)),
        ("PIDs", Prop::Pids(pids.to_vec())),
    ]
}

/// Properties of a pod slice crust creates (kubelet's pod slices carry the same).
pub fn slice_base(description: &str) -> Vec<(&'static str, Prop)> {
    vec![
        ("Description", Prop::Str(description.to_string())),
        ("DefaultDependencies", Prop::Bool(false)),
        ("MemoryAccounting", Prop::Bool(true)),
        ("CPUAccounting", Prop::Bool(true)),
        ("IOAccounting", Prop::Bool(true)),
        ("TasksAccounting", Prop::Bool(true)),
    ]
}

/// The unit properties for `r`. `path` names the cgroup in errors. Fields with no
/// property (hugetlb, devices, `unified`, swappiness) are left to the cgroup files.
pub fn resource_properties(
    path: &str,
    r: &LinuxResources,
) -> Result<Vec<(&'static str, Prop)>, CgroupError> {
    let invalid = |file: &str, reason: String| CgroupError::InvalidValue {
        path: path.to_string(),
        file: file.to_string(),
        reason,
    };
    let mut props = Vec::new();
    if let Some(mem) = r.memory() {
        let limit = mem.limit().unwrap_or(0);
        match limit {
            0 => {}
            // -1 lifts the limit (UpdateContainerResources).
            l if l < 0 => props.push(("MemoryMax", Prop::U64(INFINITY))),
            l => props.push(("MemoryMax", Prop::U64(l as u64))),
        }
        if let Some(low) = mem.reservation().filter(|r| *r > 0) {
            props.push(("MemoryLow", Prop::U64(low as u64)));
        }
        // OCI swap is memory+swap; MemorySwapMax is swap alone (runc's
        // ConvertMemorySwapToCgroupV2Value).
        match mem.swap().unwrap_or(0) {
            0 if limit == -1 => props.push(("MemorySwapMax", Prop::U64(INFINITY))),
            0 => {}
            -1 => props.push(("MemorySwapMax", Prop::U64(INFINITY))),
            swap if limit <= 0 => {
                return Err(invalid(
                    "memory.swap.max",
                    format!("memory+swap {swap} needs a memory limit"),
                ));
            }
            swap if swap < limit => {
                return Err(invalid(
                    "memory.swap.max",
                    format!("memory+swap {swap} is below the memory limit {limit}"),
                ));
            }
            swap => props.push(("MemorySwapMax", Prop::U64((swap - limit) as u64))),
        }
    }
    if let Some(cpu) = r.cpu() {
        if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
            props.push(("CPUWeight", Prop::U64(cpu_weight(shares))));
        }
        let period = cpu.period().unwrap_or(0);
        let quota = cpu.quota().unwrap_or(0);
        if period != 0 {
            props.push(("CPUQuotaPeriodUSec", Prop::U64(period)));
        }
        if quota != 0 || period != 0 {
            props.push((
                "CPUQuotaPerSecUSec",
                Prop::U64(quota_per_sec(quota, period)),
            ));
        }
        if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
            let bits = range_to_bits(cpus).map_err(|e| invalid("cpuset.cpus", e))?;
            props.push(("AllowedCPUs", Prop::Bytes(bits)));
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
            let bits = range_to_bits(mems).map_err(|e| invalid("cpuset.mems", e))?;
            props.push(("AllowedMemoryNodes", Prop::Bytes(bits)));
        }
    }
    if let Some(pids) = r.pids() {
        match pids.limit() {
            l if l > 0 => props.push(("TasksMax", Prop::U64(l as u64))),
            -1 => props.push(("TasksMax", Prop::U64(INFINITY))),
            _ => {}
        }
    }
    Ok(props)
}

/// cgroup v2 `cpu.weight` from v1 `cpu.shares`: runc's linear map of [2, 262144]
/// onto [1, 10000] (the same the cgroupfs driver writes).
pub fn cpu_weight(shares: u64) -> u64 {
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

/// `CPUQuotaPerSecUSec` from a CFS quota and period, as runc's `addCpuQuota`: quota
/// per second of wall time, rounded *up* to systemd's 10 ms granularity (systemd
/// would round down, giving less than asked); no quota (or -1) is infinity.
pub fn quota_per_sec(quota: i64, period: u64) -> u64 {
    if quota <= 0 {
        return INFINITY;
    }
    let period = if period == 0 {
        DEFAULT_PERIOD_US
    } else {
        period
    };
    let per_sec = (quota as u64).saturating_mul(1_000_000) / period;
    if per_sec.is_multiple_of(10_000) {
        per_sec
    } else {
        (per_sec / 10_000 + 1) * 10_000
    }
}

/// A cpuset list (`0-3,7`) as the bitmask systemd's `AllowedCPUs` takes (runc's
/// `RangeToBits`: little-endian bytes, no trailing zero bytes).
pub fn range_to_bits(list: &str) -> Result<Vec<u8>, String> {
    const MAX: u32 = 8192;
    let mut bytes: Vec<u8> = Vec::new();
    for part in list.trim().split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo, hi),
            None => (part, part),
        };
        let parse = |s: &str| {
            s.parse::<u32>()
                .ok()
                .filter(|n| *n < MAX)
                .ok_or_else(|| format!("{part:?} is not a cpu/node number or range in {list:?}"))
        };
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if lo > hi {
            return Err(format!("range {part:?} in {list:?} runs backwards"));
        }
        for n in lo..=hi {
            let byte = (n / 8) as usize;
            if bytes.len() <= byte {
                bytes.resize(byte + 1, 0);
            }
            bytes[byte] |= 1 << (n % 8);
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };

    use super::*;

    fn find<'a>(props: &'a [(&'static str, Prop)], name: &str) -> Option<&'a Prop> {
        props.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    #[test]
    fn shares_to_weight_like_runc() {
        for (shares, weight) in [
            (2, 1),
            (1024, 39),
            (262_144, 10_000),
            (1, 1),
            (1_000_000, 10_000),
        ] {
            assert_eq!(cpu_weight(shares), weight, "shares {shares}");
        }
    }

    #[test]
    fn quota_per_second_rounds_up_to_10ms() {
        let cases = [
            (50_000, 100_000, 500_000, "half a CPU"),
            (200_000, 100_000, 2_000_000, "two CPUs"),
            (12_345, 100_000, 130_000, "123.45 ms rounds up to 130 ms"),
            (50_000, 0, 500_000, "default period"),
            (25_000, 50_000, 500_000, "own period"),
            (0, 100_000, INFINITY, "a period alone: no quota"),
            (-1, 100_000, INFINITY, "-1 lifts the quota"),
        ];
        for (quota, period, want, msg) in cases {
            assert_eq!(quota_per_sec(quota, period), want, "{msg}");
        }
    }

    #[test]
    fn cpusets_to_bitmasks() {
        let cases: [(&str, Result<Vec<u8>, ()>); 7] = [
            ("0", Ok(vec![0b1])),
            ("0-3", Ok(vec![0b1111])),
            ("1,3", Ok(vec![0b1010])),
            ("0-1,8", Ok(vec![0b11, 0b1])),
            ("9", Ok(vec![0, 0b10])),
            ("3-1", Err(())),
            ("x", Err(())),
        ];
        for (list, want) in cases {
            assert_eq!(range_to_bits(list).map_err(|_| ()), want, "{list}");
        }
    }

    #[test]
    fn resources_to_properties() {
        let r = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64 << 20)
                    .swap(96 << 20)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(512u64)
                    .quota(50_000)
                    .period(100_000u64)
                    .cpus("0-1")
                    .mems("0")
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(100).build().unwrap())
            .build()
            .unwrap();
        let props = resource_properties("/p", &r).unwrap();
        let cases = [
            ("MemoryMax", Prop::U64(64 << 20)),
            ("MemorySwapMax", Prop::U64(32 << 20)),
            ("CPUWeight", Prop::U64(cpu_weight(512))),
            ("CPUQuotaPeriodUSec", Prop::U64(100_000)),
            ("CPUQuotaPerSecUSec", Prop::U64(500_000)),
            ("AllowedCPUs", Prop::Bytes(vec![0b11])),
            ("AllowedMemoryNodes", Prop::Bytes(vec![0b1])),
            ("TasksMax", Prop::U64(100)),
        ];
        for (name, want) in cases {
            assert_eq!(find(&props, name), Some(&want), "{name}");
        }
        assert_eq!(props.len(), 8, "nothing else: {props:?}");
    }

    #[test]
    fn lifting_limits_is_infinity() {
        let r = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(-1).build().unwrap())
            .cpu(LinuxCpuBuilder::default().quota(-1).build().unwrap())
            .pids(LinuxPidsBuilder::default().limit(-1).build().unwrap())
            .build()
            .unwrap();
        let props = resource_properties("/p", &r).unwrap();
        for name in [
            "MemoryMax",
            "MemorySwapMax",
            "CPUQuotaPerSecUSec",
            "TasksMax",
        ] {
            assert_eq!(find(&props, name), Some(&Prop::U64(INFINITY)), "{name}");
        }
    }

    #[test]
    fn bad_swap_is_refused() {
        for (limit, swap, msg) in [
            (0, 10, "swap without memory"),
            (100, 50, "swap below memory"),
        ] {
            let r = LinuxResourcesBuilder::default()
                .memory(
                    LinuxMemoryBuilder::default()
                        .limit(limit)
                        .swap(swap)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap();
            assert!(resource_properties("/p", &r).is_err(), "{msg}");
        }
    }

    #[test]
    fn empty_resources_give_no_properties() {
        let r = LinuxResourcesBuilder::default().build().unwrap();
        assert!(resource_properties("/p", &r).unwrap().is_empty());
        let base = scope_base("d", "x.slice", &[7]);
        assert_eq!(find(&base, "Delegate"), Some(&Prop::Bool(true)));
        assert_eq!(find(&base, "PIDs"), Some(&Prop::Pids(vec![7])));
        assert_eq!(find(&base, "Slice"), Some(&Prop::Str("x.slice".into())));
    }
}
