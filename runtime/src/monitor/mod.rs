//! The per-pod monitor (`crust-monitor`): what crustd tells it, and how they talk.
//!
//! crustd writes a [`MonitorSpec`] as JSON and starts `crust-monitor --spec FILE` with
//! `Command` (no Rust code runs between fork and exec in the threaded daemon). The
//! monitor forks once: the first process reports the outcome on stdout (one JSON
//! [`StartMessage`] line) and exits, so the daemon process it leaves behind is
//! reparented away from crustd and survives crustd restarts. The daemon half is a
//! single-threaded child subreaper that creates the pod namespaces, pins them, runs
//! the pod init when the pod has its own PID namespace, and answers [`Request`]s on a
//! unix socket, one JSON line each way per connection (an [`Request::Attach`] connection then
//! goes on as a framed duplex stream, see [`attach`]).

pub mod attach;
pub mod caps;
mod client;
mod containers;
pub mod crilog;
pub mod daemon;
pub mod exec;
mod hooks;
pub mod launch;
mod lsm;
mod oci;
mod pidns;
mod pod_init;
mod process_limits;
pub mod seccomp;
mod stack_trim;
mod syscalls_x86_64;
mod userns;

use std::path::PathBuf;

pub use client::{MonitorError, request, spawn};
use serde::{Deserialize, Serialize};

use crate::proc::ProcRef;

/// Everything the monitor needs to set up a pod. Paths are absolute.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorSpec {
    pub pod_id: String,
    /// Control socket the monitor listens on.
    pub socket: PathBuf,
    /// Where the monitor writes its and the init's [`ProcRef`] (`monitor.json`), so
    /// crustd (and cleanup tools) can find them without the socket.
    pub pid_file: PathBuf,
    /// Directory for namespace pins (`net`, `ipc`, `uts`, `pid`).
    pub pins_dir: PathBuf,
    pub new_net: bool,
    /// A network namespace crustd already made and pinned (see
    /// `sandbox::netns`): joined instead of made, and not pinned again. Absent in
    /// specs of older crustd builds: the monitor makes it when `new_net`.
    #[serde(default)]
    pub join_net: Option<PathBuf>,
    pub new_ipc: bool,
    pub new_uts: bool,
    pub new_pid: bool,
    /// Set in the new UTS namespace.
    pub hostname: String,
    /// `(name, value)` written under `/proc/sys` inside the new namespaces, in order.
    pub sysctls: Vec<(String, String)>,
    /// Cgroup directories (one per hierarchy) the monitor moves itself into, outside
    /// the pod's limits.
    pub monitor_cgroup_dirs: Vec<PathBuf>,
    /// Cgroup directories of the pod; the pod init is placed there.
    pub pod_cgroup_dirs: Vec<PathBuf>,
    /// A user namespace for the pod: made first, with these `uid_map`/`gid_map`
    /// contents, so that it owns the pod's net/IPC/UTS namespaces; pinned as `user`.
    #[serde(default)]
    pub userns: Option<(String, String)>,
}

/// Processes a running monitor reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorPids {
    pub monitor: ProcRef,
    /// PID 1 of the pod's PID namespace, when the pod has one.
    pub init: Option<ProcRef>,
}

/// The first line the monitor prints: ready, or why not.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartMessage {
    Ready(MonitorPids),
    Error(String),
}

/// A request on the control socket.
// One request lives at a time, decoded from one JSON line: boxing the large
// CreateContainer would save nothing worth the indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Is the monitor serving; is the pod init alive?
    Ping,
    /// Kill the pod's processes, reap them and exit.
    Shutdown,
    /// Create a container from the OCI spec at `spec` (its `root.path` is the mounted
    /// rootfs); it waits for [`Request::StartContainer`].
    CreateContainer {
        id: String,
        spec: PathBuf,
        log_path: PathBuf,
        /// Where the exit is recorded (JSON [`ExitRecord`]) when the process ends.
        exit_file: PathBuf,
        cgroup_dirs: Vec<PathBuf>,
        /// The rootfs overlay, mounted inside the container's own mount namespace (so
        /// it never appears on the host and vanishes with the container).
        #[serde(default)]
        overlay: Option<OverlayMount>,
        /// CRI `stdin`: keep a pipe (or, with `tty`, the terminal) open for attach.
        #[serde(default)]
        stdin: bool,
        /// CRI `stdin_once`: the first attach session's end closes stdin.
        #[serde(default)]
        stdin_once: bool,
        /// CRI `tty`: the container's stdio is a terminal.
        #[serde(default)]
        tty: bool,
        /// Run the container with this OCI runtime (an `oci` handler's) instead of
        /// the built-in launcher; `spec`'s directory is the bundle.
        #[serde(default)]
        oci: Option<Box<OciRuntime>>,
        /// Longest log line before it is split into `P` records.
        #[serde(default = "default_max_log_line")]
        max_log_line: usize,
        /// Restore the container from a checkpoint (`<runtime> restore --detach`)
        /// instead of creating it: it comes back running, so the reply carries its
        /// start time and no StartContainer follows. Only with `oci`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restore: Option<RestoreImages>,
    },
    StartContainer {
        id: String,
    },
    /// What the monitor knows of a container's process: created and waiting, started
    /// (and when), exited, or a start that failed. crustd asks after a restart, since
    /// a StartContainer it was killed in the middle of may have run here
    /// ([`Reply::process`]).
    ContainerStatus {
        id: String,
    },
    /// Send `signal` to the container's process.
    Signal {
        id: String,
        signal: i32,
    },
    /// Reopen the container's log file (kubelet rotated it).
    ReopenLog {
        id: String,
    },
    /// Forget a container: kill it if it still runs, close its pipes and log file.
    RemoveContainer {
        id: String,
    },
    /// Attach to a running container's stdio. After an ok reply line the connection
    /// carries [`attach`] frames both ways until the container exits or crustd closes
    /// it; a refusal closes it after the reply.
    Attach {
        id: String,
        #[serde(default)]
        stdin: bool,
        #[serde(default)]
        stdout: bool,
        #[serde(default)]
        stderr: bool,
    },
}

