//! What this host and a runtime handler can do, for the `Status` RPC's
//! `runtime_handlers` (kubelet refuses pods that ask for a feature the handler lacks,
//! rather than having the runtime ignore it).
#![allow(unsafe_code)]

use std::{path::Path, process::Command, time::Duration};

/// Whether the kernel has `mount_setattr(2)` (Linux 5.12), which recursive read-only
/// mounts (`rro`) need: probed with an invalid descriptor, so that a kernel that has
/// the call answers EBADF and one that lacks it ENOSYS.
pub fn kernel_has_mount_setattr() -> bool {
    // SAFETY: the call only reads its (empty, NUL-terminated) path and a NULL
    // attribute pointer with size 0; an invalid dirfd makes it fail before any use.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            c"".as_ptr(),
            0,
            std::ptr::null::<u8>(),
            0usize,
        )
    };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}

/// Whether the OCI runtime at `binary` accepts the `rro` mount option, from its
/// `features` subcommand (the OCI runtime-spec's features document; runc ≥ 1.1). A
/// runtime without the subcommand, or that does not answer within `timeout`, does not.
pub fn oci_runtime_has_rro(binary: &Path, timeout: Duration) -> bool {
    let Ok(mut child) = Command::new(binary)
        .arg("features")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        return false;
    };
    // The features document is a few KiB: it fits in the pipe while we wait.
    if !matches!(crate::proc::wait_bounded(&mut child, timeout), Ok(Some(_))) {
        return false;
    }
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        use std::io::Read;
        let _ = stdout.read_to_end(&mut out);
    }
    features_have_rro(&out)
}

/// `mountOptions` of an OCI features document lists `rro`.
fn features_have_rro(document: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(document)
        .ok()
        .and_then(|v| {
            v.get("mountOptions")?
                .as_array()
                .map(|opts| opts.iter().any(|o| o == "rro"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rro_from_the_features_document() {
        for (doc, want) in [
            (r#"{"mountOptions": ["ro", "rro", "bind"]}"#, true),
            (r#"{"mountOptions": ["ro", "rbind"]}"#, false),
            (r#"{"ociVersionMax": "1.0.2"}"#, false),
            ("not json", false),
        ] {
            assert_eq!(features_have_rro(doc.as_bytes()), want, "{doc}");
        }
    }

    #[test]
    fn this_kernel_has_mount_setattr() {
        // The CI and development hosts run Linux 6.x.
        assert!(kernel_has_mount_setattr());
    }

    #[test]
    fn a_missing_runtime_has_no_features() {
        assert!(!oci_runtime_has_rro(
            Path::new("/nonexistent/runc"),
            Duration::from_secs(1)
        ));
    }
}
