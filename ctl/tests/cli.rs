//! `crustctl` failure paths that need no runtime.

use std::process::Command;

fn crustctl(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crustctl"));
    cmd.env_remove("CONTAINER_RUNTIME_ENDPOINT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().expect("run crustctl")
}

#[test]
fn unreachable_endpoint_fails_naming_it() {
    let out = crustctl(
        &["-r", "unix:///nonexistent/crust-ctl-test.sock", "version"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/crust-ctl-test.sock"), "{err}");
}

#[test]
fn endpoint_comes_from_the_environment() {
    let out = crustctl(
        &["info"],
        &[(
            "CONTAINER_RUNTIME_ENDPOINT",
            "unix:///nonexistent/from-env.sock",
        )],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("from-env.sock"));
}

#[test]
fn unsupported_endpoint_scheme_is_explained() {
    let out = crustctl(&["--endpoint", "tcp://127.0.0.1:1", "version"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported endpoint"));
}

#[test]
fn bad_timeout_is_rejected() {
    let out = crustctl(&["--timeout", "soon", "version"], &[]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

/// crictl refuses `checkpoint` without `--export` before it calls the runtime; so does
/// crustctl (a usage error, so no endpoint is needed).
#[test]
fn checkpoint_needs_export_and_a_container() {
    let endpoint = "unix:///nonexistent/crust-ctl-test.sock";
    let out = crustctl(&["-r", endpoint, "checkpoint", "abc"], &[]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--export"), "{err}");
    let out = crustctl(&["-r", endpoint, "checkpoint", "-e", "/tmp/x.tar"], &[]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}
