//! PID 1 of a pod's shared PID namespace (`pid: POD`, the CRI default): reaps the
//! orphans the pod's processes leave, and keeps the namespace alive as long as the
//! monitor lives. Nothing else.
//!
//! Every container of the pod sees it as `/proc/1`, so it must hold nothing worth
//! reaching: a container with CAP_SYS_PTRACE may follow `/proc/1/root`, `/proc/1/cwd`
//! and `/proc/1/fd/*` (ptrace "read" access, proc(5)), and one whose capabilities are a
//! superset of the init's may read `/proc/1/environ` and `/proc/1/mem` while it is
//! dumpable. A plain fork of the monitor was root with every capability, in the host's
//! mount namespace, with the monitor's descriptors and command line: `/proc/1/root` was
//! the host's `/`, readable and writable. So the init, before it starts reaping:
//! - gets a mount namespace of its own (made private first, so nothing propagates back
//!   to the host) whose root is an empty read-only tmpfs: `pivot_root` into it and
//!   detach the old root, as runc's `pivotRoot` does (a `chroot` where `pivot_root`
//!   is refused, e.g. on an initramfs root);
//! - wipes the command line and environment it shares with the monitor (the monitor's
//!   binary path, the spec path, crustd's environment) and shows `crust-pod-init`;
//! - drops every capability (bounding, ambient, effective, permitted, inheritable) and
//!   sets no_new_privs, so even code injected into it gains nothing by exec;
//! - becomes non-dumpable, so only CAP_SYS_PTRACE reaches its `/proc` entries;
//! - closes every descriptor it has (`/proc/1/fd` is empty).
//!
//! The child of a fork of the single-threaded monitor runs this; it still keeps to
//! raw syscalls on memory prepared before the fork (no allocation), as the code
//! between fork and exec of a threaded process would have to. Once confined it execs
//! the init proper, `pod-init/init.rs` (built by `build.rs`, embedded here), from a
//! sealed memfd: a few KiB of its own instead of the monitor's pages, and an
//! executable no container can rewrite through `/proc/1/exe`. Where the memfd cannot
//! be made or exec'd (`vm.memfd_noexec=2`), the child reaps in place instead.
#![allow(unsafe_code)]

use std::{
    ffi::CString,
    fs::File,
    os::fd::{AsRawFd, OwnedFd, RawFd},
    path::Path,
};

use nix::{fcntl::OFlag, unistd::pipe2};

/// What the init needs, made before the fork.
pub(super) struct Plan {
    /// An existing directory of the monitor's to mount the init's empty root on (in
    /// the init's own mount namespace, so the host never sees the mount).
    root: CString,
    /// `[start, end)` of this process's argument and environment strings
    /// (`/proc/self/stat` fields 48-51): the memory `/proc/<pid>/cmdline` and
    /// `environ` show.
    args: (usize, usize),
    env: (usize, usize),
    /// Highest capability number the kernel knows.
    last_cap: u32,
    /// The init's end of its status pipe: an error report, or EOF once set up.
    status: OwnedFd,
    /// The sealed memfd holding [`IMAGE`]; `None` where it could not be made.
    image: Option<OwnedFd>,
}

/// The init's executable (see `pod-init/init.rs`): a static ELF of about 1 KiB.
const IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/crust-pod-init"));

/// The monitor's end: reads the init's verdict on its setup.
pub(super) struct Watch {
    status: OwnedFd,
}

/// The command line the init shows (no path of the host).
const NAME: &[u8] = b"crust-pod-init\0";

/// Steps that can fail, named in the report.
const STEPS: [&str; 9] = [
    "unshare the mount namespace",
    "make the mounts private",
    "mount the empty root",
    "enter the empty root",
    "detach the host root",
    "drop the bounding set",
    "drop the capabilities",
    "set no_new_privs",
    "make itself non-dumpable",
];

/// Prepares the init's setup; `root_dir` must exist (its contents are irrelevant:
/// they are covered in the init's own namespace only). A relative `root_dir` is
/// resolved against the init's working directory (an init started in a pod user
/// namespace, whose root may not search the directories above it).
pub(super) fn plan(root_dir: &Path) -> Result<(Plan, Watch), String> {
    use std::os::unix::ffi::OsStrExt;
    let root = CString::new(root_dir.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains NUL", root_dir.display()))?;
    let stat = std::fs::read_to_string("/proc/self/stat")
        .map_err(|e| format!("read /proc/self/stat: {e}"))?;
    let memory = memory_ranges(&stat).ok_or("no argument range in /proc/self/stat")?;
    let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63);
    let (read, write) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    Ok((
        Plan {
            root,
            args: memory.0,
            env: memory.1,
            last_cap,
            status: write,
            image: sealed_image(),
        },
        Watch { status: read },
    ))
}

