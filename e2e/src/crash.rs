//! Crash injection: SIGKILL crustd a chosen delay into a mutating RPC, restart it on the
//! same root and state, and check that every object the RPC touched is whole and
//! usable or wholly gone, and that cleaning everything up through the CRI leaves no
//! mount, namespace pin, veth, IPAM lease, cgroup, directory or process behind.
//!
//! Used by the `crash-inject` benchmark binary (many trials per RPC) and by the
//! `attacks_crash` suite (a few). One [`Injector`] owns one world (registry, crustd,
//! CNI network) and runs its trials one after another; each trial starts from an
//! empty crustd (no pods, containers or images but what its setup makes).

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crust_proto::runtime::v1::{
    self as cri, ContainerState, ImageSpec, ImageStatusRequest, ListContainersRequest,
    ListImagesRequest, ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata,
    PodSandboxState, PullImageRequest, RemoveContainerRequest, RemoveImageRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    StopPodSandboxRequest,
};
use serde_json::Value;
use tonic::{Code, Status};

use crate::world::{World, busybox_image};

/// The mutating RPCs crashes are injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    RunPodSandbox,
    StopPodSandbox,
    RemovePodSandbox,
    CreateContainer,
    StartContainer,
    StopContainer,
    RemoveContainer,
    PullImage,
    RemoveImage,
}

impl Rpc {
    pub const ALL: [Rpc; 9] = [
        Rpc::RunPodSandbox,
        Rpc::StopPodSandbox,
        Rpc::RemovePodSandbox,
        Rpc::CreateContainer,
        Rpc::StartContainer,
        Rpc::StopContainer,
        Rpc::RemoveContainer,
        Rpc::PullImage,
        Rpc::RemoveImage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rpc::RunPodSandbox => "RunPodSandbox",
            Rpc::StopPodSandbox => "StopPodSandbox",
            Rpc::RemovePodSandbox => "RemovePodSandbox",
            Rpc::CreateContainer => "CreateContainer",
            Rpc::StartContainer => "StartContainer",
            Rpc::StopContainer => "StopContainer",
            Rpc::RemoveContainer => "RemoveContainer",
            Rpc::PullImage => "PullImage",
            Rpc::RemoveImage => "RemoveImage",
        }
    }
}

/// Where a trial's object stood after the restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The RPC's effect is there (pod made, container started, image gone...).
    Completed,
    /// The state before the RPC is there.
    RolledBack,
}

/// One trial: the delay, whether crustd answered before it died, the outcome and every
/// invariant found broken (each names the RPC's object and what was wrong).
#[derive(Debug, Clone)]
pub struct Trial {
    pub rpc: Rpc,
    pub delay: Duration,
    pub answered: bool,
    pub outcome: Option<Outcome>,
    pub violations: Vec<String>,
}

/// The trials of one RPC.
#[derive(Debug, Clone)]
pub struct Tally {
    pub rpc: Rpc,
    /// The RPC's duration without a crash, which the delays spread over.
    pub span: Duration,
    pub trials: Vec<Trial>,
}

impl Tally {
    pub fn count(&self, outcome: Outcome) -> usize {
        self.trials
            .iter()
            .filter(|t| t.outcome == Some(outcome))
            .count()
    }
    pub fn violations(&self) -> impl Iterator<Item = &Trial> {
        self.trials.iter().filter(|t| !t.violations.is_empty())
    }
}

/// The table of results, one row per RPC, then every violation with its delay.
pub fn table(tallies: &[Tally]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} {:>8} {:>7} {:>9} {:>9} {:>11} {:>10}",
        "RPC", "span_ms", "trials", "answered", "completed", "rolled_back", "violations"
    );
    for t in tallies {
        let _ = writeln!(
            out,
            "{:<18} {:>8.1} {:>7} {:>9} {:>9} {:>11} {:>10}",
            t.rpc.name(),
            t.span.as_secs_f64() * 1000.0,
            t.trials.len(),
            t.trials.iter().filter(|x| x.answered).count(),
            t.count(Outcome::Completed),
            t.count(Outcome::RolledBack),
            t.violations().count(),
        );
    }
    for t in tallies {
        for trial in t.violations() {
            for v in &trial.violations {
                let _ = writeln!(
                    out,
                    "VIOLATION {} at {:.1} ms: {v}",
                    t.rpc.name(),
                    trial.delay.as_secs_f64() * 1000.0
                );
            }
        }
    }
    out
}

/// What a trial's setup made for the RPC to act on.
#[derive(Debug, Clone, Default)]
struct Target {
    /// The pod's metadata name (RunPodSandbox looks it up by name).
    pod_name: String,
    pod: Option<String>,
    container_name: String,
    container: Option<String>,
    /// The container's process, recorded before the RPC.
    container_pid: Option<i32>,
}

