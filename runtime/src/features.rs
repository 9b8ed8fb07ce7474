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

/// What crust asks of an OCI runtime's `features` document (the OCI runtime-spec's;
/// runc >= 1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OciFeatures {
    /// `mountOptions` lists `rro` (recursive read-only mounts).
    pub rro: bool,
    /// `linux.mountExtensions.idmap.enabled`: the runtime honours a mount's
    /// `uidMappings`/`gidMappings` (runc >= 1.2). One that does not ignores them.
    pub idmap: bool,
}

/// The features of the OCI runtime at `binary`, from its `features` subcommand. A
/// runtime without the subcommand, or that does not answer within `timeout`, has
/// none.
pub fn oci_runtime_features(binary: &Path, timeout: Duration) -> OciFeatures {
    let Ok(mut child) = Command::new(binary)
        .arg("features")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        return OciFeatures::default();
    };
    // The features document is a few KiB: it fits in the pipe while we wait.
    if !matches!(crate::proc::wait_bounded(&mut child, timeout), Ok(Some(_))) {
        return OciFeatures::default();
    }
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        use std::io::Read;
        let _ = stdout.read_to_end(&mut out);
    }
    features_of(&out)
}

/// Whether the OCI runtime at `binary` accepts the `rro` mount option.
pub fn oci_runtime_has_rro(binary: &Path, timeout: Duration) -> bool {
    oci_runtime_features(binary, timeout).rro
}

/// What an OCI features document says.
fn features_of(document: &[u8]) -> OciFeatures {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(document) else {
        return OciFeatures::default();
    };
    OciFeatures {
        rro: v
            .get("mountOptions")
            .and_then(|o| o.as_array())
            .is_some_and(|opts| opts.iter().any(|o| o == "rro")),
        idmap: v
            .pointer("/linux/mountExtensions/idmap/enabled")
            .and_then(|e| e.as_bool())
            .unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rro_and_idmap_from_the_features_document() {
        let f = |rro, idmap| OciFeatures { rro, idmap };
        for (doc, want) in [
            (r#"{"mountOptions": ["ro", "rro", "bind"]}"#, f(true, false)),
            (r#"{"mountOptions": ["ro", "rbind"]}"#, f(false, false)),
            (r#"{"ociVersionMax": "1.0.2"}"#, f(false, false)),
            (
                r#"{"linux": {"mountExtensions": {"idmap": {"enabled": true}}}}"#,
                f(false, true),
            ),
            (
                r#"{"linux": {"mountExtensions": {"idmap": {"enabled": false}}}}"#,
                f(false, false),
            ),
            ("not json", f(false, false)),
        ] {
            assert_eq!(features_of(doc.as_bytes()), want, "{doc}");
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
