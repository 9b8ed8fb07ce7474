//! End-to-end harness: runs the real `crustd` binary as a child process with a temp
//! root, state, socket and config, waits until it serves, and drives it over its socket
//! with the generated client or the `crustctl` binary.
//!
//! Every process the harness starts is killed and reaped when its handle is dropped,
//! including when a test panics; the child also gets `PR_SET_PDEATHSIG` so it dies if
//! the test process itself is killed. Temp dirs are removed on drop.

pub mod image_builder;
pub mod registry;
pub mod world;

pub mod bench;
pub mod cni;
pub mod containerd;
pub mod crash;
pub mod cri_bench;
pub mod guest;
pub mod guest_crustd;

use std::{
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use crust_proto::runtime::v1::{
    VersionRequest, image_service_client::ImageServiceClient,
    runtime_service_client::RuntimeServiceClient,
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tonic::transport::Channel;

/// How long a daemon may take to start serving before a test fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Finds a binary built from this workspace (`crustd`, `crustctl`) next to the test
/// executable's `deps/` directory, or at `$CRUST_<NAME>_BIN`.
pub fn binary(name: &str) -> PathBuf {
    let var = format!("CRUST_{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Ok(path) = std::env::var(&var) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current executable");
    // A test runs from target/<profile>/deps/, a harness binary from target/<profile>/.
    let dir = exe.parent().expect("executable directory");
    let candidates = [
        dir.join(name),
        dir.parent().map(|d| d.join(name)).unwrap_or_default(),
    ];
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!("{name} not found beside {}: build the workspace binaries first (cargo test --workspace does), or set {var}", exe.display())
    })
}

/// A private directory for one daemon: root, state and config live inside. Removed on
/// drop. Created under /var/tmp (see TESTING.md) with a short name, since unix socket
/// paths are limited to 107 bytes.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> anyhow::Result<Sandbox> {
        let dir = tempfile::Builder::new()
            .prefix("crust-e2e-")
            .tempdir_in("/var/tmp")
            .context("create temp dir")?;
        for sub in ["root", "state", "net.d", "cni-bin"] {
            fs::create_dir_all(dir.path().join(sub))?;
        }
        Ok(Sandbox { dir })
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn root(&self) -> PathBuf {
        self.path().join("root")
    }
    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }
    pub fn socket(&self) -> PathBuf {
        self.state().join("crust.sock")
    }
    pub fn config_file(&self) -> PathBuf {
        self.path().join("crust.toml")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.path().join("net.d")
    }
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Writes the config: the harness's settings in the main file (an empty CNI conf
    /// dir, so tests decide whether the network is ready; cgroups under this sandbox's
    /// own prefix, so they can be checked and removed), and the test's `extra` TOML as
    /// the drop-in `crust.toml.d/50-test.toml`, which overrides them.
    pub fn write_config(&self, extra: &str) -> anyhow::Result<()> {
        let text = format!(
            "[network]\ncni_conf_dir = \"{}\"\ncni_bin_dirs = [\"{}\", \"/usr/lib/cni\"]\n\
             [cgroup]\nmonitor_cgroup = \"{prefix}/monitors\"\npod_parent = \"{prefix}/pods\"\n",
            self.cni_conf_dir().display(),
            self.path().join("cni-bin").display(),
            prefix = self.cgroup_prefix(),
        );
        fs::write(self.config_file(), text).context("write config")?;
        let drop_ins = self.path().join("crust.toml.d");
        fs::create_dir_all(&drop_ins)?;
        if !extra.is_empty() {
            fs::write(drop_ins.join("50-test.toml"), extra).context("write drop-in")?;
        }
        Ok(())
    }

    /// Cgroup path prefix of everything this sandbox's daemon creates.
    pub fn cgroup_prefix(&self) -> String {
        let name = self
            .path()
            .file_name()
            .expect("temp dir name")
            .to_string_lossy();
        format!("/{name}")
    }

    /// Monitors (and pod inits) recorded under this sandbox's state dir that still run.
    pub fn live_monitor_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for entry in fs::read_dir(self.state().join("pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(bytes) = fs::read(entry.path().join("monitor.json")) else {
                continue;
            };
            let Ok(p) = serde_json::from_slice::<crust_runtime::monitor::MonitorPids>(&bytes)
            else {
                continue;
            };
            pids.extend(
                std::iter::once(p.monitor)
                    .chain(p.init)
                    .filter(|r| r.is_alive())
                    .map(|r| r.pid),
            );
        }
        pids
    }

    /// Mount points at or below this sandbox's directory.
    pub fn mounts(&self) -> Vec<PathBuf> {
        let base = self.path().display().to_string();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&base))
            .map(PathBuf::from)
            .collect()
    }

    /// Cgroup directories under this sandbox's prefix, in any hierarchy.
    pub fn cgroups(&self) -> Vec<PathBuf> {
        let manager = crust_runtime::cgroup::Cgroupfs::open(Path::new("/sys/fs/cgroup"))
            .expect("cgroups mounted");
        let mut found = Vec::new();
        for dir in manager.dirs(&self.cgroup_prefix()) {
            walk_dirs(&dir, &mut found);
        }
        found
    }

    /// Starts crustd on this sandbox's dirs (config file written first if missing).
    pub fn start(&self) -> anyhow::Result<Crustd> {
        self.start_with(&SpawnOptions::default())
    }

    /// As [`Sandbox::start`], with the process environment `options` sets up.
    pub fn start_with(&self, options: &SpawnOptions) -> anyhow::Result<Crustd> {
        if !self.config_file().exists() {
            self.write_config("")?;
        }
        Crustd::spawn_with(self, &[], options)
    }
}

