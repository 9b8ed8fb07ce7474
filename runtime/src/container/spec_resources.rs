//! Cgroup resources, `oom_score_adj`, sysctls and rlimits (containerd's `WithResources`
//! and `WithOOMScoreAdj`). Zero means "not set", as in CRI.

use std::collections::HashMap;

use oci_spec::runtime::{
    LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxPids, LinuxResources, PosixRlimit,
    PosixRlimitBuilder, PosixRlimitType,
};

use super::{HostContext, ResourcesSpec, Rlimit, SpecError, field};

fn non_negative(value: i64, name: &str) -> Result<Option<u64>, SpecError> {
    match value {
        0 => Ok(None),
        v if v > 0 => Ok(Some(v as u64)),
        v => Err(SpecError::invalid(
            format!("{}.{name}", field::RESOURCES),
            format!("{v} is negative"),
        )),
    }
}

fn check_cpuset(value: &str, name: &str) -> Result<Option<String>, SpecError> {
    if value.is_empty() {
        return Ok(None);
    }
    // A cpuset list: `0-3,8,10-11`.
    let ok = value.split(',').all(|part| {
        let mut ends = part.splitn(2, '-');
        let a = ends.next().unwrap_or("");
        let b = ends.next();
        let num = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
        num(a) && b.is_none_or(num)
    });
    if !ok {
        return Err(SpecError::invalid(
            format!("{}.{name}", field::RESOURCES),
            format!("{value:?} is not a cpu/node list"),
        ));
    }
    Ok(Some(value.to_string()))
}

fn check_page_size(size: &str) -> bool {
    let Some(num) = size.strip_suffix('B') else {
        return false;
    };
    let Some(digits) = num.strip_suffix(['K', 'M', 'G', 'T']) else {
        return false;
    };
    !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit())
}

/// The container's `LinuxResources`, without device rules (see `spec_devices`).
pub(crate) fn resources(
    r: &ResourcesSpec,
    host: &HostContext,
) -> Result<LinuxResources, SpecError> {
    let mut cpu = LinuxCpu::default();
    cpu.set_period(non_negative(r.cpu_period, "cpu_period")?);
    // -1 is "no limit" in cgroup v1 terms; any other negative quota is nonsense.
    if r.cpu_quota < -1 {
        return Err(SpecError::invalid(
            format!("{}.cpu_quota", field::RESOURCES),
            format!("{} is negative", r.cpu_quota),
        ));
    }
    cpu.set_quota((r.cpu_quota != 0).then_some(r.cpu_quota));
    cpu.set_shares(non_negative(r.cpu_shares, "cpu_shares")?);
    cpu.set_cpus(check_cpuset(&r.cpuset_cpus, "cpuset_cpus")?);
    cpu.set_mems(check_cpuset(&r.cpuset_mems, "cpuset_mems")?);

    let mut memory = LinuxMemory::default();
    let limit = non_negative(r.memory_limit_in_bytes, "memory_limit_in_bytes")?.map(|v| v as i64);
    memory.set_limit(limit);
    if r.memory_swap_limit_in_bytes < -1 {
        return Err(SpecError::invalid(
            format!("{}.memory_swap_limit_in_bytes", field::RESOURCES),
            format!("{} is negative", r.memory_swap_limit_in_bytes),
        ));
    }
    if host.swap_available {
        // Swap (memory+swap) equal to the limit: no swapping unless asked for.
        let swap = if r.memory_swap_limit_in_bytes != 0 {
            Some(r.memory_swap_limit_in_bytes)
        } else {
            limit
        };
        memory.set_swap(swap);
    }

    let mut hugepages = Vec::new();
    for (i, h) in r.hugepage_limits.iter().enumerate() {
        let f = format!("{}.hugepage_limits[{i}]", field::RESOURCES);
        if !check_page_size(&h.page_size) {
            return Err(SpecError::invalid(
                format!("{f}.page_size"),
                format!("{:?} is not a size like 2MB", h.page_size),
            ));
        }
        if !host.hugetlb_available {
            return Err(SpecError::Unsupported {
                field: f,
                what: "hugepage limits".into(),
                reason: "the hugetlb cgroup controller is missing".into(),
            });
        }
        let limit = i64::try_from(h.limit).map_err(|_| {
            SpecError::invalid(format!("{f}.limit"), format!("{} is too large", h.limit))
        })?;
        let mut l = LinuxHugepageLimit::default();
        l.set_page_size(h.page_size.clone());
        l.set_limit(limit);
        hugepages.push(l);
    }

    let pids = match r.pids_limit {
        None | Some(0) => None,
        Some(limit) if limit > 0 || limit == -1 => {
            let mut p = LinuxPids::default();
            p.set_limit(limit);
            Some(p)
        }
        Some(limit) => {
            return Err(SpecError::invalid(
                format!("{}.pids_limit", field::RESOURCES),
                format!("{limit} is negative"),
            ));
        }
    };

    // runc refuses `unified` on a v1 or hybrid host (ErrV1NoUnified): the files are
    // cgroup v2's, and a v1 host would drop them.
    if !r.unified.is_empty() && !host.cgroup_v2 {
        return Err(SpecError::Unsupported {
            field: format!("{}.unified", field::RESOURCES),
            what: "cgroup v2 `unified` resources".into(),
            reason: "the host's cgroups are v1 (or hybrid)".into(),
        });
    }
    for k in r.unified.keys() {
        if k.is_empty() || k.contains('/') || k.starts_with('.') {
            return Err(SpecError::invalid(
                format!("{}.unified", field::RESOURCES),
                format!("{k:?} is not a cgroup file name"),
            ));
        }
    }

    let mut res = LinuxResources::default();
    res.set_cpu(Some(cpu));
    res.set_memory(Some(memory));
    res.set_pids(pids);
    res.set_hugepage_limits((!hugepages.is_empty()).then_some(hugepages));
    res.set_unified((!r.unified.is_empty()).then(|| {
        r.unified
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }));
    Ok(res)
}

