//! OCI seccomp profiles compiled to BPF (with `seccompiler`) and loaded just before
//! exec, for containers and for execs into them.
//!
//! An OCI profile can give each syscall its own action; a seccompiler filter has one
//! match and one mismatch action. So a profile becomes a stack of filters: a base
//! filter (the profile's allowed syscalls; anything else gets the default action) and
//! one filter per other action (matching syscalls get it; the rest are allowed). The
//! kernel runs every filter and keeps the strongest action (KILL, then TRAP, ERRNO,
//! TRACE, LOG, ALLOW), and between equal actions the most recently loaded filter's,
//! which is why the base filter is loaded first: a per-syscall ERRNO (`clone3` gets
//! ENOSYS) then wins over the default EPERM.
//!
//! Limits: syscalls are resolved for the native architecture (x86_64) only; names the
//! table does not know are skipped, as libseccomp does for names unknown to the kernel;
//! a process of another architecture (32-bit x86) is killed by the filter's arch check
//! rather than filtered; `SCMP_ACT_NOTIFY` is refused.

use std::collections::BTreeMap;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::syscalls_x86_64::SYSCALLS;

const EPERM: u32 = 1;

fn syscall_number(name: &str) -> Option<i64> {
    SYSCALLS
        .binary_search_by(|(n, _)| n.cmp(&name))
        .ok()
        .map(|i| SYSCALLS[i].1)
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<SeccompAction, String> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(EPERM)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(0)),
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        other => return Err(format!("seccomp action {other:?} is not supported")),
    })
}

/// Compiles `profile` into the filters to load, in load order.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<BpfProgram>, String> {
    if !cfg!(target_arch = "x86_64") {
        return Err("seccomp profiles are supported on x86_64 only for now".into());
    }
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    // action -> syscall -> rules (an empty rule list matches unconditionally)
    // Per action: syscall -> rules (`None`: matches unconditionally).
    type Rules = BTreeMap<i64, Option<Vec<SeccompRule>>>;
    let mut groups: Vec<(SeccompAction, Rules)> = Vec::new();
    for entry in profile.syscalls().clone().unwrap_or_default() {
        let act = action(entry.action(), entry.errno_ret())?;
        if act == default {
            continue;
        }
        let mut conditions = Vec::new();
        for arg in entry.args().clone().unwrap_or_default() {
            let index = u8::try_from(arg.index())
                .map_err(|_| format!("seccomp arg index {} out of range", arg.index()))?;
            let (op, value) = match arg.op() {
                LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
                LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
                LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
                LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
                LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
                LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
                // OCI: `value` is the mask, `valueTwo` the datum.
                LinuxSeccompOperator::ScmpCmpMaskedEq => (
                    SeccompCmpOp::MaskedEq(arg.value()),
                    arg.value_two().unwrap_or(0),
                ),
            };
            conditions.push(
                SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
                    .map_err(|e| format!("seccomp condition: {e}"))?,
            );
        }
        let slot = match groups.iter().position(|(a, _)| *a == act) {
            Some(i) => i,
            None => {
                groups.push((act, BTreeMap::new()));
                groups.len() - 1
            }
        };
        let rules = &mut groups[slot].1;
        for name in entry.names() {
            let Some(nr) = syscall_number(name) else {
                continue;
            };
            let current = rules.entry(nr).or_insert_with(|| Some(Vec::new()));
            match (current.as_mut(), conditions.is_empty()) {
                // Unconditional wins over any conditional entry for the same syscall.
                (_, true) => *current = None,
                (Some(list), false) => list.push(
                    SeccompRule::new(conditions.clone())
                        .map_err(|e| format!("seccomp rule: {e}"))?,
                ),
                (None, false) => {}
            }
        }
    }
    let into_rules =
        |m: BTreeMap<i64, Option<Vec<SeccompRule>>>| -> BTreeMap<i64, Vec<SeccompRule>> {
            m.into_iter()
                .map(|(nr, rules)| (nr, rules.unwrap_or_default()))
                .collect()
        };
    let mut programs = Vec::new();
    let build =
        |rules, mismatch: SeccompAction, matched: SeccompAction| -> Result<BpfProgram, String> {
            let filter = SeccompFilter::new(rules, mismatch, matched, TargetArch::x86_64)
                .map_err(|e| format!("seccomp filter: {e}"))?;
            BpfProgram::try_from(filter).map_err(|e| format!("compile seccomp filter: {e}"))
        };
    // The base filter first (see the module comment for why the order matters).
    let allow = groups
        .iter()
        .position(|(a, _)| *a == SeccompAction::Allow)
        .map(|i| groups.remove(i));
    if default != SeccompAction::Allow {
        let rules = allow.map(|(_, r)| into_rules(r)).unwrap_or_default();
        programs.push(build(rules, default.clone(), SeccompAction::Allow)?);
    }
    for (act, rules) in groups {
        programs.push(build(into_rules(rules), SeccompAction::Allow, act)?);
    }
    Ok(programs)
}

/// Loads the filters (needs no_new_privs or CAP_SYS_ADMIN).
pub fn apply(programs: &[BpfProgram]) -> Result<(), String> {
    for p in programs {
        seccompiler::apply_filter(p).map_err(|e| format!("load seccomp filter: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_table_is_sorted_and_known() {
        assert!(
            SYSCALLS.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted for binary search"
        );
        assert_eq!(syscall_number("read"), Some(0));
        assert_eq!(syscall_number("clone3"), Some(435));
        assert_eq!(syscall_number("nope"), None);
    }

    #[test]
    fn profiles_become_a_base_filter_plus_one_per_other_action() {
        let profile: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read", "write", "no_such_call"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            ]
        }))
        .unwrap();
        let programs = compile(&profile).unwrap();
        assert_eq!(programs.len(), 2, "base + the ENOSYS group");
        assert!(programs.iter().all(|p| !p.is_empty()));
        let notify: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]
        }))
        .unwrap();
        assert!(compile(&notify).unwrap_err().contains("not supported"));
    }

    #[test]
    fn the_default_profile_compiles() {
        let profile = crate::container::default_seccomp_profile(&Default::default());
        let programs = compile(&profile).expect("RuntimeDefault compiles");
        assert!(!programs.is_empty());
    }
}
