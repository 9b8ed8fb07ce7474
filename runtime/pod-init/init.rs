//! The pod init's executable image: PID 1 of a pod's shared PID namespace, which only
//! reaps the orphans the pod's processes leave and keeps the namespace alive.
//!
//! The monitor's forked child confines itself first (see `monitor::pod_init`: its own
//! mount namespace on an empty root, no capability, no_new_privs, no descriptor) and
//! then execs this image from a sealed memfd. It is built by `runtime/build.rs` with
//! rustc directly (`panic=abort`, no std, no libc, no start files, static, not PIE)
//! and embedded in the monitor, so the process a container sees as `/proc/1` holds a
//! page of code and a page of stack: none of the monitor's memory, nothing of a C
//! runtime, no file of the host (its executable is the memfd).
//!
//! Everything here is a raw system call on constants and stack memory. x86_64 and
//! aarch64 only (the syscall numbers and the entry point below).
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const RT_SIGPROCMASK: usize = 14;
    pub const WAIT4: usize = 61;
    pub const RT_SIGTIMEDWAIT: usize = 128;
    pub const PRCTL: usize = 157;
    pub const EXIT: usize = 60;
}
#[cfg(target_arch = "aarch64")]
mod nr {
    pub const RT_SIGPROCMASK: usize = 135;
    pub const WAIT4: usize = 260;
    pub const RT_SIGTIMEDWAIT: usize = 137;
    pub const PRCTL: usize = 167;
    pub const EXIT: usize = 93;
}

const PR_SET_PDEATHSIG: usize = 1;
const PR_SET_DUMPABLE: usize = 4;
const PR_SET_NAME: usize = 15;
const SIGKILL: usize = 9;
const SIGCHLD: usize = 17;
const SIG_BLOCK: usize = 0;
const WNOHANG: usize = 1;

/// A four-argument system call; returns the raw result (`-errno` on failure).
///
/// # Safety
/// The arguments must be valid for system call `n`.
#[cfg(target_arch = "x86_64")]
unsafe fn syscall4(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret;
    // SAFETY: the caller passes valid arguments; the kernel clobbers rcx and r11 only.
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a, in("rsi") b,
             in("rdx") c, in("r10") d, lateout("rcx") _, lateout("r11") _,
             options(nostack));
    }
    ret
}

#[cfg(target_arch = "aarch64")]
unsafe fn syscall4(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret;
    // SAFETY: the caller passes valid arguments; `svc 0` returns in x0.
    unsafe {
        asm!("svc 0", in("x8") n, inlateout("x0") a as isize => ret, in("x1") b,
             in("x2") c, in("x3") d, options(nostack));
    }
    ret
}

// The kernel enters with the stack pointer at `argc`, 16-byte aligned, and no return
// address: align it as a call would leave it and call `init`, which never returns.
#[cfg(target_arch = "x86_64")]
global_asm!(".globl _start", "_start:", "xor ebp, ebp", "and rsp, -16", "call {init}",
            "ud2", init = sym init);
#[cfg(target_arch = "aarch64")]
global_asm!(".globl _start", "_start:", "mov x29, xzr", "mov x30, xzr", "bl {init}",
            "udf 0", init = sym init);

extern "C" fn init() -> ! {
    let mask: u64 = 1 << (SIGCHLD - 1);
    // SAFETY: prctl, rt_sigprocmask, wait4 and rt_sigtimedwait on constants and on
    // `mask`, which lives on this stack frame for the whole (endless) loop.
    unsafe {
        // exec made us dumpable again (the monitor's child was not); nothing here is
        // worth reading, but `/proc/1` stays ptrace-only as before.
        syscall4(nr::PRCTL, PR_SET_DUMPABLE, 0, 0, 0);
        // An exec through a descriptor names the process after it ("0"): `ps` and
        // `/proc/1/comm` should say what this is.
        syscall4(
            nr::PRCTL,
            PR_SET_NAME,
            b"crust-pod-init\0".as_ptr() as usize,
            0,
            0,
        );
        // Kept across the exec; set again so the rule is stated where it matters:
        // the pod's PID namespace lives only as long as its monitor.
        syscall4(nr::PRCTL, PR_SET_PDEATHSIG, SIGKILL, 0, 0);
        // Blocked, SIGCHLD stays pending until taken below, so an exit between the
        // reaping and the wait is not missed.
        syscall4(
            nr::RT_SIGPROCMASK,
            SIG_BLOCK,
            &mask as *const u64 as usize,
            0,
            8,
        );
        loop {
            loop {
                let reaped = syscall4(nr::WAIT4, usize::MAX, 0, WNOHANG, 0);
                if reaped <= 0 {
                    break;
                }
            }
            // No child yet (ECHILD) or none exited: sleep until one does. An orphan
            // adopted meanwhile signals its exit to us, its new parent.
            syscall4(nr::RT_SIGTIMEDWAIT, &mask as *const u64 as usize, 0, 0, 8);
        }
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // Nothing above can panic; if it ever did, exit rather than spin as PID 1 (the
    // monitor then sees its pod init gone).
    loop {
        // SAFETY: exit takes an integer.
        unsafe { syscall4(nr::EXIT, 127, 0, 0, 0) };
    }
}
