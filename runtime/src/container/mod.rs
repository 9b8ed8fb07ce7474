//! Containers: the domain form of a CRI `ContainerConfig` and the generation of the one
//! `oci_spec::runtime::Spec` that both launchers (the built-in one in the monitor and an
//! OCI runtime such as runc) run.
//!
//! Everything here is plain data: the server converts CRI messages into these types, the
//! caller reads files it needs (the image's `/etc/passwd` and `/etc/group`, a Localhost
//! seccomp profile) and [`generate_spec`] turns them into a spec without touching the
//! host, except through the narrow [`DeviceLookup`] trait for device nodes.

mod cdi;
mod container_attach;
mod container_checkpoint;
mod container_create;
mod container_create_host;
pub(crate) mod container_dirs;
mod container_exec;
mod container_exec_session;
mod container_exits;
mod container_list;
mod container_metrics;
mod container_remove;
mod container_restore;
mod container_start;
mod container_stats;
mod container_stop;
mod container_update;
mod exec_cgroups;
mod image_mounts;
mod record;
mod seccomp_default;
mod spec;
pub(crate) mod spec_devices;
mod spec_files;
mod spec_hooks;
mod spec_mounts;
pub(crate) mod spec_resources;
mod spec_security;
#[cfg(test)]
mod spec_tests;
mod spec_user;
mod stdio;
mod userns_rootfs;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

pub use cdi::{CdiError, apply_cdi_devices};
pub use container_attach::attach_to_monitor;
pub use container_exec::{EXEC_OUTPUT_LIMIT, ExecResult};
pub(crate) use container_exits::ExitWatcher;
pub use container_list::{ContainerFilter, ImageUsers};
pub use container_metrics::{
    ContainerMetricsView, FsCapacity, PodMetricsView, ProcessCounts, process_counts,
};
pub use container_restore::{
    ArchiveError, CHECKPOINTED_AT_ANNOTATION, CheckpointArchive, RESTORED_FROM_ANNOTATION,
    read_checkpoint_archive,
};
pub use container_stats::{ContainerStatsView, UsageSample};
pub use record::{Container, ContainerState, ContainerUser, ImageForContainer};
pub use seccomp_default::default_seccomp_profile;
pub use spec::{OOM_CLAMPED_ANNOTATION, generate_spec, stop_signal};
pub use spec_devices::{DeviceLookup, HostDevice, HostDeviceKind, HostDevices};
pub use spec_files::MAX_SPEC_FILE;
pub use spec_hooks::oci_hooks;
pub use spec_mounts::image_volumes;
pub use stdio::{OUTPUT_QUEUE, StdioEnd, StdioOutput, StdioRequest, StdioSession, TerminalSize};

pub use crate::sandbox::NsMode;

/// CRI `ContainerMetadata`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerMetadata {
    pub name: String,
    pub attempt: u32,
}

/// CRI `MountPropagation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Propagation {
    /// `PROPAGATION_PRIVATE`: no propagation either way (rprivate).
    #[default]
    Private,
    /// `PROPAGATION_HOST_TO_CONTAINER`: host mounts appear in the container (rslave).
    HostToContainer,
    /// `PROPAGATION_BIDIRECTIONAL`: both ways (rshared).
    Bidirectional,
}

/// CRI `Mount`: a bind mount of a host path, or of an image (`image`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MountSpec {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    pub propagation: Propagation,
    /// Read-only all the way down (`rro`); CRI requires `readonly` and private propagation.
    pub recursive_read_only: bool,
    /// An image volume (CRI `Mount.image`, KEP-4639): the image's layers mounted
    /// read-only on the host at create, and `host_path` then names that mount (or its
    /// `sub_path`). Absent in records written before image volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageMount>,
    /// CRI `uidMappings`/`gidMappings`: an idmapped mount (KEP-127 volumes), which
    /// CreateContainer requires to be the pod's user namespace mappings (what kubelet
    /// sends). Absent in records written before idmapped mounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idmap: Option<crate::sandbox::UserNamespace>,
}

