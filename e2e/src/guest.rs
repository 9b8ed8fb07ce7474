//! A guest node for what this host cannot be: systemd as PID 1 on a pure cgroup v2
//! hierarchy, with AppArmor (the systemd cgroup driver, the v2 device filter, profiles).
//!
//! `e2e/guest/vm.sh` boots a Debian bookworm guest under qemu (TCG: slow, so guest
//! suites keep to what needs a real node). The image is built once per machine under
//! `$CRUST_GUEST_DIR` (default /var/tmp/crust-guest/images, ~2.5 min) and shared
//! read-only by every guest: each boot writes to its own throw-away overlay. The
//! workspace is shared in read-only at /mnt/host, so the guest runs the binaries the
//! host built (`target/debug/crustd`...).

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, bail};

/// Debian packages the guest image carries beyond vm.sh's base set: what crustd's
/// guest suites drive (CNI plugins, runc, crun, a registry with busybox content, the
/// AppArmor parser).
pub const GUEST_PACKAGES: &str = "apparmor,apparmor-utils,runc,crun,criu,docker-registry,busybox-static,containernetworking-plugins";

/// Where the workspace appears inside the guest.
pub const HOST_SHARE: &str = "/mnt/host";

/// The workspace root (the e2e crate's parent).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e sits inside the workspace")
        .to_path_buf()
}

/// Where a file of the workspace (a built binary, a script) appears inside the guest.
pub fn in_guest(host_path: &Path) -> anyhow::Result<String> {
    let rel = host_path.strip_prefix(workspace_root()).with_context(|| {
        format!(
            "{} is outside the workspace, so the guest cannot see it (unset CARGO_TARGET_DIR)",
            host_path.display()
        )
    })?;
    Ok(format!("{HOST_SHARE}/{}", rel.display()))
}

fn vm_script() -> PathBuf {
    workspace_root().join("e2e/guest/vm.sh")
}

fn base_dir() -> PathBuf {
    std::env::var_os("CRUST_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/crust-guest"))
}

/// Builds the shared image unless one with the same package list is there. A lock file
/// keeps parallel suites from building it twice.
pub fn ensure_image() -> anyhow::Result<PathBuf> {
    let base = base_dir();
    fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
    let images = base.join("images");
    let stamp = images.join("crust-packages");
    let lock = base.join("build.lock");
    let status = Command::new("flock")
        .arg(&lock)
        .arg("bash")
        .arg("-c")
        .arg(
            r#"set -e
               if [ -f "$IMG/bookworm.raw" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$VM_EXTRA_PKGS" ]; then exit 0; fi
               "$VM" build-image
               printf %s "$VM_EXTRA_PKGS" > "$STAMP""#,
        )
        .env("IMG", &images)
        .env("STAMP", &stamp)
        .env("VM", vm_script())
        .env("VM_DIR", &base)
        .env("VM_EXTRA_PKGS", GUEST_PACKAGES)
        .stdin(Stdio::null())
        .status()
        .context("run flock + vm.sh build-image (apt-get install qemu-system-x86 mmdebstrap)")?;
    if !status.success() {
        bail!(
            "building the guest image under {} failed: {status}",
            base.display()
        );
    }
    Ok(images)
}

/// One booted guest; shut down (and its run directory removed) on drop.
pub struct Guest {
    dir: PathBuf,
}

impl Guest {
    /// Boots a guest named `name` (its run directory is `<base>/<name>.<pid>`).
    pub fn boot(name: &str) -> anyhow::Result<Guest> {
        let images = ensure_image()?;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base_dir().join(format!("{name}.{}.{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        symlink(&images, dir.join("images"))?;
        let guest = Guest { dir };
        let out = guest.vm(&["boot"], &[])?;
        if !out.status.success() {
            bail!(
                "vm.sh boot failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(guest)
    }

    fn vm(&self, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Output> {
        let mut cmd = Command::new(vm_script());
        cmd.args(args)
            .env("VM_DIR", &self.dir)
            .env("VM_SHARE", workspace_root())
            .env("VM_SHARE_RO", "1")
            .env("VM_MEM", "2048")
            .env("VM_SMP", "2")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().context("run e2e/guest/vm.sh")
    }

    /// Runs `script` with bash as root in the guest (cwd /root), at most `timeout_s`.
    pub fn run(&self, script: &str, timeout_s: u32) -> anyhow::Result<Output> {
        self.vm(&["run", script], &[("VM_TIMEOUT", &timeout_s.to_string())])
    }

    /// Runs `script` and returns its stdout; an error carrying stdout and stderr when
    /// it exits non-zero.
    pub fn run_ok(&self, script: &str, timeout_s: u32) -> anyhow::Result<String> {
        let out = self.run(script, timeout_s)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "guest command failed ({}):\n{script}\n--- stdout\n{stdout}\n--- stderr\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    /// The guest's serial console so far (boot messages, kernel warnings).
    pub fn console(&self) -> String {
        fs::read_to_string(self.dir.join("run/console.log")).unwrap_or_default()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.vm(&["shutdown"], &[]);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The OCI runtime the `oci` handler suites drive: `$CRUST_TEST_OCI_RUNTIME`, else
/// Debian's runc. The suites run with runc on this host and again, inside a guest
/// node, with crun ([`run_suite_in_guest`]), which refuses this host's hybrid cgroups.
pub fn oci_runtime_under_test() -> String {
    std::env::var("CRUST_TEST_OCI_RUNTIME").unwrap_or_else(|_| "/usr/sbin/runc".into())
}

/// Whether this test process is the copy [`run_suite_in_guest`] started in a guest.
pub fn in_guest_run() -> bool {
    std::env::var_os("CRUST_TEST_OCI_RUNTIME").is_some()
}

/// Runs this test binary's other tests (all but those matching `skip`) inside a
/// guest node (pure cgroup v2, systemd) with `CRUST_TEST_OCI_RUNTIME=runtime`, and
/// fails with their output unless every one of them passed. `expected` is how many
/// should run, so a filter that matched nothing cannot pass.
pub fn run_suite_in_guest(name: &str, runtime: &str, skip: &str, expected: usize) {
    let exe = std::env::current_exe().expect("current test executable");
    let exe = in_guest(&exe).expect("test binary inside the workspace");
    let guest = Guest::boot(name).expect("boot the guest node");
    // Two tests at a time: the guest has 2 GiB and two emulated cores.
    let out = guest
        .run(
            &format!("CRUST_TEST_OCI_RUNTIME={runtime} {exe} --skip {skip} --test-threads 2 2>&1"),
            1200,
        )
        .expect("run the suite in the guest");
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = format!("test result: ok. {expected} passed; 0 failed");
    if !(out.status.success() && text.contains(&summary)) {
        // A daemon that crashed shows in the kernel's log with the faulting address,
        // which addr2line turns into a line of the host-built binary.
        let kernel = guest
            .run(
                "dmesg | grep -A3 -E 'segfault|general protection|traps:' | tail -40",
                60,
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!(
            "the suite with {runtime} in the guest ({}), wanted `{summary}`:\n{text}\n{}\n--- guest kernel log\n{kernel}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("{name}: {} with {runtime} in the guest", summary);
}
