//! The check of a trial's object after the restart, per RPC.
use std::path::PathBuf;

use crust_proto::runtime::v1::{ContainerState, PodSandboxState};
use tonic::Code;

use super::*;

impl Injector {
    /// The RPC's object after the restart: whole and usable, or gone.
    pub(super) async fn check(&mut self, rpc: Rpc, t: &Target) -> (Option<Outcome>, Vec<String>) {
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
}