/// The image an image volume mounts, resolved by the server from `Mount.image`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageMount {
    /// Image id (config digest): the image stays while a container mounts it.
    pub id: String,
    /// `Mount.image.image` as kubelet sent it (reported back in ContainerStatus).
    pub reference: String,
    pub layers_root: PathBuf,
    /// Layer directory names under `layers_root`, top-most first.
    pub lower: Vec<String>,
    /// `Mount.image_sub_path`: a relative path inside the image; empty = its root.
    pub sub_path: String,
}

/// CRI `Device`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceSpec {
    pub container_path: String,
    pub host_path: String,
    /// Cgroup permissions, a combination of `r`, `w`, `m`; empty means `rwm`.
    pub permissions: String,
}

/// CRI `HugepageLimit`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HugepageLimit {
    /// As in the cgroup file names: `2MB`, `1GB`.
    pub page_size: String,
    pub limit: u64,
}

/// CRI `LinuxContainerResources`. Zero means "not set", as in CRI.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResourcesSpec {
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory_limit_in_bytes: i64,
    pub memory_swap_limit_in_bytes: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    /// Not in CRI's container resources today; set from crust's config when wanted.
    pub pids_limit: Option<i64>,
    pub hugepage_limits: Vec<HugepageLimit>,
    /// cgroup v2 files written as they are (`memory.high`, ...).
    pub unified: BTreeMap<String, String>,
    pub oom_score_adj: i64,
}

/// CRI `Capability`. Names without the `CAP_` prefix (a prefix is tolerated), or `ALL`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CapabilitiesSpec {
    pub add: Vec<String>,
    pub drop: Vec<String>,
    pub add_ambient: Vec<String>,
}

/// CRI `SupplementalGroupsPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupplementalGroupsPolicy {
    /// The image's groups of the user, plus `supplemental_groups`.
    #[default]
    Merge,
    /// Only the primary group and `supplemental_groups`.
    Strict,
}

/// CRI `SecurityProfile` (seccomp and AppArmor).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProfile {
    /// What kubelet sends when the pod names no profile.
    #[default]
    Unconfined,
    RuntimeDefault,
    /// Seccomp: the profile file's path on the host (the caller passes its contents in
    /// [`SpecInput::seccomp_localhost`]). AppArmor: the profile name.
    Localhost(String),
}

/// CRI `SELinuxOption`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SelinuxOptions {
    pub user: String,
    pub role: String,
    pub r#type: String,
    pub level: String,
}

impl SelinuxOptions {
    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
            && self.role.is_empty()
            && self.r#type.is_empty()
            && self.level.is_empty()
    }
}

/// CRI `LinuxContainerSecurityContext`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SecurityContextSpec {
    /// `None`: CRI sent no `capabilities` (the default set applies unchanged).
    pub capabilities: Option<CapabilitiesSpec>,
    pub privileged: bool,
    /// Only `pid` is the container's choice; net and IPC follow the pod.
    pub pid_mode: NsMode,
    /// `namespace_options.target_id` when `pid_mode` is `Target`.
    pub target_id: String,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_username: String,
    pub readonly_rootfs: bool,
    pub supplemental_groups: Vec<i64>,
    pub supplemental_groups_policy: SupplementalGroupsPolicy,
    pub no_new_privs: bool,
    /// Empty: the runtime defaults (Kubernetes' and containerd's lists).
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub seccomp: SecurityProfile,
    pub apparmor: SecurityProfile,
    pub selinux: Option<SelinuxOptions>,
    /// `namespace_options.userns_options` as the container sent it (mode `POD`);
    /// CRI requires it to be the pod's, which CreateContainer checks.
    #[serde(default)]
    pub userns: Option<crate::sandbox::UserNamespace>,
}

/// What the container is asked to be: the domain form of CRI `ContainerConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub metadata: ContainerMetadata,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: String,
    pub envs: Vec<(String, String)>,
    pub mounts: Vec<MountSpec>,
    pub devices: Vec<DeviceSpec>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub log_path: String,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub resources: ResourcesSpec,
    pub security: SecurityContextSpec,
    /// `SIGTERM` style name; `None` for CRI `RUNTIME_DEFAULT`.
    pub stop_signal: Option<String>,
    /// OCI hooks CDI devices asked for (CRI itself has no hooks). Defaulted so
    /// records written before hooks existed still load.
    #[serde(default)]
    pub hooks: Vec<HookSpec>,
    /// Created from a checkpoint archive (CRI `image.image` naming one): StartContainer
    /// restores the checkpointed processes instead of starting the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,
}

