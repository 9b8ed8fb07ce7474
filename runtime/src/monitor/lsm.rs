//! The container process's LSM confinement, applied by the built-in launcher and by
//! execs: the AppArmor profile (`process.apparmorProfile`) and the SELinux process
//! label (`process.selinuxLabel`) are requested for the next execve by writing the
//! task's exec attribute, as runc does (`apparmor.ApplyProfile`,
//! `selinux.SetExecLabel`). The kernel switches at the exec, so every step between
//! (mounts, setuid, seccomp) still runs unconfined and the program starts confined.
//!
//! The bytes are prepared before the fork ([`exec_attrs`]); [`apply`] only opens,
//! checks and writes (no allocation on success).
#![allow(unsafe_code)]

use std::ffi::CStr;

use nix::errno::Errno;

/// AppArmor's own attribute directory (kernels with LSM stacking, 5.1+), then the
/// shared one older kernels have.
const APPARMOR_EXEC: &[&CStr] = &[c"/proc/self/attr/apparmor/exec", c"/proc/self/attr/exec"];
/// SELinux's `setexeccon` writes the shared attribute.
const SELINUX_EXEC: &[&CStr] = &[c"/proc/self/attr/exec"];

/// `statfs.f_type` of procfs: the attribute must be the kernel's, not a file a mount
/// over /proc put there (CVE-2019-16884: an image volume at /proc made runc write the
/// profile into an ordinary file, and the container ran unconfined).
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// One write to an exec attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecAttr {
    /// Tried in order; the first that exists takes the write.
    paths: &'static [&'static CStr],
    bytes: Vec<u8>,
    /// For errors: "AppArmor profile \"crust-default\"".
    what: String,
}

/// What the spec's process asks of the LSMs. A name with a NUL cannot be written
/// (the kernel would read a shorter name): an error, not a silent truncation.
pub(crate) fn exec_attrs(process: &oci_spec::runtime::Process) -> Result<Vec<ExecAttr>, String> {
    let mut attrs = Vec::new();
    if let Some(profile) = process
        .apparmor_profile()
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        attrs.push(ExecAttr {
            paths: APPARMOR_EXEC,
            // The AppArmor "change_onexec" command (apparmor(7), aa_change_onexec).
            bytes: format!("exec {profile}").into_bytes(),
            what: format!("AppArmor profile {profile:?}"),
        });
    }
    if let Some(label) = process.selinux_label().as_deref().filter(|l| !l.is_empty()) {
        attrs.push(ExecAttr {
            paths: SELINUX_EXEC,
            bytes: label.as_bytes().to_vec(),
            what: format!("SELinux label {label:?}"),
        });
    }
    for a in &attrs {
        if a.bytes.contains(&0) {
            return Err(format!("{} contains NUL", a.what));
        }
    }
    Ok(attrs)
}

/// Writes each attribute. Runs in the process that will exec, after fork/clone.
pub(crate) fn apply(attrs: &[ExecAttr]) -> Result<(), String> {
    for a in attrs {
        write_first(a).map_err(|(path, e)| {
            let why = match e {
                // Writing a name the kernel has no profile for.
                Errno::ENOENT => "not loaded in the kernel".to_string(),
                Errno::EXDEV => "not on procfs".to_string(),
                e => e.to_string(),
            };
            format!("apply {}: {}: {why}", a.what, path.to_string_lossy())
        })?;
    }
    Ok(())
}

/// The first path that opens takes the write; ENOENT on open moves to the next.
fn write_first(a: &ExecAttr) -> Result<(), (&'static CStr, Errno)> {
    let mut last = (a.paths[0], Errno::ENOENT);
    for path in a.paths {
        match write_attr(path, &a.bytes) {
            Ok(()) => return Ok(()),
            Err(Step::Open(Errno::ENOENT)) => last = (path, Errno::ENOENT),
            Err(Step::Open(e) | Step::Write(e)) => return Err((path, e)),
        }
    }
    // No attribute file at all: the kernel has no such LSM interface.
    Err((last.0, Errno::ENOSYS))
}

enum Step {
    Open(Errno),
    Write(Errno),
}

fn write_attr(path: &CStr, bytes: &[u8]) -> Result<(), Step> {
    // SAFETY: `path` is a NUL-terminated string; open has no other preconditions.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Step::Open(Errno::last()));
    }
    let result = (|| {
        // SAFETY: an all-zero statfs is a valid value for fstatfs to fill.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is open; `fs` is a writable statfs.
        if unsafe { libc::fstatfs(fd, &mut fs) } < 0 {
            return Err(Step::Open(Errno::last()));
        }
        if fs.f_type as i64 != PROC_SUPER_MAGIC {
            return Err(Step::Open(Errno::EXDEV));
        }
        // One write: the kernel takes the attribute from a single write call.
        // SAFETY: `bytes` is valid for `bytes.len()` reads; `fd` is open.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            return Err(Step::Write(Errno::last()));
        }
        if n as usize != bytes.len() {
            return Err(Step::Write(Errno::EIO));
        }
        Ok(())
    })();
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    result
}

/// Used by tests: the bytes a write would carry, as text.
#[cfg(test)]
fn text(a: &ExecAttr) -> (Vec<String>, String) {
    (
        a.paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        String::from_utf8(a.bytes.clone()).unwrap(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Process;
    use std::ffi::CString;

    fn process(apparmor: Option<&str>, selinux: Option<&str>) -> Process {
        let mut p = Process::default();
        p.set_apparmor_profile(apparmor.map(String::from));
        p.set_selinux_label(selinux.map(String::from));
        p
    }

    #[test]
    fn what_gets_written_where() {
        assert!(exec_attrs(&process(None, None)).unwrap().is_empty());
        assert!(
            exec_attrs(&process(Some(""), Some(""))).unwrap().is_empty(),
            "empty is none"
        );
        let aa = exec_attrs(&process(Some("crust-default"), None)).unwrap();
        assert_eq!(aa.len(), 1);
        assert_eq!(
            text(&aa[0]),
            (
                vec![
                    "/proc/self/attr/apparmor/exec".to_string(),
                    "/proc/self/attr/exec".to_string()
                ],
                "exec crust-default".to_string()
            )
        );
        let se = exec_attrs(&process(
            None,
            Some("system_u:system_r:container_t:s0:c1,c2"),
        ))
        .unwrap();
        assert_eq!(
            text(&se[0]),
            (
                vec!["/proc/self/attr/exec".to_string()],
                "system_u:system_r:container_t:s0:c1,c2".to_string()
            )
        );
        let err = exec_attrs(&process(Some("a\0b"), None)).unwrap_err();
        assert!(err.contains("NUL"), "{err}");
    }

    /// A file that is not on procfs is refused before anything is written to it.
    #[test]
    fn only_procfs_takes_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("exec");
        std::fs::write(&file, "").unwrap();
        let path = CString::new(file.to_str().unwrap()).unwrap();
        assert!(matches!(
            write_attr(&path, b"exec x"),
            Err(Step::Open(Errno::EXDEV))
        ));
        assert_eq!(std::fs::read(&file).unwrap(), b"", "nothing written");
        let missing = CString::new(dir.path().join("none").to_str().unwrap()).unwrap();
        assert!(matches!(
            write_attr(&missing, b"x"),
            Err(Step::Open(Errno::ENOENT))
        ));
    }
}