/// A close-on-exec memfd holding [`IMAGE`], sealed against every change; `None`
/// where memfds are unavailable.
fn sealed_image() -> Option<OwnedFd> {
    use std::{io::Write, os::fd::FromRawFd};
    /// `MFD_EXEC` (Linux 6.3): says the memfd is meant to be executed, which kernels
    /// with `vm.memfd_noexec` want said; older ones reject the flag (EINVAL).
    const MFD_EXEC: libc::c_uint = 0x10;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create takes a NUL-terminated name and flags; a non-negative
    // result is a new descriptor that nothing else owns.
    let fd = unsafe {
        let mut fd = libc::memfd_create(c"crust-pod-init".as_ptr(), flags | MFD_EXEC);
        if fd < 0 && *libc::__errno_location() == libc::EINVAL {
            fd = libc::memfd_create(c"crust-pod-init".as_ptr(), flags);
        }
        if fd < 0 {
            return None;
        }
        OwnedFd::from_raw_fd(fd)
    };
    File::from(fd.try_clone().ok()?).write_all(IMAGE).ok()?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on a descriptor we own, with an integer argument.
    (unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } == 0).then_some(fd)
}

/// `(arg_start, arg_end), (env_start, env_end)` from a `/proc/<pid>/stat` line:
/// fields 48 to 51 (proc(5)), counted after the parenthesised command name (which may
/// hold spaces).
fn memory_ranges(stat: &str) -> Option<((usize, usize), (usize, usize))> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name.
    let fields: Vec<usize> = after_name
        .split_whitespace()
        .skip(48 - 3)
        .take(4)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    match fields[..] {
        [a, b, c, d] if a <= b && c <= d => Some(((a, b), (c, d))),
        _ => None,
    }
}

impl Watch {
    /// Waits until the init is set up (its status pipe reaches EOF) or reports why
    /// not. Drop the plan (the parent's copy of the write end) first.
    pub(super) fn wait(self) -> Result<(), String> {
        let mut report = [0u8; 8];
        let mut got = 0;
        loop {
            match nix::unistd::read(&self.status, &mut report[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("read the pod init's status: {e}")),
            }
            if got == report.len() {
                break;
            }
        }
        if got == 0 {
            return Ok(());
        }
        let step = STEPS.get(report[0] as usize).unwrap_or(&"set up");
        let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
        Err(format!(
            "pod init: {step}: {}",
            nix::errno::Errno::from_raw(errno)
        ))
    }
}

/// Runs as the pod init; never returns. `ready_fd` (the monitor's start-message pipe,
/// whose reader waits for EOF) is closed first, everything else once set up.
pub(super) fn run(plan: Plan, ready_fd: RawFd) -> ! {
    // SAFETY: raw syscalls with valid arguments only (pointers into `plan`, prepared
    // before the fork, and constants); this process never returns into the monitor's
    // code and exits only through `_exit`.
    unsafe {
        libc::close(ready_fd);
        // The pod's PID namespace lives only as long as its monitor.
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        libc::prctl(libc::PR_SET_NAME, NAME.as_ptr() as libc::c_ulong, 0, 0, 0);
        if let Err((step, errno)) = confine(&plan) {
            let mut report = [0u8; 8];
            report[0] = step;
            report[4..].copy_from_slice(&errno.to_ne_bytes());
            libc::write(
                plan.status.as_raw_fd(),
                report.as_ptr().cast(),
                report.len(),
            );
            libc::_exit(1);
        }
        if let Some(image) = &plan.image {
            // Only the image (fd 0) and the status pipe (fd 1) are left, both
            // close-on-exec: the exec closes the pipe, which is the "set up" report.
            let argv = [NAME.as_ptr().cast::<libc::c_char>(), std::ptr::null()];
            let envp = [std::ptr::null::<libc::c_char>()];
            if libc::dup3(image.as_raw_fd(), 0, libc::O_CLOEXEC) == 0
                && libc::dup3(plan.status.as_raw_fd(), 1, libc::O_CLOEXEC) == 1
            {
                crate::fds::close_from(2);
                libc::syscall(
                    libc::SYS_execveat,
                    0,
                    c"".as_ptr(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                    libc::AT_EMPTY_PATH,
                );
            }
            // Not exec'd: be the init in place.
        }
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut mask);
        libc::sigaddset(&mut mask, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut());
        // Last: the status pipe closing is the "set up" report.
        crate::fds::close_from(0);
        loop {
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
            // Blocks until a child changes state (SIGCHLD is blocked, so it stays
            // pending until taken here).
            let mut signal = 0;
            libc::sigwait(&mask, &mut signal);
        }
    }
}

