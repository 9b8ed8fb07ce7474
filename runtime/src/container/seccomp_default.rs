//! The RuntimeDefault seccomp profile: the Docker/containerd default (containerd 2.x
//! `contrib/seccomp/seccomp_default.go`, which no longer allows `io_uring_*`, containerd
//! PR #9320). An allow-list with `SCMP_ACT_ERRNO` (EPERM) as the default action; some
//! syscalls are allowed only with argument conditions, others only when the container's
//! bounding set holds the capability that guards them.

use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg,
    LinuxSeccompArgBuilder, LinuxSeccompOperator, LinuxSyscall,
};

/// Always allowed, whatever the capabilities.
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "capget", "capset", "chdir", "chmod",
    "chown", "chown32", "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64", "clock_gettime",
    "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range", "connect",
    "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve",
    "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate",
    "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64",
    "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64",
    "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex", "futex_time64",
    "futex_waitv", "futimesat", "getcpu", "getcwd", "getdents", "getdents64", "getegid", "getegid32", "geteuid",
    "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp",
    "getpid", "getppid", "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid", "getresuid32",
    "getrlimit", "get_robust_list", "getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid",
    "gettimeofday", "getuid", "getuid32", "getxattr", "inotify_add_watch", "inotify_init", "inotify_init1",
    "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64",
    "ioprio_get", "ioprio_set", "io_setup", "io_submit", "ipc", "kill", "landlock_add_rule",
    "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat",
    "listen", "listxattr", "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64",
    "madvise", "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat",
    "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap",
    "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap", "nanosleep", "newfstatat",
    "_newselect", "open", "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "poll",
    "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6",
    "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv",
    "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "rename",
    "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask",
    "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max",
    "sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64",
    "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp",
    "select", "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64",
    "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
    "setgroups", "setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32", "setresgid",
    "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid",
    "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr", "shmat", "shmctl",
    "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn", "socket",
    "socketcall", "socketpair", "splice", "stat", "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat",
    "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete",
    "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create",
    "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate",
    "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64",
    "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write", "writev",
    // Allowed since Linux 4.8, where seccomp is checked again after ptrace changes a
    // syscall (containerd adds it on such kernels; older ones are long unsupported).
    "ptrace",
];

/// `personality(2)` domains the profile permits: PER_LINUX, PER_LINUX32, UNAME26,
/// UNAME26|PER_LINUX32, and 0xffffffff (query).
const PERSONALITIES: &[u64] = &[0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

/// Syscalls allowed when the bounding set holds a capability.
const BY_CAPABILITY: &[(Capability, &[&str])] = &[
    (Capability::DacReadSearch, &["open_by_handle_at"]),
    (
        Capability::SysAdmin,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (
        Capability::SysModule,
        &["delete_module", "init_module", "finit_module"],
    ),
    (Capability::SysPacct, &["acct"]),
    (
        Capability::SysPtrace,
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (
        Capability::SysTime,
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (Capability::SysTtyConfig, &["vhangup"]),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
];

/// Namespace flags `clone(2)` may not carry without CAP_SYS_ADMIN: NEWNS | NEWUTS |
/// NEWIPC | NEWUSER | NEWPID | NEWNET | NEWCGROUP.
const CLONE_NS_FLAGS: u64 =
    0x0002_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000 | 0x0200_0000;

const ENOSYS: u32 = 38;

fn syscall(names: &[&str], args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(|n| n.to_string()).collect());
    s.set_action(LinuxSeccompAction::ScmpActAllow);
    s.set_args(if args.is_empty() { None } else { Some(args) });
    s
}

fn arg(index: usize, value: u64, op: LinuxSeccompOperator) -> LinuxSeccompArg {
    LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .value_two(0u64)
        .op(op)
        .build()
        .expect("all fields set")
}

/// The seccomp architectures of this build's target: the native one plus the ones its
/// kernel can also run (x86 and x32 on amd64, arm on arm64).
fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchArm, Arch::ScmpArchAarch64]
    } else if cfg!(target_arch = "riscv64") {
        vec![Arch::ScmpArchRiscv64]
    } else if cfg!(target_arch = "s390x") {
        vec![Arch::ScmpArchS390, Arch::ScmpArchS390x]
    } else {
        Vec::new()
    }
}

/// Architecture-specific syscalls.
fn arch_syscalls() -> &'static [&'static str] {
    if cfg!(target_arch = "x86_64") {
        &["arch_prctl", "modify_ldt"]
    } else if cfg!(target_arch = "aarch64") {
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ]
    } else if cfg!(target_arch = "riscv64") {
        &["riscv_flush_icache"]
    } else if cfg!(target_arch = "s390x") {
        &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ]
    } else {
        &[]
    }
}

