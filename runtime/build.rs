//! The monitor's link arguments (static, not PIE), and the pod init's executable
//! image (`pod-init/init.rs`) for the monitor to embed. The image is compiled by rustc
//! directly, not as a crate of the workspace: a `no_std` binary needs `panic=abort`,
//! which the workspace's profiles (and cargo's per-package overrides) cannot give one
//! binary; and it links with no C runtime at all.
use std::{env, path::PathBuf, process::Command};

fn main() {
    monitor_link_args();
    pod_init_image();
}

/// The monitor (one per pod, for the pod's whole life) is linked statically and not
/// as a PIE. Both keep its pages shared: a PIE's `.data.rel.ro` (~270 KiB of vtables
/// and tables) is relocated by the loader at every start, and libc, ld.so and
/// libgcc_s each keep relocated and written pages, all private to each process; a
/// fixed-address static executable has none of that to relocate (and starts without
/// the loader's work). crustd and crustctl stay dynamic (crustd resolves names through
/// NSS, which static glibc cannot load).
///
/// rustc has no per-binary `crt-static` and asks for the C libraries by name
/// (`-lgcc_s -lc ...`, after `-Bdynamic`). So the monitor's link also searches a
/// directory of linker scripts named like those shared libraries, each standing for
/// the matching static archive (libgcc_s's unwinder is libgcc_eh.a); `-static` then
/// makes the linker produce an executable with no interpreter and the static start
/// files.
fn monitor_link_args() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = out.join("monitor-static-libs");
    std::fs::create_dir_all(&dir).expect("create the monitor's library dir");
    for (name, archive) in [
        ("gcc_s", "libgcc_eh.a"),
        ("c", "libc.a"),
        ("m", "libm.a"),
        ("rt", "librt.a"),
        ("pthread", "libpthread.a"),
        ("dl", "libdl.a"),
        ("util", "libutil.a"),
    ] {
        std::fs::write(
            dir.join(format!("lib{name}.so")),
            format!("GROUP ( {archive} )\n"),
        )
        .expect("write a linker script");
    }
    for arg in [
        "-no-pie".to_string(),
        "-static".into(),
        format!("-L{}", dir.display()),
    ] {
        println!("cargo:rustc-link-arg-bin=crust-monitor={arg}");
    }
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