fn walk_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk_dirs(&entry.path(), out);
        }
    }
    out.push(dir.to_path_buf());
}

impl Sandbox {
    /// CNI DEL for every pod network crustd left set up (a failed test): host-side
    /// state such as portmap's iptables rules would otherwise outlive the test.
    fn undo_pod_networks(&self) {
        let cache_dir = self.root().join("cni");
        let pods: Vec<String> = fs::read_dir(&cache_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_suffix(".json")
                    .map(str::to_string)
            })
            .collect();
        if pods.is_empty() {
            return;
        }
        let cni = crust_network::CniManager {
            conf_dir: self.cni_conf_dir(),
            bin_dirs: vec![self.path().join("cni-bin"), PathBuf::from("/usr/lib/cni")],
            cache_dir,
            plugin_timeout: Duration::from_secs(30),
        };
        let state = self.state();
        // Drop may run inside the test's runtime, which cannot be blocked on: use a
        // thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                for pod in pods {
                    let netns = state.join("ns").join(&pod).join("net");
                    if let Err(e) = cni.teardown(&pod, &netns).await {
                        eprintln!("cleanup: CNI DEL for pod {pod}: {e}");
                    }
                }
            });
        })
        .join();
    }
}

impl Sandbox {
    /// Kills, by PID, every process whose command line names this sandbox's directory:
    /// monitors (and their launchers) still in setup when the test ended, which have
    /// not written their pid file yet.
    fn kill_strays(&self) {
        let me = std::process::id().to_string();
        let needle = self.path().display().to_string();
        for _ in 0..5 {
            let mut found = false;
            for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
                    continue;
                }
                let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&needle)
                    && let Ok(pid) = name.parse::<i32>()
                {
                    found = true;
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            if !found {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sandbox {
    /// Leaves nothing behind even when a test failed midway: the pods' monitors and
    /// inits (by recorded PID and start time), mounts under the directory, and cgroups
    /// under the sandbox's prefix (deepest first).
    fn drop(&mut self) {
        self.undo_pod_networks();
        self.kill_strays();
        for _ in 0..3 {
            for entry in fs::read_dir(self.state().join("pods"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let Ok(bytes) = fs::read(entry.path().join("monitor.json")) else {
                    continue;
                };
                if let Ok(p) = serde_json::from_slice::<crust_runtime::monitor::MonitorPids>(&bytes)
                {
                    p.monitor.kill();
                    if let Some(init) = p.init {
                        init.kill();
                    }
                }
            }
            let mut mounts = self.mounts();
            mounts.reverse();
            for m in mounts {
                let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        if let Ok(manager) = crust_runtime::cgroup::Cgroupfs::open(Path::new("/sys/fs/cgroup")) {
            let prefix = self.cgroup_prefix();
            let _ = manager.kill_all(&prefix);
            for dir in self.cgroups() {
                // Killed processes leave their cgroups asynchronously.
                for _ in 0..100 {
                    if fs::remove_dir(&dir).is_ok() || !dir.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

/// How the process environment crustd starts in differs from the test's.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// The umask crustd starts with (an init system may hand it 000).
    pub umask: Option<u32>,
    /// `(N, path)`: crustd inherits `path` opened at fd N without close-on-exec, as
    /// after `exec 7</etc` in the shell that starts it (CVE-2024-21626's setup).
    pub inherited_fd: Option<(i32, PathBuf)>,
    /// Variables added to crustd's environment (`CRUST_SPAN_TIMINGS` for benchmarks).
    pub env: Vec<(String, String)>,
}

/// A running crustd. Dropping it kills (SIGKILL) and reaps the process if it still runs.
pub struct Crustd {
    child: Option<Child>,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Crustd {
    /// The status of container `id` (which must exist).
    pub async fn container_status(&self, id: &str) -> crust_proto::runtime::v1::ContainerStatus {
        let req = crust_proto::runtime::v1::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        self.runtime()
            .await
            .expect("connect")
            .container_status(req)
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("status is set")
    }

    /// Polls until container `id` has exited (at most 10 s), then returns its status.
    pub async fn wait_exited(&self, id: &str) -> crust_proto::runtime::v1::ContainerStatus {
        for _ in 0..1000 {
            let s = self.container_status(id).await;
            if s.state == i32::from(crust_proto::runtime::v1::ContainerState::ContainerExited) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("container {id} did not exit");
    }

    /// Spawns crustd with `--config/--root/--state/--socket` from `sandbox` plus `args`.
    /// Does not wait for readiness; see [`Crustd::wait_ready`].
    pub fn spawn(sandbox: &Sandbox, args: &[&str]) -> anyhow::Result<Crustd> {
        Self::spawn_with(sandbox, args, &SpawnOptions::default())
    }

    /// As [`Crustd::spawn`], in the process environment `options` sets up (what a
    /// careless init system or shell could hand the daemon).
    pub fn spawn_with(
        sandbox: &Sandbox,
        args: &[&str],
        options: &SpawnOptions,
    ) -> anyhow::Result<Crustd> {
        let n = fs::read_dir(sandbox.path())?.count();
        let log = sandbox.path().join(format!("crustd-{n}.log"));
        let log_file = fs::File::create(&log)?;
        let mut cmd = Command::new(binary("crustd"));
        cmd.arg("--config")
            .arg(sandbox.config_file())
            .arg("--root")
            .arg(sandbox.root())
            .arg("--state")
            .arg(sandbox.state())
            .arg("--socket")
            .arg(sandbox.socket())
            // Debug unless the caller picks a level (the benchmarks log at info).
            .args(
                (!args.contains(&"--log-level"))
                    .then_some(["--log-level", "debug"])
                    .into_iter()
                    .flatten(),
            )
            .args(args)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        // Opened here (close-on-exec, as std opens everything); the child dup2s it to
        // the wanted number, which leaves the copy without close-on-exec.
        let inherited = match &options.inherited_fd {
            Some((number, path)) => Some((
                *number,
                fs::File::open(path).with_context(|| format!("open {}", path.display()))?,
            )),
            None => None,
        };
        let inherited_raw = inherited
            .as_ref()
            .map(|(n, f)| (*n, std::os::fd::AsRawFd::as_raw_fd(f)));
        let umask = options.umask;
        // SAFETY: prctl, umask and dup2 are async-signal-safe and touch no memory of
        // the parent. The first asks the kernel to SIGKILL the child when the spawning
        // thread (the test's) dies, so a killed test run cannot leak daemons.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
                if let Some(mask) = umask {
                    libc::umask(mask as libc::mode_t);
                }
                if let Some((number, fd)) = inherited_raw
                    && libc::dup2(fd, number) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().context("spawn crustd")?;
        drop(inherited);
        Ok(Crustd {
            child: Some(child),
            socket: sandbox.socket(),
            log,
        })
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    /// The daemon's log so far (for assertion messages).
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `Version` succeeds (the daemon answers UNAVAILABLE while it loads
    /// state, and connections fail before it binds). Fails early, with the log, if the
    /// process exits.
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().expect("running").try_wait()? {
                bail!(
                    "crustd exited with {status} before serving:\n{}",
                    self.logs()
                );
            }
            if let Ok(mut client) = self.runtime().await
                && client.version(VersionRequest::default()).await.is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("crustd not ready after {START_TIMEOUT:?}:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn channel(&self) -> anyhow::Result<Channel> {
        // Generous: a loaded 2-core CI machine creating 100 pods at once is slow, and a
        // test must fail on what it checks, not on time.
        Ok(crust_ctl::connect(
            &format!("unix://{}", self.socket.display()),
            Duration::from_secs(120),
        )
        .await?)
    }

    pub async fn runtime(&self) -> anyhow::Result<RuntimeServiceClient<Channel>> {
        Ok(crust_ctl::runtime_client(self.channel().await?))
    }

    pub async fn image(&self) -> anyhow::Result<ImageServiceClient<Channel>> {
        Ok(crust_ctl::image_client(self.channel().await?))
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        kill(self.pid(), signal).context("signal crustd")
    }

    /// Waits for the process to exit (at most `timeout`) and returns its status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().context("already reaped")?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "crustd still running {timeout:?} after being asked to exit:\n{}",
                    self.logs()
                );
            }
            // Async sleep: the test's gRPC connections must keep running to answer
            // the server's graceful-shutdown GOAWAY/PING.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, then wait for exit.
    pub async fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        self.signal(Signal::SIGTERM)?;
        self.wait_exit(Duration::from_secs(20)).await
    }

    /// SIGKILL, as a crash would end it, and reap.
    pub async fn crash(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::SIGKILL)?;
        self.wait_exit(Duration::from_secs(10)).await.map(|_| ())
    }

    /// Panics unless crustd answers `Version` within `within` (after an attack,
    /// named by `after`).
    pub async fn assert_alive(&self, after: &str, within: Duration) {
        let answer = tokio::time::timeout(within, async {
            self.runtime()
                .await
                .expect("connect")
                .version(VersionRequest::default())
                .await
        })
        .await;
        assert!(
            matches!(answer, Ok(Ok(_))),
            "crustd does not answer Version after {after}: {answer:?}\n{}",
            self.logs()
        );
    }
}

/// Bytes of every regular file below `dir` (apparent sizes); what vanishes during the
/// walk is skipped.
pub fn bytes_below(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            stack.extend(
                fs::read_dir(&p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    total
}

impl Drop for Crustd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Only the process we started, by its PID.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `crustctl` with `args` against `endpoint` and returns its output.
/// Runs crustctl against `endpoint`, which must succeed; its stdout.
pub fn crustctl_ok(endpoint: &str, args: &[&str]) -> String {
    let out = crustctl(endpoint, args).unwrap();
    assert!(
        out.status.success(),
        "crustctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn crustctl(endpoint: &str, args: &[&str]) -> anyhow::Result<Output> {
    Command::new(binary("crustctl"))
        .arg("-r")
        .arg(endpoint)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("run crustctl")
}
