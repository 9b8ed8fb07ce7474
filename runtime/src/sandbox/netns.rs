//! The pod's network namespace, made and pinned by crustd itself (as CRI-O's `pinns`
//! and containerd's CRI plugin do) instead of by the monitor: once the pin exists, CNI
//! ADD can run while the monitor is still starting, rather than after it. Pods with a
//! user namespace keep having the monitor make it (their network namespace must be
//! owned by the pod's user namespace, which only the monitor makes).

use std::{
    fs::{self, OpenOptions},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use nix::{
    mount::{MsFlags, mount},
    sched::{CloneFlags, unshare},
};

/// Makes a network namespace with `lo` up and `sysctls` (all `net.*`) applied, and
/// pins it by bind-mounting its nsfs file at `pins_dir/net` (creating `pins_dir`).
/// Blocking (a thread of its own, see below). On failure a pin file may remain; the
/// pod's teardown removes it like any other pin.
pub(super) async fn make_pinned_netns(
    pins_dir: PathBuf,
    sysctls: Vec<(String, String)>,
) -> Result<(), String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A thread of its own that ends right after: `unshare` moves only the calling
    // thread into the new namespace, and a pooled thread (tokio's blocking pool) would
    // carry it into whatever it ran next. The namespace outlives the thread through
    // the pin.
    std::thread::Builder::new()
        .name("crust-netns".into())
        .spawn(move || {
            let _ = tx.send(pin_on_this_thread(&pins_dir, &sysctls));
        })
        .map_err(|e| format!("start the network namespace thread: {e}"))?;
    rx.await
        .map_err(|_| "the network namespace thread died".to_string())?
}

fn pin_on_this_thread(pins_dir: &Path, sysctls: &[(String, String)]) -> Result<(), String> {
    make_pins_dir(pins_dir)?;
    let pin = pins_dir.join("net");
    // O_EXCL: never follows a link someone planted at the name (the pins directory
    // is fresh and ours, but a create that cannot follow costs nothing).
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&pin)
        .map_err(|e| format!("create pin {}: {e}", pin.display()))?;
    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare network namespace: {e}"))?;
    crate::monitor::daemon::loopback_up()
        .map_err(|e| format!("bring up lo in the pod network namespace: {e}"))?;
    // `/proc/sys/net` resolves to the network namespace of the task that opens it (this
    // thread), so these land in the pod's. Applied before the pin is mounted, so before
    // CNI creates the pod's interfaces: `net.*.conf.default.*` reaches them, as when
    // the monitor applied them.
    for (name, value) in sysctls {
        let path = Path::new(super::PROC_ROOT)
            .join("sys")
            .join(crate::monitor::daemon::sysctl_path(name));
        fs::write(&path, value).map_err(|e| format!("sysctl {name}={value}: {e}"))?;
    }
    mount(
        Some("/proc/thread-self/ns/net"),
        &pin,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("pin the network namespace at {}: {e}", pin.display()))
}

/// `pins_dir` (and its parent) as the monitor makes them: 0755 whatever crustd's umask,
/// so a loose umask never leaves them writable by others.
fn make_pins_dir(pins_dir: &Path) -> Result<(), String> {
    let err = |e: std::io::Error| format!("create {}: {e}", pins_dir.display());
    if let Some(root) = pins_dir.parent()
        && !root.exists()
    {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(root)
            .map_err(err)?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o755)).map_err(err)?;
    }
    match fs::DirBuilder::new().mode(0o755).create(pins_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(e)),
    }
    fs::set_permissions(pins_dir, fs::Permissions::from_mode(0o755)).map_err(err)
}
