//! The persisted container record and its state machine.

use std::path::PathBuf;

use crust_state::Record;
use serde::{Deserialize, Serialize};

use super::{ContainerSpec, ImageConfigView};
use crate::proc::ProcRef;

/// Container states.
///
/// ```text
///   (new) --create--> Creating --made--> Created --start--> Running --exit--> Exited --remove--> (gone)
///                        |                  |                                  ^
///                        +--failure/crash--> (rolled back)  +--stop------------+
/// ```
/// An exit is learnt from the monitor's exit file, so one that happened while crustd
/// was down is still reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Creating,
    Created,
    Running,
    Exited,
}

/// What the runtime needs of an image to run it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageForContainer {
    /// Image id (config digest).
    pub id: String,
    /// The image as the user named it.
    pub reference: String,
    pub layers_root: PathBuf,
    /// Layer directory names under `layers_root`, top-most first.
    pub lower: Vec<String>,
    pub config: ImageConfigView,
}

/// A container's persisted record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub pod_id: String,
    pub spec: ContainerSpec,
    pub image: ImageForContainer,
    pub state: ContainerState,
    /// Unix nanoseconds; 0 = not yet.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled`... (CRI `ContainerStatus.reason`).
    pub reason: String,
    pub message: String,
    pub pid: Option<ProcRef>,
    /// Absolute CRI log file.
    pub log_path: PathBuf,
    /// `<root>/containers/<id>`: writable upper and work dirs, rootfs mount point.
    pub dir: PathBuf,
    /// `<pod dir>/containers/<id>`: OCI spec and exit file.
    pub bundle: PathBuf,
    /// cgroupfs path.
    pub cgroup: String,
    /// The cgroup's OOM-kill count when crust itself began ending the container (its
    /// stop signal, Stop's SIGKILL escalation, the pod's stop): that exit then counts
    /// as OOMKilled only if the count grew past it, not because of an earlier OOM kill
    /// of some other process in it. Without it (an exit of its own) any OOM kill in
    /// the cgroup makes the exit OOMKilled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kills_before_kill: Option<u64>,
    /// The identity the process runs as, as resolved at create (image USER, run_as_*,
    /// the image's /etc/group, supplemental groups and their policy): CRI
    /// `ContainerStatus.user`. None in records from before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<ContainerUser>,
}

/// A container process's uid, gid and supplementary gids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

impl Record for Container {
    const KIND: &'static str = "container";
    const VERSION: u32 = 1;
    fn id(&self) -> &str {
        &self.id
    }
}

impl Container {
    pub fn exit_file(&self) -> PathBuf {
        self.bundle.join("exit.json")
    }
    pub fn spec_file(&self) -> PathBuf {
        self.bundle.join("config.json")
    }
    /// (pod id, name, attempt): unique among a pod's live containers.
    pub fn name_key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.pod_id, self.spec.metadata.name, self.spec.metadata.attempt
        )
    }
}
