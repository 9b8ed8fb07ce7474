//! OCI seccomp profiles compiled to BPF (with `seccompiler`) and loaded just before
//! exec, for containers and for execs into them.
//!
//! An OCI profile can give each syscall its own action; a seccompiler filter has one
//! match and one mismatch action. So a profile becomes a stack of filters. The kernel
//! runs every filter and keeps the strongest result (KILL, then TRAP, ERRNO, TRACE,
//! LOG, ALLOW; seccomp(2)), so each filter must return ALLOW except where it decides:
//! - the base filter allows every syscall the profile lists under *any* action (with
//!   the union of their argument conditions) and gives everything else the default
//!   action;
//! - one filter per other action gives its syscalls that action and allows the rest.
//!
//! A listed syscall thus gets exactly its own action, also when that action is weaker
//! than the default (default KILL with `SCMP_ACT_ERRNO` for one call, or default ERRNO
//! with `SCMP_ACT_LOG`), and the result does not depend on the order of loading.
//! A syscall whose rules under two actions both match gets the stronger one.
//!
//! The filters are then joined into one program (see [`chain`]).
//!
//! Limits: x32 syscalls (x86_64's arch value with bit 30 set in the number) are killed,
//! as libseccomp does; syscalls are resolved for the native architecture (x86_64) only; names the
//! table does not know are skipped, as libseccomp does for names unknown to the kernel;
//! a process of another architecture (32-bit x86) is killed by the filter's arch check
//! rather than filtered; `SCMP_ACT_NOTIFY` is refused.

#![allow(unsafe_code)]

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
    let build =
        |rules, mismatch: SeccompAction, matched: SeccompAction| -> Result<BpfProgram, String> {
            let filter = SeccompFilter::new(rules, mismatch, matched, TargetArch::x86_64)
                .map_err(|e| format!("seccomp filter: {e}"))?;
            BpfProgram::try_from(filter).map_err(|e| format!("compile seccomp filter: {e}"))
        };
    let mut decisive: Vec<(SeccompAction, BpfProgram)> = Vec::new();
    if default != SeccompAction::Allow {
        // Every listed syscall, under whichever action: the base filter lets them
        // through to the filter that decides them.
        let mut listed: Rules = BTreeMap::new();
        for (_, rules) in &groups {
            for (nr, conditional) in rules {
                let current = listed.entry(*nr).or_insert_with(|| Some(Vec::new()));
                match (current.as_mut(), conditional) {
                    (_, None) => *current = None,
                    (Some(list), Some(more)) => list.extend(more.iter().cloned()),
                    (None, Some(_)) => {}
                }
            }
        }
        let base = build(into_rules(listed), default.clone(), SeccompAction::Allow)?;
        decisive.push((default.clone(), base));
    }
    for (act, rules) in groups {
        if act == SeccompAction::Allow {
            continue;
        }
        let program = build(into_rules(rules), SeccompAction::Allow, act.clone())?;
        decisive.push((act, program));
    }
    if decisive.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![chain(decisive)?])
}

/// The kernel's precedence of a filter result: smaller is stronger (seccomp(2): the
/// action part compared as a signed number, so KILL_PROCESS, 0x80000000, is first).
fn strength(action: &SeccompAction) -> i32 {
    (u32::from(action.clone()) & 0xffff_0000) as i32
}