impl Request {
    /// What the request acts on, for error messages: the pod for `Ping` and
    /// `Shutdown`, a container for the rest.
    pub fn object_kind(&self) -> &'static str {
        match self {
            Request::Ping | Request::Shutdown => "pod sandbox",
            _ => "container",
        }
    }
}

/// An OCI runtime binary (runc) and its state directory (`--root`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciRuntime {
    pub binary: PathBuf,
    pub root: PathBuf,
}

/// Where a restore finds CRIU's images and keeps its work files (`restore.log`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreImages {
    pub images: PathBuf,
    pub work: PathBuf,
}

/// An overlay rootfs: read-only image layers under a per-container writable upper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayMount {
    /// Directory holding the layer directories; the mount is made from there with
    /// relative `lowerdir` names, which keeps the option string short enough for many
    /// layers (the kernel limits mount data to one page).
    pub layers_root: PathBuf,
    /// Layer directory names relative to `layers_root`, top-most first.
    pub lower: Vec<String>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// The pod's user namespace (its pin), when it has one: the lower layers are then
    /// mounted through idmapped binds of that namespace (see [`Self::mount_at`]).
    #[serde(default)]
    pub idmap: Option<PathBuf>,
}

impl OverlayMount {
    /// Mounts the overlay at `rootfs` (in the caller's mount namespace), `nodev`: a
    /// device node in an image layer, or one made in the writable layer, cannot be
    /// opened. The container's devices live in its `/dev` tmpfs, a mount of its own;
    /// where the device cgroup cannot be enforced (cgroup v2 without its eBPF filter)
    /// this is what keeps a hostile image's `b 8:0` node from reaching the host disk.
    /// Changes the working directory (the layer names are relative) and leaves it at
    /// `/`.
    pub(crate) fn mount_at(&self, rootfs: &std::path::Path) -> Result<(), String> {
        use nix::mount::{MsFlags, mount};
        if self.lower.is_empty() {
            return Err("image has no layers".into());
        }
        // The image's layers are shared and owned by host ids; a pod with a user
        // namespace sees them through idmapped binds (mount_setattr MOUNT_ATTR_IDMAP
        // with the pod's namespace), so host root's files are its root's. overlayfs
        // itself cannot be idmapped (EINVAL on this kernel too), so, as containerd 2.x
        // does for the overlay snapshotter, the lower layers are; `upper` is owned by
        // the mapped root (CreateContainer chowns it), so what the container writes
        // lands on disk as host_id+N. The binds are attached below `idmap/` next to
        // `upper` only until the overlay is mounted (overlayfs keeps private clones
        // of its layers' mounts), then detached again.
        let idmapped = match &self.idmap {
            Some(userns) => Some(launch::idmapped_layers(
                userns,
                &self.layers_root,
                &self.lower,
                &self.upper.with_file_name("idmap"),
            )?),
            None => None,
        };
        let (dir, lower) = match &idmapped {
            Some(layers) => (layers.dir.clone(), layers.names.join(":")),
            None => (self.layers_root.clone(), self.lower.join(":")),
        };
        // Relative lowerdir names, resolved against our cwd: short option strings.
        nix::unistd::chdir(dir.as_path()).map_err(|e| format!("chdir {}: {e}", dir.display()))?;
        let data = format!(
            "lowerdir={lower},upperdir={},workdir={}",
            self.upper.display(),
            self.work.display()
        );
        let result = mount(
            Some("overlay"),
            rootfs,
            Some("overlay"),
            MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .map_err(|e| format!("mount overlay rootfs at {}: {e}", rootfs.display()));
        let _ = nix::unistd::chdir("/");
        if let Some(layers) = idmapped {
            layers.detach();
        }
        result
    }
}

/// How a container process ended, written by the monitor before anything else learns
/// of it, so exits survive crustd being down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit status, or 128 + signal number when killed by a signal (shell convention).
    pub exit_code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// Unix nanoseconds.
    pub finished_at: i64,
    /// The cgroup's OOM-kill count at the exit, read before the monitor kills what is
    /// left in it: under the systemd driver the emptied scope's cgroup is gone by the
    /// time crustd looks. Absent in records of older monitors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<u64>,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the pod init still runs (None when the pod has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_alive: Option<bool>,
    /// The container process, for container requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<crate::proc::ProcRef>,
    /// When the container was released into its exec (unix nanoseconds), for
    /// StartContainer: taken by the monitor, so it is never after the exit time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// For [`Request::ContainerStatus`]: where the container's process is; its start
    /// time is in `started_at`, its exit in the exit file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessState>,
}

/// A container process as its monitor sees it ([`Request::ContainerStatus`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    /// Created, waiting for StartContainer.
    Created,
    /// Released into its exec; still running.
    Running,
    /// Started, and has exited: the exit file is written.
    Exited,
    /// StartContainer was tried and failed: the process never ran the command.
    StartFailed,
}

/// containerd's default `max_container_log_line_size`; what a request from a crustd
/// that did not say gets.
pub const DEFAULT_MAX_LOG_LINE: usize = 16 * 1024;

fn default_max_log_line() -> usize {
    DEFAULT_MAX_LOG_LINE
}
