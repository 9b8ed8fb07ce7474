//! A registry to try crust with on a machine that cannot reach Docker Hub: starts
//! Debian's `docker-registry` on a free loopback port (temp storage), pushes a busybox
//! image built from Debian's `busybox-static` as `<host>/library/busybox:latest`, prints
//! the image name and serves until Ctrl-C or SIGTERM, then stops the registry and
//! removes its storage.
//!
//! `cargo build --release --bins && ./target/release/demo-registry` (needs the
//! `docker-registry` and `busybox-static` packages).

use crust_e2e::{registry::Registry, world::busybox_image};
use tokio::signal::unix::{SignalKind, signal};

/// The applets a tour needs: a shell and the usual tools (Debian's busybox runs the
/// others from `sh` without exec).
const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "sleep", "true", "ps", "hostname", "id", "tty", "wget", "httpd",
    "ip", "env", "df", "mount",
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let registry = Registry::start().await?;
    let image = busybox_image(APPLETS, |_| {});
    registry
        .push_image("library/busybox", &["latest"], &image)
        .await?;
    println!("{}/library/busybox:latest", registry.host());
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    // Dropping the registry kills it (by PID) and removes its storage.
    drop(registry);
    Ok(())
}
