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
    self as cri, ContainerState, PodSandboxConfig, PodSandboxMetadata, RunPodSandboxRequest,
};
use tonic::Status;

use crate::world::{World, busybox_image};

mod check;
mod cleanup;
mod cri_calls;
mod objects;

use cri_calls::Request;

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