/// Joins filters into one program that returns what the kernel would return with all of
/// them loaded: each one's ALLOW falls through to the next, strongest first, so the
/// first non-ALLOW result is the strongest. One program means one `seccomp(2)` call:
/// loading a second filter would itself need `seccomp` (and with seccompiler's loader,
/// `prctl`) to be allowed by the first.
fn chain(mut programs: Vec<(SeccompAction, BpfProgram)>) -> Result<BpfProgram, String> {
    const BPF_RET_K: u16 = 0x06;
    const BPF_JMP_JA: u16 = 0x05;
    const RET_ALLOW: u32 = 0x7fff_0000;
    // BPF_MAXINSNS: the kernel refuses longer programs.
    const MAX_INSNS: usize = 4096;
    programs.sort_by_key(|(action, _)| strength(action));
    let count = programs.len();
    // x32 syscalls come with the x86_64 arch value and bit 30 set in their number, so
    // no rule matches them: kill them first, as libseccomp does, or a profile whose
    // default is ALLOW could be bypassed through them.
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JEQ_K: u16 = 0x15;
    const BPF_JGE_K: u16 = 0x35;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const RET_KILL_PROCESS: u32 = 0x8000_0000;
    let insn = |code, jt, jf, k| seccompiler::sock_filter { code, jt, jf, k };
    let mut out: BpfProgram = vec![
        // seccomp_data.arch; other arches go on to the programs' own arch checks.
        insn(BPF_LD_W_ABS, 0, 0, 4),
        insn(BPF_JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
        // seccomp_data.nr
        insn(BPF_LD_W_ABS, 0, 0, 0),
        insn(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        insn(BPF_RET_K, 0, 0, RET_KILL_PROCESS),
    ];
    for (n, (_, program)) in programs.into_iter().enumerate() {
        let len = program.len();
        for (i, mut insn) in program.into_iter().enumerate() {
            if n + 1 < count && insn.code == BPF_RET_K && insn.k == RET_ALLOW {
                // `ja` is relative to the next instruction: land on the next program.
                insn.code = BPF_JMP_JA;
                insn.k = (len - i - 1) as u32;
                insn.jt = 0;
                insn.jf = 0;
            }
            out.push(insn);
        }
    }
    if out.len() > MAX_INSNS {
        return Err(format!(
            "seccomp profile compiles to {} BPF instructions, over the kernel's {MAX_INSNS}",
            out.len()
        ));
    }
    Ok(out)
}

/// Loads the filters with `seccomp(SECCOMP_SET_MODE_FILTER)`. Needs no_new_privs or
/// CAP_SYS_ADMIN; unlike seccompiler's loader it does not set no_new_privs itself,
/// which must stay off unless the spec asks for it (setuid binaries keep working, as
/// with runc).
pub fn apply(programs: &[BpfProgram]) -> Result<(), String> {
    for p in programs {
        let prog = libc::sock_fprog {
            len: u16::try_from(p.len()).map_err(|_| "seccomp program too long".to_string())?,
            // seccompiler's sock_filter is #[repr(C)] with the kernel's layout, as is
            // libc's.
            filter: p.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at `p`, which outlives the call; the kernel copies the
        // program and does not keep the pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(format!(
                "load seccomp filter: {}",
                std::io::Error::last_os_error()
            ));
        }
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
    fn profiles_become_a_base_filter_plus_one_per_other_action_in_one_program() {
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
        assert_eq!(
            programs.len(),
            1,
            "base + the ENOSYS group, chained into one"
        );
        // Every program starts with the arch check (load arch, jeq): the chain holds
        // three, the x32 guard's and the two filters'.
        let arch_checks = programs[0]
            .windows(2)
            .filter(|w| w[0].code == 0x20 && w[0].k == 4 && w[1].code == 0x15)
            .count();
        assert_eq!(arch_checks, 3, "the x32 guard and two filters chained");
        let allow = serde_json::from_value::<LinuxSeccomp>(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]
        }))
        .unwrap();
        assert!(compile(&allow).unwrap().is_empty(), "nothing to enforce");
        let notify: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]
        }))
        .unwrap();
        assert!(compile(&notify).unwrap_err().contains("not supported"));
    }

    /// Runs `body` in a forked child after loading `profile`; returns its wait status.
    fn in_child(profile: serde_json::Value, body: fn() -> i32) -> nix::sys::wait::WaitStatus {
        let profile: LinuxSeccomp = serde_json::from_value(profile).unwrap();
        let programs = compile(&profile).unwrap();
        // SAFETY: the child only makes raw syscalls (the filters are compiled already)
        // and leaves with _exit, so the test harness's other threads do not matter.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = match apply(&programs) {
                    Ok(()) => body(),
                    Err(_) => 99,
                };
                // SAFETY: ends the forked child without running the parent's exit hooks.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap()
            }
        }
    }

    /// A syscall with one integer argument (ignored by those that take none).
    fn raw(nr: libc::c_long, arg: u64) -> libc::c_long {
        // SAFETY: only called with syscalls that take no pointer arguments.
        unsafe { libc::syscall(nr, arg) }
    }

    /// errno of a raw syscall, or 0 when it succeeded.
    fn errno_of(rc: libc::c_long) -> i32 {
        if rc >= 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        }
    }

    #[test]
    fn each_listed_syscall_gets_its_own_action_also_when_weaker_than_the_default() {
        use nix::sys::wait::WaitStatus;
        let profile = serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["exit_group", "exit"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["getpid"], "action": "SCMP_ACT_LOG"},
                {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0xffff_ffffu64, "op": "SCMP_CMP_EQ"}]},
            ]
        });
        fn body() -> i32 {
            let checks = [
                (errno_of(raw(libc::SYS_getpid, 0)), 0),
                (errno_of(raw(libc::SYS_getppid, 0)), libc::ENOSYS),
                (errno_of(raw(libc::SYS_getuid, 0)), libc::EPERM),
                (errno_of(raw(libc::SYS_personality, 0xffff_ffff)), 0),
                (errno_of(raw(libc::SYS_personality, 0)), libc::EPERM),
            ];
            // The index of the first wrong result, plus one; 0 when all are right.
            checks
                .iter()
                .position(|(got, want)| got != want)
                .map_or(0, |i| i as i32 + 1)
        }
        match in_child(profile, body) {
            WaitStatus::Exited(_, 0) => {}
            WaitStatus::Exited(_, 99) => panic!("the filter did not load"),
            WaitStatus::Exited(_, n) => panic!(
                "check {n} (getpid LOG, getppid ENOSYS, getuid default EPERM, \
                 personality(query) allowed, personality(0) EPERM) got the wrong result"
            ),
            other => panic!("child ended as {other:?}"),
        }
    }

    #[test]
    fn x32_syscalls_are_killed_also_under_a_default_allow() {
        use nix::sys::{signal::Signal, wait::WaitStatus};
        let profile = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]
        });
        fn body() -> i32 {
            // getppid through the x32 ABI: the same number with bit 30 set.
            errno_of(raw(libc::SYS_getppid | 0x4000_0000, 0))
        }
        match in_child(profile, body) {
            WaitStatus::Signaled(_, Signal::SIGSYS, _) => {}
            other => panic!("an x32 syscall must be killed, child ended as {other:?}"),
        }
    }

    #[test]
    fn a_weaker_action_wins_over_a_kill_default_and_no_new_privs_stays_off() {
        use nix::sys::wait::WaitStatus;
        let profile = serde_json::json!({
            "defaultAction": "SCMP_ACT_KILL_PROCESS",
            "syscalls": [
                {"names": ["exit_group", "prctl"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            ]
        });
        fn body() -> i32 {
            let getppid = errno_of(raw(libc::SYS_getppid, 0));
            // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointers; the unused arguments are 0,
            // as the kernel requires.
            let nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
            match (getppid, nnp) {
                (libc::ENOSYS, 0) => 0,
                (libc::ENOSYS, _) => 2,
                _ => 1,
            }
        }
        match in_child(profile, body) {
            WaitStatus::Exited(_, 0) => {}
            WaitStatus::Exited(_, 1) => panic!("getppid did not get its own ERRNO"),
            WaitStatus::Exited(_, 2) => panic!("loading the filter set no_new_privs"),
            other => panic!("child ended as {other:?} (killed: the default won)"),
        }
    }

    #[test]
    fn the_default_profile_compiles() {
        let profile = crate::container::default_seccomp_profile(&Default::default());
        let programs = compile(&profile).expect("RuntimeDefault compiles");
        assert!(!programs.is_empty());
    }
}