/// The container command: easy to tell from the launcher waiting to exec it.
const CMD: &[&str] = &["sleep", "1000"];
const CMDLINE: &[u8] = b"sleep\x001000\x00";

/// A small xorshift generator: reproducible delays from a printed seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Runs crash trials in one world.
pub struct Injector {
    pub w: World,
    n: u32,
    /// Delays spread over the RPC's measured duration times this. Default 3: in the
    /// trials the RPCs took up to about twice the calibration run's time (measured
    /// here), and some trials must land after the RPC completed.
    pub span_scale: f64,
}

impl Injector {
    /// A registry with a busybox image, a crustd with a CNI network of its own.
    pub async fn new() -> Injector {
        let image = busybox_image(&["sh", "sleep", "true"], |_| {});
        let w = World::start(&image, "test/crash-inject", "").await;
        Injector {
            w,
            n: 0,
            span_scale: 3.0,
        }
    }

    /// `trials` trials of `rpc`, their delays stratified over the RPC's own duration
    /// (measured once without a crash, times `span_scale`), so every step is hit:
    /// trial i is killed at `(i + u) / trials * span`, u uniform in [0, 1).
    pub async fn run(&mut self, rpc: Rpc, trials: u32, rng: &mut Rng) -> Tally {
        let span = self.calibrate(rpc).await.mul_f64(self.span_scale);
        let mut tally = Tally {
            rpc,
            span,
            trials: Vec::new(),
        };
        for i in 0..trials {
            let delay = span.mul_f64((f64::from(i) + rng.unit()) / f64::from(trials));
            tally.trials.push(self.trial(rpc, delay).await);
        }
        tally
    }

    /// How long `rpc` takes when nothing kills crustd.
    async fn calibrate(&mut self, rpc: Rpc) -> Duration {
        let target = match self.setup(rpc).await {
            Ok(t) => t,
            Err(_) => return Duration::from_millis(50),
        };
        let started = Instant::now();
        let _ = self.call(rpc, &target).await;
        let took = started.elapsed();
        let _ = self.cleanup().await;
        took
    }

    /// One trial: set up, start the RPC, SIGKILL crustd after `delay`, restart it, and
    /// check.
    pub async fn trial(&mut self, rpc: Rpc, delay: Duration) -> Trial {
        let mut trial = Trial {
            rpc,
            delay,
            answered: false,
            outcome: None,
            violations: Vec::new(),
        };
        let target = match self.setup(rpc).await {
            Ok(t) => t,
            Err(e) => {
                trial.violations.push(format!("setup: {e}"));
                trial.violations.extend(self.cleanup().await);
                return trial;
            }
        };
        let call = {
            let rt = self.w.d.runtime().await.expect("connect");
            let im = self.w.d.image().await.expect("connect");
            let request = self.request(rpc, &target);
            tokio::spawn(request.send(rt, im))
        };
        tokio::time::sleep(delay).await;
        if let Err(e) = self.w.d.crash().await {
            trial.violations.push(format!("crash crustd: {e}"));
        }
        trial.answered = matches!(call.await, Ok(Ok(_)));
        if let Err(e) = self.restart().await {
            trial.violations.push(format!("restart: {e:#}"));
            return trial;
        }
        let (outcome, violations) = self.check(rpc, &target).await;
        trial.outcome = outcome;
        trial.violations.extend(violations);
        trial.violations.extend(self.cleanup().await);
        trial
    }

    async fn restart(&mut self) -> anyhow::Result<()> {
        self.w.d = self.w.sb.start()?;
        self.w.d.wait_ready().await
    }

    // ----- setup -----

