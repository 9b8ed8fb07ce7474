//! crustd on a guest node (see [`crate::guest`]): a booted guest with a registry
//! serving a busybox image on the guest's loopback, and crustd run as a transient
//! systemd service from the host-built binaries, driven with the host-built crustctl.
//!
//! The guest has no network, so the image is built and pushed on the host into a
//! registry of the host's, whose storage directory is then copied into the workspace
//! (which the guest sees read-only at /mnt/host) and served in the guest by its own
//! `docker-registry` on 127.0.0.1:5001 (Debian's own registry service, on 5000 with
//! auth, is stopped).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::{
    binary,
    guest::{Guest, in_guest, workspace_root},
    registry::Registry,
    world::busybox_image,
};

/// The image every guest node serves, by the name crustd pulls it with.
pub const BUSYBOX: &str = "127.0.0.1:5001/busybox:latest";

/// Applets the guest image links (pod and container tests use these).
const APPLETS: &[&str] = &[
    "sh", "sleep", "cat", "tail", "true", "echo", "ls", "dd", "id", "touch", "stat",
];

/// A guest running crustd (unit `crustd-test`) and a registry (unit `crust-registry`).
pub struct GuestCrustd {
    pub guest: Guest,
    share: PathBuf,
    crustctl: String,
}

impl GuestCrustd {
    /// Boots guest `name`, serves [`BUSYBOX`] from its registry, starts crustd with
    /// `config` (TOML appended to the base: state under /var/lib/crust and
    /// /run/crust, the monitor from the share) and pulls the image.
    pub async fn start(name: &str, config: &str) -> anyhow::Result<GuestCrustd> {
        let share = registry_share(name).await?;
        let guest = Guest::boot(name)?;
        let node = GuestCrustd {
            guest,
            crustctl: in_guest(&binary("crustctl"))?,
            share,
        };
        let storage = in_guest(&node.share.join("storage"))?;
        node.run(
            &format!(
                r#"set -e
                mkdir -p /var/lib/crust-registry
                cp -a {storage}/. /var/lib/crust-registry/
                cat > /etc/crust-registry.yml <<'EOF'
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/crust-registry
http:
  addr: 127.0.0.1:5001
EOF
                systemd-run --unit=crust-registry docker-registry serve /etc/crust-registry.yml
                for i in $(seq 600); do
                  busybox wget -q -O /dev/null http://127.0.0.1:5001/v2/ && exit 0
                  sleep 0.1
                done
                echo "registry did not answer" >&2; exit 1"#
            ),
            120,
        )?;
        node.start_crustd(config)?;
        node.crustctl(&format!("pull {BUSYBOX}"), 300)?;
        Ok(node)
    }

    /// Runs `script` in the guest; its stdout, or an error with both streams and the
    /// crustd journal.
    pub fn run(&self, script: &str, timeout_s: u32) -> anyhow::Result<String> {
        self.guest.run_ok(script, timeout_s).map_err(|e| {
            let journal = self
                .guest
                .run("journalctl -u crustd-test --no-pager | tail -40", 60)
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            e.context(format!("--- crustd journal (last 40 lines)\n{journal}"))
        })
    }

    /// Runs `crustctl ARGS` (a shell word list) against the guest's crustd.
    pub fn crustctl(&self, args: &str, timeout_s: u32) -> anyhow::Result<String> {
        self.run(
            &format!("{} -t {timeout_s}s {args}", self.crustctl),
            timeout_s + 30,
        )
    }

    /// Writes `content` to `path` in the guest.
    pub fn write(&self, path: &str, content: &str) -> anyhow::Result<()> {
        if content.contains("CRUST_EOF") {
            bail!("content may not contain the heredoc marker");
        }
        self.run(
            &format!(
                "mkdir -p \"$(dirname {path})\"\ncat > {path} <<'CRUST_EOF'\n{content}\nCRUST_EOF"
            ),
            60,
        )
        .map(drop)
    }

    /// (Re)writes crustd's config (the base plus `config`) and starts it as the
    /// transient unit `crustd-test`; returns once it answers.
    pub fn start_crustd(&self, config: &str) -> anyhow::Result<()> {
        self.start_crustd_with_env(config, &[])
    }

    /// [`GuestCrustd::start_crustd`] with `env` (NAME=value words) in crustd's
    /// environment.
    pub fn start_crustd_with_env(&self, config: &str, env: &[&str]) -> anyhow::Result<()> {
        let monitor = in_guest(&binary("crust-monitor"))?;
        self.write(
            "/etc/crust/crust.toml",
            &format!(
                "root = \"/var/lib/crust\"\nstate = \"/run/crust\"\nlog_level = \"info\"\n\
                 [runtime]\nmonitor_path = \"{monitor}\"\n{config}"
            ),
        )?;
        let crustd = in_guest(&binary("crustd"))?;
        self.run(
            &format!(
                "set -e
                 systemd-run --unit=crustd-test {env} {crustd} --config /etc/crust/crust.toml
                 for i in $(seq 600); do
                   {ctl} -t 5s version >/dev/null 2>&1 && exit 0
                   sleep 0.1
                 done
                 echo 'crustd did not answer' >&2; exit 1",
                ctl = self.crustctl,
                env = env
                    .iter()
                    .map(|e| format!("-E '{e}'"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            120,
        )
        .map(drop)
    }

    /// Stops crustd (the unit, which kills crustd alone: monitors, keepers and
    /// containers are in scopes of their own and keep running).
    pub fn stop_crustd(&self) -> anyhow::Result<()> {
        self.run(
            "systemctl stop crustd-test; systemctl reset-failed crustd-test 2>/dev/null; true",
            120,
        )
        .map(drop)
    }
}

impl Drop for GuestCrustd {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.share);
    }
}

/// Pushes the busybox image into a registry on the host and copies its storage under
/// `target/guest-share/<name>.<pid>` in the workspace, where the guest can read it.
async fn registry_share(name: &str) -> anyhow::Result<PathBuf> {
    let registry = Registry::start().await?;
    let image = busybox_image(APPLETS, |_| {});
    registry
        .push_image("busybox", &["latest"], &image)
        .await
        .context("push busybox")?;
    let share = workspace_root()
        .join("target/guest-share")
        .join(format!("{name}.{}", std::process::id()));
    let _ = fs::remove_dir_all(&share);
    fs::create_dir_all(&share)?;
    copy_tree(&registry.storage(), &share.join("storage"))?;
    Ok(share)
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .context("run cp")?;
    if !status.success() {
        bail!("cp -a {} {}: {status}", from.display(), to.display());
    }
    Ok(())
}
