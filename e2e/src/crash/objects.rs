//! What "whole and usable" means for a pod, a container and an image.
use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crust_proto::runtime::v1::{
    self as cri, ContainerState, PodSandboxState, RemoveContainerRequest, RunPodSandboxRequest,
    StopContainerRequest,
};
use serde_json::Value;
use tonic::Code;

use super::*;

impl Injector {
    /// A READY pod has all it is made of: live monitor, namespace pins that are
    /// mounts, the IP in its netns and in host-local's leases, its cgroup.
    pub(super) async fn check_ready_pod(&self, id: &str) -> Vec<String> {
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
    pub(super) fn check_not_ready_pod(&self, s: &cri::PodSandboxStatus) -> Vec<String> {
        let ip = s.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
        if ip.is_empty() {
            Vec::new()
        } else {
            vec![format!("pod {}: NOTREADY with a (stale?) IP {ip}", s.id)]
        }
    }

    /// StopPodSandbox completes, after which the pod has no network, pins or
    /// monitor, and its containers are not running.
    pub(super) async fn check_pod_stops(&self, id: &str) -> Vec<String> {
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
    pub(super) async fn check_container_consistent(&self, id: &str) -> Vec<String> {
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
    pub(super) async fn check_container_usable(&self, id: &str, rpc: Rpc) -> Vec<String> {
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
    pub(super) fn check_container_gone(&self, id: &str, pid: Option<i32>) -> Vec<String> {
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
    pub(super) async fn check_image_usable(&self) -> Vec<String> {
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
}
