//! The reference runtime for the benchmarks: Debian's containerd with its CRI plugin,
//! started here as a child with a config, root, state, socket and CNI conf dir of its
//! own, and `hosts.toml` files marking the loopback registry plain HTTP (TESTING.md).
//! Dropping it kills it (by PID), then the shims it started (by PID, found by their
//! `-address` naming this instance's socket), unmounts what is left under its dir and
//! removes the dir.

use std::{
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use crust_proto::runtime::v1::VersionRequest;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// What a containerd instance is started with.
#[derive(Default)]
pub struct ContainerdOptions {
    /// `host:port` of a plain-HTTP registry to reach through `hosts.toml`.
    pub registry_host: String,
    /// The CRI plugin's `sandbox_image` (the pause image); its default otherwise.
    pub sandbox_image: Option<String>,
    /// The CNI conf dir; an empty one of its own otherwise.
    pub cni_conf_dir: Option<PathBuf>,
}

/// A running containerd with its private dirs.
pub struct Containerd {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Containerd {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn root(&self) -> PathBuf {
        self.dir().join("root")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir().join("c.sock")
    }

    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir().join("containerd.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// `containerd --version`, or empty.
    pub fn version() -> String {
        which("containerd")
            .and_then(|b| Command::new(b).arg("--version").output().ok())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    pub fn start(opts: &ContainerdOptions) -> anyhow::Result<Containerd> {
        let binary = which("containerd").context(
            "containerd not found: apt-get install -y --no-install-recommends containerd runc",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("crust-ctrd-")
            .tempdir_in("/var/tmp")
            .context("create temp dir")?;
        let p = dir.path();
        for sub in ["root", "state", "net.d", "certs.d", "tmp", "opt"] {
            fs::create_dir_all(p.join(sub))?;
        }
        // The registry is plain HTTP on loopback.
        let registry_host = &opts.registry_host;
        let hosts_dir = p.join("certs.d").join(registry_host);
        fs::create_dir_all(&hosts_dir)?;
        fs::write(
            hosts_dir.join("hosts.toml"),
            format!(
                "server = \"http://{registry_host}\"\n\n[host.\"http://{registry_host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )?;
        let d = p.display();
        let cni_conf_dir = opts.cni_conf_dir.clone().unwrap_or_else(|| p.join("net.d"));
        let sandbox_image = opts
            .sandbox_image
            .as_ref()
            .map(|i| format!("    sandbox_image = \"{i}\"\n"))
            .unwrap_or_default();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "{d}/c.sock"

[ttrpc]
  address = "{d}/c.sock.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"
  [plugins."io.containerd.grpc.v1.cri"]
{sandbox_image}    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "{cni}"
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "{d}/certs.d"
"#,
            cni = cni_conf_dir.display(),
        );
        let config_path = p.join("config.toml");
        fs::write(&config_path, config)?;
        let log = fs::File::create(p.join("containerd.log"))?;
        let mut cmd = Command::new(binary);
        cmd.arg("--config")
            .arg(&config_path)
            // Temp mounts (WithTempMount) land under its own dir.
            .env("TMPDIR", p.join("tmp"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent; it
        // asks the kernel to SIGKILL containerd if the process that started it dies.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().context("spawn containerd")?;
        Ok(Containerd {
            child: Some(child),
            dir,
        })
    }

    /// Waits until the CRI plugin answers `Version` on the socket.
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().expect("running").try_wait()? {
                bail!(
                    "containerd exited with {status} before serving:\n{}",
                    self.log()
                );
            }
            if let Ok(channel) = crust_ctl::connect(&self.endpoint(), Duration::from_secs(5)).await
                && crust_ctl::runtime_client(channel)
                    .version(VersionRequest::default())
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd's CRI plugin not serving after 30s:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// PIDs of the shims this instance started: their command line names its socket.
    pub fn shim_pids(&self) -> Vec<i32> {
        let needle = self.socket().display().to_string();
        let mut pids = Vec::new();
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            if args
                .first()
                .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"))
                && args.contains(&needle.as_bytes())
            {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Only the process we started, by its PID.
            let _ = child.kill();
            let _ = child.wait();
        }
        // Shims outlive containerd; kill ours (by PID), which takes their containers.
        for pid in self.shim_pids() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(100));
        unmount_below(self.dir());
        // The TempDir removes the directory.
    }
}

/// Unmounts (lazily, deepest first) everything mounted at or below `dir`.
pub fn unmount_below(dir: &Path) {
    let base = dir.display().to_string();
    let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == base || m.starts_with(&format!("{base}/")))
        .map(str::to_string)
        .collect();
    mounts.reverse();
    for m in mounts {
        let _ = nix::mount::umount2(Path::new(&m), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// `name` on `$PATH` (or the usual system dirs).
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([
            "/usr/bin".into(),
            "/usr/sbin".into(),
            "/usr/local/bin".into(),
        ])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