    async fn setup(&mut self, rpc: Rpc) -> Result<Target, String> {
        self.n += 1;
        let mut t = Target {
            pod_name: format!("crash-{}", self.n),
            container_name: format!("ctr-{}", self.n),
            ..Default::default()
        };
        match rpc {
            Rpc::PullImage => {
                self.remove_image()
                    .await
                    .map_err(|e| format!("RemoveImage: {e}"))?;
                return Ok(t);
            }
            _ => self.pull().await.map_err(|e| format!("PullImage: {e}"))?,
        }
        if matches!(rpc, Rpc::RunPodSandbox | Rpc::RemoveImage) {
            return Ok(t);
        }
        let pod = self
            .rt()
            .await
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(self.pod_config(&t.pod_name)),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|e| format!("RunPodSandbox: {e}"))?
            .into_inner()
            .pod_sandbox_id;
        t.pod = Some(pod.clone());
        if rpc == Rpc::CreateContainer {
            return Ok(t);
        }
        let id = self
            .w
            .create(&pod, self.w.config(&t.container_name, CMD))
            .await
            .map_err(|e| format!("CreateContainer: {e}"))?;
        t.container = Some(id.clone());
        if rpc != Rpc::StartContainer {
            self.w
                .start_container(&id)
                .await
                .map_err(|e| format!("StartContainer: {e}"))?;
        }
        t.container_pid = self
            .container_status(&id)
            .await
            .ok()
            .and_then(|(_, info)| info["pid"].as_i64())
            .map(|p| p as i32);
        Ok(t)
    }

    fn pod_config(&self, name: &str) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "crash".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: self.w.logs.join(name).display().to_string(),
            linux: Some(cri::LinuxPodSandboxConfig::default()),
            ..Default::default()
        }
    }

    fn request(&self, rpc: Rpc, t: &Target) -> Request {
        let pod = t.pod.clone().unwrap_or_default();
        let container = t.container.clone().unwrap_or_default();
        match rpc {
            Rpc::RunPodSandbox => Request::Run(Box::new(self.pod_config(&t.pod_name))),
            Rpc::StopPodSandbox => Request::StopPod(pod),
            Rpc::RemovePodSandbox => Request::RemovePod(pod),
            Rpc::CreateContainer => {
                Request::Create(pod, Box::new(self.w.config(&t.container_name, CMD)))
            }
            Rpc::StartContainer => Request::Start(container),
            Rpc::StopContainer => Request::Stop(container),
            Rpc::RemoveContainer => Request::Remove(container),
            Rpc::PullImage => Request::Pull(self.w.image.clone()),
            Rpc::RemoveImage => Request::RemoveImage(self.w.image.clone()),
        }
    }

    async fn call(&self, rpc: Rpc, t: &Target) -> Result<(), Status> {
        let rt = self.w.d.runtime().await.expect("connect");
        let im = self.w.d.image().await.expect("connect");
        self.request(rpc, t).send(rt, im).await
    }

    // ----- checks -----

    /// The RPC's object after the restart: whole and usable, or gone.
    async fn check(&mut self, rpc: Rpc, t: &Target) -> (Option<Outcome>, Vec<String>) {
        let mut v = Vec::new();
        let outcome = match rpc {
            Rpc::RunPodSandbox => {
                let pods = self.pods_named(&t.pod_name).await;
                match pods.as_slice() {
                    [] => {
                        v.extend(self.leaks("rolled-back pod", false).await);
                        Some(Outcome::RolledBack)
                    }
                    [one] => {
                        v.extend(self.check_ready_pod(one).await);
                        v.extend(self.check_pod_stops(one).await);
                        Some(Outcome::Completed)
                    }
                    many => {
                        v.push(format!("pod {} listed {} times", t.pod_name, many.len()));
                        None
                    }
                }
            }
            Rpc::StopPodSandbox | Rpc::RemovePodSandbox => {
                let pod = t.pod.clone().unwrap_or_default();
                match self.pod_status(&pod).await {
                    Err(e) if e.code() == Code::NotFound && rpc == Rpc::RemovePodSandbox => {
                        v.extend(self.leaks("removed pod", false).await);
                        Some(Outcome::Completed)
                    }
                    Err(e) => {
                        v.push(format!("pod {pod}: PodSandboxStatus: {e}"));
                        None
                    }
                    Ok((s, _)) => {
                        let ready = s.state == i32::from(PodSandboxState::SandboxReady);
                        if ready {
                            v.extend(self.check_ready_pod(&pod).await);
                        } else {
                            v.extend(self.check_not_ready_pod(&s));
                        }
                        if let Some(c) = &t.container {
                            v.extend(self.check_container_consistent(c).await);
                        }
                        v.extend(self.check_pod_stops(&pod).await);
                        if rpc == Rpc::RemovePodSandbox {
                            if let Err(e) = self.remove_pod(&pod).await {
                                v.push(format!("pod {pod}: retried RemovePodSandbox: {e}"));
                            }
                            v.extend(self.leaks("removed pod", false).await);
                        }
                        Some(if ready || rpc == Rpc::RemovePodSandbox {
                            Outcome::RolledBack
                        } else {
                            Outcome::Completed
                        })
                    }
                }
            }
            Rpc::CreateContainer => {
                let pod = t.pod.clone().unwrap_or_default();
                let found: Vec<String> = self
                    .containers()
                    .await
                    .into_iter()
                    .filter(|c| {
                        c.metadata
                            .as_ref()
                            .is_some_and(|m| m.name == t.container_name)
                    })
                    .map(|c| c.id)
                    .collect();
                match found.as_slice() {
                    [] => {
                        let dirs = entries(&self.w.sb.root().join("containers"));
                        if !dirs.is_empty() {
                            v.push(format!("rolled-back container left {dirs:?}"));
                        }
                        // Below the pod's cgroup only the pod init's (named after the
                        // pod) may be.
                        let cgroups: Vec<PathBuf> = self
                            .w
                            .sb
                            .cgroups()
                            .into_iter()
                            .filter(|c| {
                                c.to_string_lossy().contains(&pod)
                                    && c.file_name().is_some_and(|n| n != pod.as_str())
                            })
                            .collect();
                        if !cgroups.is_empty() {
                            v.push(format!("rolled-back container left cgroups {cgroups:?}"));
                        }
                        Some(Outcome::RolledBack)
                    }
                    [id] => {
                        v.extend(self.check_container_usable(id, rpc).await);
                        Some(Outcome::Completed)
                    }
                    many => {
                        v.push(format!("container listed {} times: {many:?}", many.len()));
                        None
                    }
                }
            }
            Rpc::StartContainer | Rpc::StopContainer | Rpc::RemoveContainer => {
                let id = t.container.clone().unwrap_or_default();
                match self.container_status(&id).await {
                    Err(e) if e.code() == Code::NotFound && rpc == Rpc::RemoveContainer => {
                        v.extend(self.check_container_gone(&id, t.container_pid));
                        Some(Outcome::Completed)
                    }
                    Err(e) => {
                        v.push(format!("container {id}: ContainerStatus: {e}"));
                        None
                    }
                    Ok((s, _)) => {
                        use ContainerState::{ContainerCreated, ContainerExited, ContainerRunning};
                        let state = ContainerState::try_from(s.state).ok();
                        let outcome = match (rpc, state) {
                            (Rpc::StartContainer, Some(ContainerRunning))
                            | (Rpc::StopContainer, Some(ContainerExited)) => {
                                Some(Outcome::Completed)
                            }
                            (Rpc::StartContainer, Some(ContainerCreated))
                            | (Rpc::StopContainer, Some(ContainerRunning))
                            | (Rpc::RemoveContainer, Some(ContainerRunning | ContainerExited)) => {
                                Some(Outcome::RolledBack)
                            }
                            _ => {
                                v.push(format!(
                                    "container {id}: {} ({}: {}) after an interrupted {}",
                                    state_name(s.state),
                                    s.reason,
                                    s.message,
                                    rpc.name()
                                ));
                                None
                            }
                        };
                        v.extend(self.check_container_usable(&id, rpc).await);
                        outcome
                    }
                }
            }
            Rpc::PullImage | Rpc::RemoveImage => {
                let present = match self.image_present().await {
                    Ok(p) => p,
                    Err(e) => {
                        v.push(format!("ImageStatus: {e}"));
                        return (None, v);
                    }
                };
                if !present && let Err(e) = self.pull().await {
                    v.push(format!("image: PullImage after the restart: {e}"));
                }
                v.extend(self.check_image_usable().await);
                if rpc == Rpc::RemoveImage
                    && let Err(e) = self.remove_image().await
                {
                    v.push(format!("image: RemoveImage after the restart: {e}"));
                }
                Some(match (rpc, present) {
                    (Rpc::PullImage, true) | (Rpc::RemoveImage, false) => Outcome::Completed,
                    _ => Outcome::RolledBack,
                })
            }
        };
        (outcome, v)
    }

    /// A READY pod has all it is made of: live monitor, namespace pins that are
    /// mounts, the IP in its netns and in host-local's leases, its cgroup.
    async fn check_ready_pod(&self, id: &str) -> Vec<String> {
        let mut v = Vec::new();
        let (s, info) = match self.pod_status(id).await {
            Ok(x) => x,
            Err(e) => return vec![format!("pod {id}: PodSandboxStatus: {e}")],
        };
        if s.state != i32::from(PodSandboxState::SandboxReady) {
            v.push(format!(
                "pod {id}: listed but NOTREADY after a completed run: {info}"
            ));
            return v;
        }
        if info["monitor"]["alive"] != Value::Bool(true) {
            v.push(format!("pod {id}: READY without a live monitor: {info}"));
        }
        let mounts = self.w.sb.mounts();
        for ns in ["net", "ipc", "uts"] {
            match info["pins"][ns].as_str() {
                Some(pin) if mounts.contains(&PathBuf::from(pin)) => {}
                other => v.push(format!(
                    "pod {id}: READY without a {ns} pin mount ({other:?})"
                )),
            }
        }
        let ip = s.network.map(|n| n.ip).unwrap_or_default();
        if ip.is_empty() {
            v.push(format!("pod {id}: READY without an IP"));
        } else {
            if !self.w.net.allocated_ips().contains(&ip) {
                v.push(format!(
                    "pod {id}: READY with IP {ip} that host-local has no lease for"
                ));
            }
            if let Some(pin) = info["pins"]["net"].as_str() {
                let addrs = std::process::Command::new("nsenter")
                    .arg(format!("--net={pin}"))
                    .args(["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                if !addrs.contains(&format!("{ip}/")) {
                    v.push(format!(
                        "pod {id}: READY but its netns has no eth0 with {ip}: {addrs:?}"
                    ));
                }
            }
        }
        if self.w.net.attached_veths().is_empty() {
            v.push(format!("pod {id}: READY but no veth is on the test bridge"));
        }
        let cgroup = info["cgroup"]["pod"].as_str().unwrap_or_default();
        let manager = crust_runtime::cgroup::Cgroupfs::open(Path::new("/sys/fs/cgroup"))
            .expect("cgroups mounted");
        if cgroup.is_empty() || !manager.dirs(cgroup).iter().any(|d| d.is_dir()) {
            v.push(format!("pod {id}: READY without its cgroup {cgroup:?}"));
        }
        v
    }

    /// A NOTREADY pod shows no IP (its network may be torn down already).
    fn check_not_ready_pod(&self, s: &cri::PodSandboxStatus) -> Vec<String> {
        let ip = s.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
        if ip.is_empty() {
            Vec::new()
        } else {
            vec![format!("pod {}: NOTREADY with a (stale?) IP {ip}", s.id)]
        }
    }

    /// StopPodSandbox completes, after which the pod has no network, pins or
    /// monitor, and its containers are not running.
    async fn check_pod_stops(&self, id: &str) -> Vec<String> {
        let mut v = Vec::new();
        if let Err(e) = self.stop_pod(id).await {
            v.push(format!("pod {id}: StopPodSandbox after the restart: {e}"));
            return v;
        }
        match self.pod_status(id).await {
            Ok((s, info)) => {
                if s.state != i32::from(PodSandboxState::SandboxNotready) {
                    v.push(format!(
                        "pod {id}: not NOTREADY after StopPodSandbox: {info}"
                    ));
                }
                if info["pins"].as_object().is_some_and(|p| !p.is_empty()) {
                    v.push(format!("pod {id}: pins left after StopPodSandbox: {info}"));
                }
                if info["monitor"]["alive"] == Value::Bool(true) {
                    v.push(format!("pod {id}: monitor alive after StopPodSandbox"));
                }
                v.extend(self.check_not_ready_pod(&s));
            }
            Err(e) => v.push(format!("pod {id}: PodSandboxStatus after stop: {e}")),
        }
        // Only this trial's pod exists: its veth and lease must be gone.
        let veths = self.w.net.attached_veths();
        if !veths.is_empty() {
            v.push(format!(
                "pod {id}: veths left after StopPodSandbox: {veths:?}"
            ));
        }
        let leases = self.w.net.allocated_ips();
        if !leases.is_empty() {
            v.push(format!(
                "pod {id}: leases left after StopPodSandbox: {leases:?}"
            ));
        }
        for c in self.containers().await {
            if c.state == ContainerState::ContainerRunning as i32 {
                v.push(format!(
                    "container {}: RUNNING after its pod was stopped",
                    c.id
                ));
            }
        }
        v
    }

    /// A container's reported state matches its process.
    async fn check_container_consistent(&self, id: &str) -> Vec<String> {
        let (s, info) = match self.container_status(id).await {
            Ok(x) => x,
            Err(e) if e.code() == Code::NotFound => return Vec::new(),
            Err(e) => return vec![format!("container {id}: ContainerStatus: {e}")],
        };
        let pid = info["pid"].as_i64().map(|p| p as i32);
        let runs = pid.is_some_and(runs_command);
        let mut v = Vec::new();
        if s.state == ContainerState::ContainerRunning as i32 && !runs {
            // An exit the monitor is recording reads RUNNING for a moment (as with
            // containerd until its exit event is handled); one that stays is lost.
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut still = true;
            while still && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                still = self
                    .container_status(id)
                    .await
                    .is_ok_and(|(s, _)| s.state == ContainerState::ContainerRunning as i32);
            }
            if still {
                let pod = info["sandboxID"].as_str().unwrap_or_default();
                let exit_file = self
                    .w
                    .sb
                    .state()
                    .join("pods")
                    .join(pod)
                    .join("containers")
                    .join(id)
                    .join("exit.json");
                let proc_state = pid
                    .and_then(|p| fs::read_to_string(format!("/proc/{p}/stat")).ok())
                    .and_then(|st| st.rsplit(')').next().map(|r| r.trim().chars().next()))
                    .flatten();
                let monitor = self
                    .pod_status(pod)
                    .await
                    .map(|(_, i)| i["monitor"].clone())
                    .unwrap_or_default();
                v.push(format!(
                    "container {id}: RUNNING for 3 s after its process (pid {pid:?}, state {proc_state:?}) ended; exit file present: {}; monitor {monitor}",
                    exit_file.exists()
                ));
            }
        }
        if s.state == ContainerState::ContainerCreated as i32 && runs {
            v.push(format!(
                "container {id}: CREATED while its command runs (pid {pid:?}): an interrupted start was not recovered"
            ));
        }
        if s.state == ContainerState::ContainerExited as i32 && runs {
            v.push(format!(
                "container {id}: EXITED ({}, {}) while its command runs (pid {pid:?})",
                s.exit_code, s.reason
            ));
        }
        v
    }

    /// The container is consistent, and does what its state allows: a CREATED one
    /// starts, a RUNNING one refuses a second start and stops, and any removes
    /// completely.
    async fn check_container_usable(&self, id: &str, rpc: Rpc) -> Vec<String> {
        let mut v = self.check_container_consistent(id).await;
        let Ok((s, info)) = self.container_status(id).await else {
            return v;
        };
        let pid = info["pid"].as_i64().map(|p| p as i32);
        if s.state == ContainerState::ContainerExited as i32
            && s.reason == "StartError"
            && rpc == Rpc::StartContainer
        {
            v.push(format!(
                "container {id}: StartError after an interrupted StartContainer: {}",
                s.message
            ));
        }
        if s.state == ContainerState::ContainerCreated as i32 {
            if let Err(e) = self.w.start_container(id).await {
                v.push(format!(
                    "container {id}: CREATED but StartContainer fails: {e}"
                ));
            }
        } else if s.state == ContainerState::ContainerRunning as i32 {
            match self.w.start_container(id).await {
                Err(e) if e.code() == Code::FailedPrecondition => {}
                other => v.push(format!(
                    "container {id}: a second StartContainer of a RUNNING one answered {other:?}"
                )),
            }
        }
        if let Ok((s, _)) = self.container_status(id).await
            && s.state == ContainerState::ContainerRunning as i32
        {
            let stopped = self
                .rt()
                .await
                .stop_container(StopContainerRequest {
                    container_id: id.into(),
                    timeout: 2,
                })
                .await;
            if let Err(e) = stopped {
                v.push(format!(
                    "container {id}: StopContainer after the restart: {e}"
                ));
            }
            match self.container_status(id).await {
                Ok((s, _)) if s.state == ContainerState::ContainerExited as i32 => {}
                other => v.push(format!(
                    "container {id}: not EXITED after StopContainer: {other:?}"
                )),
            }
        }
        if let Err(e) = self
            .rt()
            .await
            .remove_container(RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
        {
            v.push(format!(
                "container {id}: RemoveContainer after the restart: {e}"
            ));
        }
        v.extend(self.check_container_gone(id, pid));
        v
    }

    /// A removed container has no directory, no cgroup and no process.
    fn check_container_gone(&self, id: &str, pid: Option<i32>) -> Vec<String> {
        let mut v = Vec::new();
        if self.w.sb.root().join("containers").join(id).exists() {
            v.push(format!("container {id}: removed but its directory is left"));
        }
        let cgroups: Vec<PathBuf> = self
            .w
            .sb
            .cgroups()
            .into_iter()
            .filter(|c| c.to_string_lossy().contains(id))
            .collect();
        if !cgroups.is_empty() {
            v.push(format!(
                "container {id}: removed but cgroups are left: {cgroups:?}"
            ));
        }
        if let Some(pid) = pid
            && !wait_until(Duration::from_secs(3), || !runs_command(pid))
        {
            v.push(format!(
                "container {id}: removed but its process {pid} runs"
            ));
        }
        v
    }

    /// The image runs: a container from it in a pod of its own exits 0.
    async fn check_image_usable(&self) -> Vec<String> {
        let name = format!("probe-{}", self.n);
        let mut v = Vec::new();
        let pod = match self
            .rt()
            .await
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(self.pod_config(&name)),
                runtime_handler: String::new(),
            })
            .await
        {
            Ok(r) => r.into_inner().pod_sandbox_id,
            Err(e) => return vec![format!("image probe: RunPodSandbox: {e}")],
        };
        match self.w.create(&pod, self.w.config(&name, &["true"])).await {
            Ok(id) => {
                if let Err(e) = self.w.start_container(&id).await {
                    v.push(format!("image: a container from it does not start: {e}"));
                } else {
                    let s = self.w.d.wait_exited(&id).await;
                    if s.exit_code != 0 {
                        v.push(format!(
                            "image: `true` from it exited {}: {s:?}",
                            s.exit_code
                        ));
                    }
                }
            }
            Err(e) => v.push(format!("image: CreateContainer from it: {e}")),
        }
        if let Err(e) = self.remove_pod(&pod).await {
            v.push(format!("image probe: RemovePodSandbox: {e}"));
        }
        v
    }

    // ----- cleanup and leaks -----

    /// Removes every container, pod and image through the CRI, then looks for what
    /// is left on the host.
    async fn cleanup(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        for c in self.containers().await {
            if let Err(e) = self
                .rt()
                .await
                .remove_container(RemoveContainerRequest {
                    container_id: c.id.clone(),
                })
                .await
            {
                v.push(format!("cleanup: RemoveContainer {}: {e}", c.id));
            }
        }
        for p in self.pods().await {
            if let Err(e) = self.remove_pod(&p.id).await {
                v.push(format!("cleanup: RemovePodSandbox {}: {e}", p.id));
            }
        }
        let images = self
            .im()
            .await
            .list_images(ListImagesRequest { filter: None })
            .await
            .map(|r| r.into_inner().images)
            .unwrap_or_default();
        for i in images {
            if let Err(e) = self
                .im()
                .await
                .remove_image(RemoveImageRequest {
                    image: Some(ImageSpec {
                        image: i.id.clone(),
                        ..Default::default()
                    }),
                })
                .await
            {
                v.push(format!("cleanup: RemoveImage {}: {e}", i.id));
            }
        }
        if !self.pods().await.is_empty() || !self.containers().await.is_empty() {
            v.push("cleanup: pods or containers still listed after removal".into());
        }
        v.extend(self.leaks("after cleanup", true).await);
        // Best effort, so one trial's leak does not count again in the next.
        if !v.is_empty() {
            self.scrub();
        }
        v
    }

    /// Everything left on the host that only pods and containers make (and, with
    /// `images`, images), polled for a few seconds: killed processes leave
    /// asynchronously.
    async fn leaks(&self, when: &str, images: bool) -> Vec<String> {
        let mut found = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            found.clear();
            let sb = &self.w.sb;
            found.extend(sb.mounts().iter().map(|m| format!("mount {}", m.display())));
            found.extend(
                entries(&sb.state().join("ns"))
                    .iter()
                    .map(|p| format!("netns pin dir {}", p.display())),
            );
            found.extend(
                self.w
                    .net
                    .attached_veths()
                    .iter()
                    .map(|v| format!("veth {v}")),
            );
            found.extend(
                self.w
                    .net
                    .allocated_ips()
                    .iter()
                    .map(|ip| format!("IPAM lease {ip}")),
            );
            found.extend(
                sb.cgroups()
                    .iter()
                    .filter(|c| c.to_string_lossy().contains("/pods/"))
                    .map(|c| format!("cgroup {}", c.display())),
            );
            found.extend(
                entries(&sb.state().join("pods"))
                    .iter()
                    .map(|p| format!("pod dir {}", p.display())),
            );
            found.extend(
                entries(&sb.root().join("containers"))
                    .iter()
                    .map(|p| format!("container dir {}", p.display())),
            );
            for dir in ["image/layers", "image/tmp"].iter().filter(|_| images) {
                found.extend(
                    entries(&sb.root().join(dir))
                        .iter()
                        .map(|p| format!("image store {}", p.display())),
                );
            }
            found.extend(
                self.processes()
                    .iter()
                    .map(|(pid, cmd)| format!("process {pid} ({cmd})")),
            );
            if found.is_empty() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        found
            .into_iter()
            .map(|f| format!("leak {when}: {f}"))
            .collect()
    }

    /// Processes of this world other than crustd: in its cgroups, or naming its
    /// directory on their command line or as their working directory.
    fn processes(&self) -> Vec<(i32, String)> {
        let me = std::process::id() as i32;
        let crustd = self.w.d.pid().as_raw();
        let dir = self.w.sb.path().display().to_string();
        let prefix = self.w.sb.cgroup_prefix();
        let mut found = Vec::new();
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if pid == me || pid == crustd {
                continue;
            }
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let cgroup = fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
            let cwd = fs::read_link(entry.path().join("cwd")).unwrap_or_default();
            let in_cgroup = cgroup.lines().any(|l| {
                l.split(':')
                    .nth(2)
                    .is_some_and(|p| p.starts_with(&format!("{prefix}/")))
            });
            if in_cgroup || cmd.contains(&dir) || cwd.starts_with(&dir) {
                found.push((pid, cmd.trim().to_string()));
            }
        }
        found
    }

    /// Undoes leftovers by hand (what Sandbox's drop does) so trials stay independent.
    fn scrub(&self) {
        for (pid, _) in self.processes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let mut mounts = self.w.sb.mounts();
        mounts.reverse();
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }

    // ----- CRI helpers -----

    async fn rt(
        &self,
    ) -> cri::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel> {
        self.w.d.runtime().await.expect("connect")
    }

    async fn im(&self) -> cri::image_service_client::ImageServiceClient<tonic::transport::Channel> {
        self.w.d.image().await.expect("connect")
    }

    async fn pods(&self) -> Vec<cri::PodSandbox> {
        self.rt()
            .await
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .map(|r| r.into_inner().items)
            .unwrap_or_default()
    }

    async fn pods_named(&self, name: &str) -> Vec<String> {
        self.pods()
            .await
            .into_iter()
            .filter(|p| p.metadata.as_ref().is_some_and(|m| m.name == name))
            .map(|p| p.id)
            .collect()
    }

    async fn containers(&self) -> Vec<cri::Container> {
        self.rt()
            .await
            .list_containers(ListContainersRequest::default())
            .await
            .map(|r| r.into_inner().containers)
            .unwrap_or_default()
    }

    async fn pod_status(&self, id: &str) -> Result<(cri::PodSandboxStatus, Value), Status> {
        let r = self
            .rt()
            .await
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            })
            .await?
            .into_inner();
        let info = r
            .info
            .get("info")
            .and_then(|i| serde_json::from_str(i).ok())
            .unwrap_or(Value::Null);
        Ok((r.status.unwrap_or_default(), info))
    }

    async fn container_status(&self, id: &str) -> Result<(cri::ContainerStatus, Value), Status> {
        let r = self
            .rt()
            .await
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await?
            .into_inner();
        let info = r
            .info
            .get("info")
            .and_then(|i| serde_json::from_str(i).ok())
            .unwrap_or(Value::Null);
        Ok((r.status.unwrap_or_default(), info))
    }

    async fn stop_pod(&self, id: &str) -> Result<(), Status> {
        self.rt()
            .await
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    async fn remove_pod(&self, id: &str) -> Result<(), Status> {
        self.rt()
            .await
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    async fn image_present(&self) -> Result<bool, Status> {
        Ok(self
            .im()
            .await
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: self.w.image.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await?
            .into_inner()
            .image
            .is_some())
    }

    async fn pull(&self) -> Result<(), Status> {
        Request::Pull(self.w.image.clone())
            .send(self.rt().await, self.im().await)
            .await
    }

    async fn remove_image(&self) -> Result<(), Status> {
        Request::RemoveImage(self.w.image.clone())
            .send(self.rt().await, self.im().await)
            .await
    }
}

/// One RPC, owned, so it can run on a task of its own while crustd is killed.
enum Request {
    Run(Box<PodSandboxConfig>),
    StopPod(String),
    RemovePod(String),
    Create(String, Box<cri::ContainerConfig>),
    Start(String),
    Stop(String),
    Remove(String),
    Pull(String),
    RemoveImage(String),
}

impl Request {
    async fn send(
        self,
        mut rt: cri::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
        mut im: cri::image_service_client::ImageServiceClient<tonic::transport::Channel>,
    ) -> Result<(), Status> {
        let image = |image: String| {
            Some(ImageSpec {
                image,
                ..Default::default()
            })
        };
        match self {
            Request::Run(config) => rt
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(*config),
                    runtime_handler: String::new(),
                })
                .await
                .map(|_| ()),
            Request::StopPod(id) => rt
                .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id })
                .await
                .map(|_| ()),
            Request::RemovePod(id) => rt
                .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                .await
                .map(|_| ()),
            Request::Create(pod, config) => rt
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod,
                    config: Some(*config),
                    sandbox_config: None,
                })
                .await
                .map(|_| ()),
            Request::Start(id) => rt
                .start_container(StartContainerRequest { container_id: id })
                .await
                .map(|_| ()),
            Request::Stop(id) => rt
                .stop_container(StopContainerRequest {
                    container_id: id,
                    timeout: 2,
                })
                .await
                .map(|_| ()),
            Request::Remove(id) => rt
                .remove_container(RemoveContainerRequest { container_id: id })
                .await
                .map(|_| ()),
            Request::Pull(reference) => im
                .pull_image(PullImageRequest {
                    image: image(reference),
                    auth: None,
                    sandbox_config: None,
                })
                .await
                .map(|_| ()),
            Request::RemoveImage(reference) => im
                .remove_image(RemoveImageRequest {
                    image: image(reference),
                })
                .await
                .map(|_| ()),
        }
    }
}

/// Whether `pid` runs the container command (not the launcher waiting to exec it).
fn runs_command(pid: i32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == CMDLINE)
        && fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .map(|r| r.trim_start().starts_with('Z'))
            })
            == Some(false)
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

fn state_name(state: i32) -> &'static str {
    match ContainerState::try_from(state) {
        Ok(ContainerState::ContainerCreated) => "CREATED",
        Ok(ContainerState::ContainerRunning) => "RUNNING",
        Ok(ContainerState::ContainerExited) => "EXITED",
        _ => "UNKNOWN",
    }
}