/// The confinement steps, in order; a failure names its step and errno.
///
/// # Safety
/// Only in the freshly forked init (it changes the whole process).
unsafe fn confine(plan: &Plan) -> Result<(), (u8, i32)> {
    let check = |step: u8, rc: libc::c_long| {
        if rc < 0 {
            Err((
                step,
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ))
        } else {
            Ok(())
        }
    };
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: the whole block makes syscalls on NUL-terminated constants, `plan.root`
    // (a live CString) and null pointers where the kernel takes none, and writes only
    // the argument and environment areas (see `wipe`).
    unsafe {
        check(0, libc::unshare(libc::CLONE_NEWNS).into())?;
        // Private before anything is mounted or unmounted: with a shared host root the
        // copies in our namespace are peers of the host's, and the detach below would
        // propagate.
        check(
            1,
            libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
            .into(),
        )?;
        check(
            2,
            libc::mount(
                c"tmpfs".as_ptr(),
                plan.root.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"mode=0555,size=4k".as_ptr().cast(),
            )
            .into(),
        )?;
        check(3, libc::chdir(plan.root.as_ptr()).into())?;
        // pivot_root(".", ".") stacks the old root on the new one; detaching "." then
        // removes it (pivot_root(2), NOTES). Where the root cannot be pivoted (an
        // initramfs), chroot: the host's mounts stay in our namespace but out of
        // reach, with no capability and no descriptor left to climb out.
        if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) == 0 {
            check(4, libc::umount2(c".".as_ptr(), libc::MNT_DETACH).into())?;
        } else {
            check(3, libc::chroot(c".".as_ptr()).into())?;
        }
        check(3, libc::chdir(c"/".as_ptr()).into())?;

        wipe(plan.args, Some(NAME));
        wipe(plan.env, None);

        for cap in 0..=plan.last_cap {
            // EINVAL: a number this kernel does not have; nothing to drop.
            if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0
                && *libc::__errno_location() != libc::EINVAL
            {
                check(5, -1)?;
            }
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
        super::caps::capset(0, 0, 0).map_err(|errno| (6, errno))?;
        check(7, libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).into())?;
        // After the capability change: a credential change can reset dumpability.
        check(8, libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0).into())?;
    }
    Ok(())
}

/// Zeroes `[start, end)` of our own memory. With a `title` (NUL-terminated) for the
/// argument area, writes it at the start and, when there is room, leaves the last
/// byte non-NUL: the kernel then shows the area up to its first NUL, as after
/// `setproctitle(3)`, instead of the whole zero-padded area (`get_mm_cmdline`).
///
/// # Safety
/// `[start, end)` must be this process's argument or environment strings (writable
/// stack memory), no longer read by anything.
unsafe fn wipe((start, end): (usize, usize), title: Option<&[u8]>) {
    let len = end.saturating_sub(start);
    if start == 0 || len == 0 {
        return;
    }
    let region = start as *mut u8;
    // SAFETY: the caller guarantees the range is ours and writable.
    unsafe {
        std::ptr::write_bytes(region, 0, len);
        if let Some(text) = title
            && len > text.len()
        {
            std::ptr::copy_nonoverlapping(text.as_ptr(), region, text.len());
            *region.add(len - 1) = b' ';
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_is_a_small_static_executable() {
        assert_eq!(&IMAGE[..4], b"\x7fELF");
        let half = |at: usize| u16::from_ne_bytes([IMAGE[at], IMAGE[at + 1]]);
        assert_eq!(half(16), 2, "e_type: ET_EXEC (static, not PIE)");
        // No PT_INTERP (3): nothing but the image is loaded, no C runtime.
        let (phoff, phentsize, phnum) = (
            u64::from_ne_bytes(IMAGE[32..40].try_into().unwrap()) as usize,
            usize::from(half(54)),
            usize::from(half(56)),
        );
        for i in 0..phnum {
            let at = phoff + i * phentsize;
            let kind = u32::from_ne_bytes(IMAGE[at..at + 4].try_into().unwrap());
            assert_ne!(kind, 3, "program header {i} asks for an interpreter");
        }
        assert!(IMAGE.len() < 8192, "the image has {} bytes", IMAGE.len());
    }

    #[test]
    fn the_image_memfd_is_sealed_against_writes() {
        let fd = sealed_image().expect("memfds work here");
        // SAFETY: fcntl on a descriptor we own.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        let all = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        assert_eq!(seals & all, all, "seals {seals:#x}");
        let err = std::io::Write::write_all(&mut File::from(fd.try_clone().unwrap()), b"x")
            .expect_err("a sealed memfd takes no write");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        assert_eq!(
            std::fs::read(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap(),
            IMAGE
        );
    }

    #[test]
    fn memory_ranges_skip_a_command_name_with_spaces_and_parens() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[0] = "S".into();
        let line = format!("42 (a b) c)) {}", fields.join(" "));
        assert_eq!(memory_ranges(&line), Some(((48, 49), (50, 51))));
        assert_eq!(memory_ranges("42 (x) S 1 2"), None, "too few fields");
    }

    #[test]
    fn memory_ranges_of_this_process_hold_its_arguments() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let ((a, b), (c, d)) = memory_ranges(&stat).unwrap();
        let cmdline = std::fs::read("/proc/self/cmdline").unwrap();
        assert_eq!(b - a, cmdline.len(), "argument range");
        assert!(a > 0 && c >= b && d >= c);
    }
}