/// The default profile for a container whose bounding set is `bounding`.
///
/// ```
/// use crust_runtime::container::default_seccomp_profile;
/// let profile = default_seccomp_profile(&Default::default());
/// assert!(profile.syscalls().as_ref().unwrap().iter().any(|s| s.names().contains(&"read".to_string())));
/// ```
pub fn default_seccomp_profile(bounding: &Capabilities) -> LinuxSeccomp {
    let mut syscalls = vec![syscall(ALLOWED, Vec::new())];
    for p in PERSONALITIES {
        syscalls.push(syscall(
            &["personality"],
            vec![arg(0, *p, LinuxSeccompOperator::ScmpCmpEq)],
        ));
    }
    let arch = arch_syscalls();
    if !arch.is_empty() {
        syscalls.push(syscall(arch, Vec::new()));
    }
    for (cap, names) in BY_CAPABILITY {
        if bounding.contains(cap) {
            syscalls.push(syscall(names, Vec::new()));
        }
    }
    if !bounding.contains(&Capability::SysAdmin) {
        // clone without namespace flags; s390 swaps the first two clone arguments.
        let index = if cfg!(target_arch = "s390x") { 1 } else { 0 };
        syscalls.push(syscall(
            &["clone"],
            vec![arg(
                index,
                CLONE_NS_FLAGS,
                LinuxSeccompOperator::ScmpCmpMaskedEq,
            )],
        ));
        // clone3's flags live in a struct seccomp cannot read: answer ENOSYS so libcs
        // fall back to clone, which is filtered above (moby PR #42681).
        let mut clone3 = syscall(&["clone3"], Vec::new());
        clone3.set_action(LinuxSeccompAction::ScmpActErrno);
        clone3.set_errno_ret(Some(ENOSYS));
        syscalls.push(clone3);
    }
    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_architectures(Some(architectures()));
    profile.set_syscalls(Some(syscalls));
    profile
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rules that name `name`: (action, has argument conditions).
    fn rules<'a>(p: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        p.syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|s| s.names().iter().any(|n| n == name))
            .collect()
    }

    fn unconditionally_allowed(p: &LinuxSeccomp, name: &str) -> bool {
        rules(p, name)
            .iter()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
    }

    fn default_caps() -> Capabilities {
        super::super::spec_security::default_capabilities()
    }

    #[test]
    fn allow_list_has_no_duplicates() {
        let mut names = ALLOWED.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALLOWED.len());
        assert!(
            ALLOWED.len() > 300,
            "the full list, not a stub: {}",
            ALLOWED.len()
        );
    }

    #[test]
    fn default_action_is_errno() {
        let p = default_seccomp_profile(&default_caps());
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(
            p.default_errno_ret(),
            None,
            "EPERM is libseccomp's default errno"
        );
    }

    #[test]
    fn syscall_table() {
        let p = default_seccomp_profile(&default_caps());
        let cases: &[(&str, bool)] = &[
            ("read", true),
            ("write", true),
            ("execve", true),
            ("openat2", true),
            ("ptrace", true),
            ("kexec_load", false),
            ("init_module", false),
            ("mount", false),
            ("unshare", false),
            ("bpf", false),
            ("io_uring_setup", false),
            ("reboot", false),
            ("personality", false),
            ("clone", false),
            ("keyctl", false),
            ("add_key", false),
        ];
        for (name, allowed) in cases {
            assert_eq!(unconditionally_allowed(&p, name), *allowed, "{name}");
        }
        assert!(
            rules(&p, "kexec_load").is_empty(),
            "kexec_load must not appear at all"
        );
    }

    #[test]
    fn personality_only_with_listed_domains() {
        let p = default_seccomp_profile(&default_caps());
        let values: Vec<u64> = rules(&p, "personality")
            .iter()
            .map(|s| {
                let args = s.args().as_ref().expect("personality is conditional");
                assert_eq!(args.len(), 1);
                assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpEq);
                args[0].value()
            })
            .collect();
        assert_eq!(values, PERSONALITIES);
    }

    #[test]
    fn clone_is_filtered_without_sys_admin() {
        let p = default_seccomp_profile(&default_caps());
        let clone = rules(&p, "clone");
        assert_eq!(clone.len(), 1);
        let args = clone[0].args().as_ref().unwrap();
        assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(args[0].value(), 0x7E02_0000);
        assert_eq!(args[0].value_two(), Some(0));
        let clone3 = rules(&p, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(38));
    }

    #[test]
    fn capability_gated_syscalls() {
        let mut caps = default_caps();
        caps.insert(Capability::SysAdmin);
        caps.insert(Capability::SysModule);
        let p = default_seccomp_profile(&caps);
        for name in [
            "mount",
            "unshare",
            "clone",
            "clone3",
            "setns",
            "init_module",
            "finit_module",
            "bpf",
        ] {
            assert!(
                unconditionally_allowed(&p, name),
                "{name} with SYS_ADMIN+SYS_MODULE"
            );
        }
        assert!(
            rules(&p, "clone").iter().all(|s| s.args().is_none()),
            "no clone filter with SYS_ADMIN"
        );
        assert!(
            rules(&p, "clone3")
                .iter()
                .all(|s| s.action() == LinuxSeccompAction::ScmpActAllow)
        );
        assert!(!unconditionally_allowed(&p, "reboot"));
        assert!(!unconditionally_allowed(&p, "kexec_load"));
    }

    #[test]
    fn architectures_match_target() {
        let p = default_seccomp_profile(&default_caps());
        let arches = p.architectures().as_ref().unwrap();
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                arches,
                &[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
            );
            assert!(unconditionally_allowed(&p, "arch_prctl"));
        } else if cfg!(target_arch = "aarch64") {
            assert_eq!(arches, &[Arch::ScmpArchArm, Arch::ScmpArchAarch64]);
            assert!(unconditionally_allowed(&p, "set_tls"));
        }
    }

    #[test]
    fn serializes_as_oci_json() {
        let p = default_seccomp_profile(&default_caps());
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        assert!(
            v["syscalls"][0]["names"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "read")
        );
        let back: LinuxSeccomp = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
    }
}