/// The checkpoint a container is restored from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RestoreSpec {
    /// The archive on the node (CRI `image.image`), unpacked at create.
    pub archive: PathBuf,
    /// When it was checkpointed, as `config.dump` says (RFC 3339).
    pub checkpointed_at: String,
}

/// Where in the OCI lifecycle a hook runs (runtime-spec config.md#posix-platform-hooks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HookStage {
    /// Deprecated by the runtime spec; run with `createRuntime`, before it.
    Prestart,
    /// In the runtime's namespaces, once the container's exist, before pivot_root.
    CreateRuntime,
    /// In the container's namespaces, after its mounts, before pivot_root.
    CreateContainer,
    /// In the container, right before the user process is executed.
    StartContainer,
    /// In the runtime's namespaces once the user process started.
    Poststart,
    /// In the runtime's namespaces once the container is deleted.
    Poststop,
}

/// One OCI hook: a program run with the container's state JSON on stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookSpec {
    pub stage: HookStage,
    /// Absolute path, resolved in the runtime's mount namespace.
    pub path: String,
    /// argv, including argv[0] (as in the OCI spec).
    pub args: Vec<String>,
    /// `KEY=value` entries: the hook's whole environment.
    pub env: Vec<String>,
    /// Seconds; the hook is killed and fails after it.
    pub timeout: Option<i64>,
}

/// The parts of an OCI image config that shape a container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageConfigView {
    /// `None` when the image has no Entrypoint; `Some([""])` clears it, as in Docker.
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    pub working_dir: String,
    /// `uid`, `name`, `uid:gid`, `name:group`, or empty.
    pub user: String,
    /// Container paths of the image's `VOLUME`s.
    pub volumes: Vec<String>,
    pub stop_signal: String,
}

/// What the container takes from its pod.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodContext {
    pub sandbox_id: String,
    /// Pinned namespaces to join; `None` means the host's (NODE mode).
    pub net_ns: Option<PathBuf>,
    pub ipc_ns: Option<PathBuf>,
    pub uts_ns: Option<PathBuf>,
    /// Present only when the pod shares a PID namespace (`pid: POD`).
    pub pid_ns: Option<PathBuf>,
    /// The pod's hostname, exported as `HOSTNAME`; the caller fills in the node's name
    /// when the pod config has none.
    pub hostname: String,
    pub hosts_file: Option<PathBuf>,
    pub hostname_file: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    /// The pod's `/dev/shm`; `None` gives the container a private tmpfs.
    pub shm_dir: Option<PathBuf>,
    pub sysctls: Vec<(String, String)>,
    /// cgroupfs path of the container's own cgroup.
    pub cgroup_path: String,
    pub host_network: bool,
    /// Whether the pod's security context allows privileged containers.
    pub privileged: bool,
    /// The pod's pinned user namespace and its mappings (CRI `userns_options` mode
    /// POD); `None`: the host's.
    #[serde(default)]
    pub userns: Option<(PathBuf, crate::sandbox::UserNamespace)>,
}

/// One POSIX rlimit (`RLIMIT_NOFILE` style type name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub r#type: String,
    pub soft: u64,
    pub hard: u64,
}

/// Facts about the host and crust's settings that change the spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostContext {
    pub host_has_apparmor: bool,
    pub host_has_selinux: bool,
    /// crustd's own `oom_score_adj`: a process without CAP_SYS_RESOURCE cannot go lower.
    pub min_oom_score_adj: i32,
    /// Unified hierarchy: containers get a cgroup namespace.
    pub cgroup_v2: bool,
    /// The cgroup enforces device rules (v1 devices controller, or the v2 eBPF
    /// filter): only then may containers keep CAP_MKNOD by default.
    #[serde(default)]
    pub device_filter: bool,
    /// Whether memory+swap limits can be set (swap accounting present).
    pub swap_available: bool,
    pub hugetlb_available: bool,
    /// Rlimits for every container (default none: the monitor's own are inherited).
    pub rlimits: Vec<Rlimit>,
    /// crustd's effective capabilities (`CapEff`), what "all capabilities" means for
    /// privileged containers; `None`: every capability the kernel knows.
    #[serde(default)]
    pub capabilities_mask: Option<u64>,
}

