//! Builds the pod init's executable image (`pod-init/init.rs`) for the monitor to
//! embed. It is compiled by rustc directly, not as a crate of the workspace: a `no_std`
//! binary needs `panic=abort`, which the workspace's profiles (and cargo's per-package
//! overrides) cannot give one binary; and it links with no C runtime at all.
use std::{env, path::PathBuf, process::Command};

fn main() {
    // The monitor (one per pod) is linked as a fixed-address executable: a PIE's
    // `.data.rel.ro` (~270 KiB of vtables and static tables) is relocated by the
    // loader at every start, which makes those pages private to each monitor; without
    // PIE they are clean pages of the file, shared by all monitors.
    println!("cargo:rustc-link-arg-bin=crust-monitor=-no-pie");
    pod_init_image();
}

/// Compiles the pod init's image into `OUT_DIR`.
fn pod_init_image() {
    let source = "pod-init/init.rs";
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let mut cmd = Command::new(rustc);
    cmd.args([
        "--edition",
        "2024",
        "--crate-type",
        "bin",
        "--target",
        &target,
    ])
    .args([
        "-C",
        "panic=abort",
        "-C",
        "opt-level=s",
        "-C",
        "debuginfo=0",
    ])
    .args(["-C", "strip=symbols", "-C", "relocation-model=static"])
    .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib"])
    .args([
        "-C",
        "link-arg=-static",
        "-C",
        "link-arg=-Wl,--build-id=none",
    ])
    .args(["-D", "warnings", "-o"])
    .arg(out.join("crust-pod-init"))
    .arg(source);
    // Cargo's target linker, if one is configured for cross builds.
    let linker_var = format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_uppercase().replace(['-', '.'], "_")
    );
    if let Some(linker) = env::var_os(&linker_var) {
        cmd.arg("-C").arg({
            let mut arg = std::ffi::OsString::from("linker=");
            arg.push(linker);
            arg
        });
    }
    let status = cmd.status().expect("run rustc for the pod init");
    assert!(status.success(), "building {source} failed: {status}");
}
