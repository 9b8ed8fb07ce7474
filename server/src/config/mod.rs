//! crustd configuration: a TOML file, its drop-ins, and command-line overrides.
//!
//! Precedence, lowest first: built-in defaults, the main file (`--config`, default
//! `/etc/crust/crust.toml`), drop-ins `<config>.d/*.toml` in lexical order, then flags.
//! Tables merge key by key; arrays and scalars are replaced whole. Unknown keys and bad
//! values are errors naming the key and the file that set it.

mod duration;
mod load;
mod validate;

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

pub use crust_runtime::cgroup::CgroupDriver;
pub use load::{ConfigError, Loaded, Overrides, load};
use serde::{Deserialize, Serialize};

/// The commented default configuration `crustd config default` prints. A test checks
/// that it parses to exactly [`Config::default`].
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Default location of the main configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/crust/crust.toml";

/// `[image] max_layer_unpacked_bytes` unless set: 32 GiB, far above any real layer
/// (the largest common ones, CUDA and ML runtimes, unpack to a few GiB) and still
/// below what fills a node's image disk by surprise.
pub const DEFAULT_MAX_LAYER_UNPACKED_BYTES: u64 = 32 << 30;

/// The whole daemon configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Persistent state: images, layers, writable layers, records.
    pub root: PathBuf,
    /// Volatile state: socket, monitor sockets, namespace pins, exit files.
    pub state: PathBuf,
    /// The CRI socket; empty means `<state>/crust.sock`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// Owning group of the socket (numeric gid); the socket is mode 0660.
    pub socket_gid: u32,
    /// A `tracing` filter: `info`, `debug`, `crust_server=debug,info`...
    pub log_level: String,
    pub log_format: LogFormat,
    /// How long SIGTERM waits for in-flight RPCs before exiting anyway.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    pub image: ImageConfig,
    pub network: NetworkConfig,
    pub cgroup: CgroupConfig,
    pub streaming: StreamingConfig,
    pub runtime: RuntimeSection,
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageConfig {
    /// A containers-registries.conf v2 file with mirrors and rewrites; none if unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registries_conf: Option<PathBuf>,
    /// A pull that receives nothing for this long fails with DEADLINE_EXCEEDED.
    #[serde(with = "duration")]
    pub pull_progress_timeout: Duration,
    /// Layer downloads running at once, across all pulls.
    pub max_concurrent_downloads: usize,
    /// A layer that unpacks to more bytes than this is refused and its partial
    /// unpack removed: a gzip bomb under its declared compressed size cannot fill
    /// the disk.
    pub max_layer_unpacked_bytes: u64,
    /// Image names (exact, as kubelet sees them) reported as pinned.
    pub pinned_images: Vec<String>,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            registries_conf: None,
            pull_progress_timeout: Duration::from_secs(60),
            max_concurrent_downloads: 3,
            max_layer_unpacked_bytes: DEFAULT_MAX_LAYER_UNPACKED_BYTES,
            pinned_images: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Where CNI network configurations are read from.
    pub cni_conf_dir: PathBuf,
    /// Where CNI plugin binaries are searched, in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Bound on each CNI plugin invocation.
    #[serde(with = "duration")]
    pub plugin_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CgroupConfig {
    /// Must match kubelet's `--cgroup-driver`.
    pub driver: CgroupDriver,
    /// Where cgroup filesystems are mounted.
    pub root: PathBuf,
    /// Cgroup (cgroupfs path) of the pod monitors, outside every pod's limits.
    pub monitor_cgroup: String,
    /// Parent of the pod cgroup for pods whose config names no `cgroup_parent`.
    pub pod_parent: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// Listen address of the exec/attach/port-forward server; port 0 picks a free one.
    pub address: SocketAddr,
    /// How long the URL Exec/Attach/PortForward return stays valid (used once).
    #[serde(with = "duration")]
    pub token_timeout: Duration,
    /// A stream with no traffic either way for this long is closed (kubelet's
    /// `--streaming-connection-idle-timeout`).
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSection {
    /// Handler used when a pod names none (an empty `runtime_handler`).
    pub default_handler: String,
    /// Runtime handlers by name (RuntimeClass `handler`).
    pub handlers: BTreeMap<String, Handler>,
    /// The `crust-monitor` binary; unset means next to the `crustd` executable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor_path: Option<PathBuf>,
    /// Size of each pod's `/dev/shm` tmpfs, in bytes.
    pub shm_size: u64,
    /// Longest container log line, in bytes (64 to 1 MiB), before it is split into
    /// partial (`P`) records (containerd's `max_container_log_line_size`).
    pub max_log_line_size: usize,
    /// The most ExecSync output kept per stream, in bytes; the rest is read and
    /// dropped, and stderr says so. At most 8 MiB − 64 KiB, so that both streams fit in
    /// kubelet's 16 MiB gRPC message.
    pub exec_sync_output_limit: usize,
    /// Process limit (`pids.max`) of every container, as CRI-O's `pids_limit`: CRI has
    /// none per container. 0: crust sets none; -1: unlimited.
    pub pids_limit: i64,
    /// Where CDI specs are read for `ContainerConfig.CDI_devices`, in order: a device
    /// in a later directory overrides one of the same name in an earlier one.
    pub cdi_spec_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handler {
    #[serde(rename = "type")]
    pub kind: HandlerKind,
    /// The OCI runtime binary (`runc`, `crun`); only for `type = "oci"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandlerKind {
    /// crust's own launcher inside the pod monitor.
    Builtin,
    /// An OCI runtime binary driven through create/start/kill/delete.
    Oci,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where Prometheus metrics are served (`GET /metrics`); off when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: "/var/lib/crust".into(),
            state: "/run/crust".into(),
            socket: None,
            socket_gid: 0,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            shutdown_timeout: Duration::from_secs(10),
            image: ImageConfig::default(),
            network: NetworkConfig::default(),
            cgroup: CgroupConfig::default(),
            streaming: StreamingConfig::default(),
            runtime: RuntimeSection::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            plugin_timeout: Duration::from_secs(60),
        }
    }
}

impl Default for CgroupConfig {
    fn default() -> Self {
        CgroupConfig {
            driver: CgroupDriver::Cgroupfs,
            root: "/sys/fs/cgroup".into(),
            monitor_cgroup: "/crust/monitors".into(),
            pod_parent: "/crust/pods".into(),
        }
    }
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            token_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(4 * 3600),
        }
    }
}

impl Default for RuntimeSection {
    fn default() -> Self {
        RuntimeSection {
            default_handler: "crust".into(),
            handlers: BTreeMap::from([(
                "crust".into(),
                Handler {
                    kind: HandlerKind::Builtin,
                    path: None,
                },
            )]),
            monitor_path: None,
            shm_size: 64 << 20,
            max_log_line_size: crust_runtime::monitor::DEFAULT_MAX_LOG_LINE,
            exec_sync_output_limit: crust_runtime::container::EXEC_OUTPUT_LIMIT,
            pids_limit: 0,
            cdi_spec_dirs: vec!["/etc/cdi".into(), "/var/run/cdi".into()],
        }
    }
}

impl Config {
    /// The CRI socket path: `socket` if set, else `<state>/crust.sock`.
    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| self.state.join("crust.sock"))
    }
}