impl Default for HostContext {
    fn default() -> Self {
        HostContext {
            host_has_apparmor: false,
            host_has_selinux: false,
            min_oom_score_adj: -1000,
            cgroup_v2: true,
            device_filter: true,
            swap_available: true,
            hugetlb_available: true,
            rlimits: Vec::new(),
            capabilities_mask: None,
        }
    }
}

impl HostContext {
    /// Probes the host once (containerd and kubelet probe the same things): cgroup
    /// version, swap accounting and hugetlb from the cgroup manager (`None`, a driver
    /// crust does not write itself: all false), AppArmor when
    /// `<sys>/module/apparmor/parameters/enabled` is `Y` (libapparmor's
    /// `aa_is_enabled`), SELinux when `<sys>/fs/selinux/enforce` exists (selinuxfs is
    /// mounted), and crustd's effective capabilities from `<proc>/self/status`.
    pub fn detect(
        cgroups: Option<&crate::cgroup::Cgroupfs>,
        sys_root: &Path,
        proc_root: &Path,
        min_oom_score_adj: i32,
    ) -> HostContext {
        let features = cgroups.map(|c| c.features());
        // containerd's `cap.Current()` reads the same line.
        let capabilities_mask = std::fs::read_to_string(proc_root.join("self/status"))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("CapEff:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            });
        HostContext {
            host_has_apparmor: std::fs::read_to_string(
                sys_root.join("module/apparmor/parameters/enabled"),
            )
            .is_ok_and(|v| v.trim() == "Y"),
            host_has_selinux: sys_root.join("fs/selinux/enforce").exists(),
            min_oom_score_adj,
            cgroup_v2: features.is_some_and(|f| f.v2),
            device_filter: cgroups.is_some_and(|c| c.enforces_devices()),
            swap_available: features.is_some_and(|f| f.swap),
            hugetlb_available: features.is_some_and(|f| f.hugetlb),
            rlimits: Vec::new(),
            capabilities_mask,
        }
    }
}

/// Everything [`generate_spec`] needs. Files are read by the caller.
#[derive(Debug, Clone, Default)]
pub struct SpecInput {
    pub container: ContainerSpec,
    pub image: ImageConfigView,
    pub pod: PodContext,
    pub host: HostContext,
    /// The container's root filesystem (the overlay mount point).
    pub rootfs: PathBuf,
    /// Contents of the image's `/etc/passwd` and `/etc/group`; `None` when absent.
    pub etc_passwd: Option<String>,
    pub etc_group: Option<String>,
    /// The target container's PID namespace for `pid: TARGET`, resolved by the caller.
    pub target_pid_ns: Option<PathBuf>,
    /// Contents of the Localhost seccomp profile file, when one is asked for.
    pub seccomp_localhost: Option<String>,
    /// Host directory under which each image `VOLUME` gets an empty directory (see
    /// [`image_volumes`]).
    pub volumes_root: PathBuf,
}

/// Why a spec could not be generated. `field` names the CRI field at fault, as a path
/// from the request (`config.linux.security_context.run_as_group`).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid {field}: {reason}")]
    InvalidField { field: String, reason: String },
    #[error("{field}: {kind} {name:?} not found in the image's {file}")]
    NotFound {
        field: String,
        kind: &'static str,
        name: String,
        file: &'static str,
    },
    #[error("{field}: {what} is not supported on this host: {reason}")]
    Unsupported {
        field: String,
        what: String,
        reason: String,
    },
    #[error("{field}: device {path}: {source}")]
    Device {
        field: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SpecError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
        SpecError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// CRI field paths used in errors.
pub(crate) mod field {
    pub const SC: &str = "config.linux.security_context";
    pub const RESOURCES: &str = "config.linux.resources";
}