/// The `oom_score_adj` to apply and, when it had to be raised to crustd's own (a
/// process without CAP_SYS_RESOURCE cannot go lower), the value asked for.
pub(crate) fn oom_score_adj(requested: i64, min: i32) -> Result<(i32, Option<i64>), SpecError> {
    if !(-1000..=1000).contains(&requested) {
        return Err(SpecError::invalid(
            format!("{}.oom_score_adj", field::RESOURCES),
            format!("{requested} is outside -1000..=1000"),
        ));
    }
    let requested32 = requested as i32;
    if requested32 < min {
        Ok((min, Some(requested)))
    } else {
        Ok((requested32, None))
    }
}

pub(crate) fn sysctls(sysctls: &[(String, String)]) -> Option<HashMap<String, String>> {
    (!sysctls.is_empty()).then(|| sysctls.iter().cloned().collect())
}

pub(crate) fn rlimits(limits: &[Rlimit]) -> Result<Option<Vec<PosixRlimit>>, SpecError> {
    if limits.is_empty() {
        return Ok(None);
    }
    limits
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let f = format!("rlimits[{i}]");
            let typ: PosixRlimitType = serde_json::from_value(serde_json::Value::String(
                l.r#type.clone(),
            ))
            .map_err(|_| SpecError::invalid(f.clone(), format!("unknown rlimit {:?}", l.r#type)))?;
            if l.soft > l.hard {
                return Err(SpecError::invalid(
                    f,
                    format!("soft {} above hard {}", l.soft, l.hard),
                ));
            }
            Ok(PosixRlimitBuilder::default()
                .typ(typ)
                .soft(l.soft)
                .hard(l.hard)
                .build()
                .expect("all fields set"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::HugepageLimit;

    #[test]
    fn resources_mapping() {
        let r = ResourcesSpec {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0-1,3".into(),
            cpuset_mems: "0".into(),
            pids_limit: Some(100),
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            unified: [("memory.high".to_string(), "50000000".to_string())].into(),
            ..Default::default()
        };
        let res = resources(&r, &HostContext::default()).unwrap();
        let cpu = res.cpu().as_ref().unwrap();
        assert_eq!(
            (cpu.period(), cpu.quota(), cpu.shares()),
            (Some(100_000), Some(50_000), Some(512))
        );
        assert_eq!(
            (cpu.cpus().as_deref(), cpu.mems().as_deref()),
            (Some("0-1,3"), Some("0"))
        );
        let mem = res.memory().as_ref().unwrap();
        assert_eq!(
            (mem.limit(), mem.swap()),
            (Some(64 << 20), Some(64 << 20)),
            "swap = limit by default"
        );
        assert_eq!(res.pids().unwrap().limit(), 100);
        let hp = &res.hugepage_limits().as_ref().unwrap()[0];
        assert_eq!((hp.page_size().as_str(), hp.limit()), ("2MB", 4 << 20));
        assert_eq!(res.unified().as_ref().unwrap()["memory.high"], "50000000");
    }

    #[test]
    fn zero_means_unset() {
        let res = resources(&ResourcesSpec::default(), &HostContext::default()).unwrap();
        let cpu = res.cpu().as_ref().unwrap();
        assert_eq!(
            (cpu.period(), cpu.quota(), cpu.shares(), cpu.cpus().clone()),
            (None, None, None, None)
        );
        let mem = res.memory().as_ref().unwrap();
        assert_eq!((mem.limit(), mem.swap()), (None, None));
        assert!(res.pids().is_none() && res.hugepage_limits().is_none() && res.unified().is_none());
    }

    #[test]
    fn swap_rules() {
        let cases = [
            ("explicit swap", 100, 300, true, Some(300)),
            ("unlimited swap", 100, -1, true, Some(-1)),
            ("no swap accounting", 100, 300, false, None),
            ("no limit no swap", 0, 0, true, None),
        ];
        for (name, limit, swap, available, want) in cases {
            let r = ResourcesSpec {
                memory_limit_in_bytes: limit,
                memory_swap_limit_in_bytes: swap,
                ..Default::default()
            };
            let host = HostContext {
                swap_available: available,
                ..Default::default()
            };
            assert_eq!(
                resources(&r, &host).unwrap().memory().unwrap().swap(),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn resource_rejections() {
        let cases: Vec<(&str, ResourcesSpec, HostContext, &str)> = vec![
            (
                "negative shares",
                ResourcesSpec {
                    cpu_shares: -2,
                    ..Default::default()
                },
                HostContext::default(),
                "resources.cpu_shares",
            ),
            (
                "negative period",
                ResourcesSpec {
                    cpu_period: -1,
                    ..Default::default()
                },
                HostContext::default(),
                "resources.cpu_period",
            ),
            (
                "quota -2",
                ResourcesSpec {
                    cpu_quota: -2,
                    ..Default::default()
                },
                HostContext::default(),
                "resources.cpu_quota",
            ),
            (
                "negative memory",
                ResourcesSpec {
                    memory_limit_in_bytes: -5,
                    ..Default::default()
                },
                HostContext::default(),
                "memory_limit_in_bytes",
            ),
            (
                "bad cpuset",
                ResourcesSpec {
                    cpuset_cpus: "0-".into(),
                    ..Default::default()
                },
                HostContext::default(),
                "cpuset_cpus",
            ),
            (
                "bad mems",
                ResourcesSpec {
                    cpuset_mems: "a".into(),
                    ..Default::default()
                },
                HostContext::default(),
                "cpuset_mems",
            ),
            (
                "bad page size",
                ResourcesSpec {
                    hugepage_limits: vec![HugepageLimit {
                        page_size: "2M".into(),
                        limit: 1,
                    }],
                    ..Default::default()
                },
                HostContext::default(),
                "hugepage_limits[0].page_size",
            ),
            (
                "no hugetlb controller",
                ResourcesSpec {
                    hugepage_limits: vec![HugepageLimit {
                        page_size: "1GB".into(),
                        limit: 1,
                    }],
                    ..Default::default()
                },
                HostContext {
                    hugetlb_available: false,
                    ..Default::default()
                },
                "not supported",
            ),
            (
                "bad unified key",
                ResourcesSpec {
                    unified: [("../x".into(), "1".into())].into(),
                    ..Default::default()
                },
                HostContext::default(),
                "resources.unified",
            ),
            (
                "negative pids",
                ResourcesSpec {
                    pids_limit: Some(-3),
                    ..Default::default()
                },
                HostContext::default(),
                "pids_limit",
            ),
        ];
        for (name, r, host, want) in cases {
            let err = resources(&r, &host).unwrap_err();
            assert!(err.to_string().contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn oom_clamp_table() {
        let cases = [
            ("above the floor", 500, -999, Ok((500, None))),
            ("equal to the floor", -999, -999, Ok((-999, None))),
            (
                "below the floor is clamped",
                -998,
                -500,
                Ok((-500, Some(-998))),
            ),
            (
                "kubelet's guaranteed value clamped",
                -997,
                0,
                Ok((0, Some(-997))),
            ),
            ("too high", 1001, -1000, Err(())),
            ("too low", -1001, -1000, Err(())),
        ];
        for (name, req, min, want) in cases {
            let got = oom_score_adj(req, min).map_err(|_| ());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn rlimits_table() {
        assert_eq!(rlimits(&[]).unwrap(), None, "none by default");
        let got = rlimits(&[Rlimit {
            r#type: "RLIMIT_NOFILE".into(),
            soft: 1024,
            hard: 4096,
        }])
        .unwrap()
        .unwrap();
        assert_eq!(
            (got[0].typ(), got[0].soft(), got[0].hard()),
            (PosixRlimitType::RlimitNofile, 1024, 4096)
        );
        assert!(
            rlimits(&[Rlimit {
                r#type: "RLIMIT_WINGS".into(),
                soft: 1,
                hard: 1
            }])
            .is_err()
        );
        assert!(
            rlimits(&[Rlimit {
                r#type: "RLIMIT_NPROC".into(),
                soft: 2,
                hard: 1
            }])
            .is_err()
        );
    }

    #[test]
    fn sysctls_copied() {
        assert_eq!(sysctls(&[]), None);
        let s = sysctls(&[("net.ipv4.ip_forward".into(), "1".into())]).unwrap();
        assert_eq!(s["net.ipv4.ip_forward"], "1");
    }
}
