//! Pod sandboxes: a per-pod monitor holding pinned namespaces, pod files and a pod
//! cgroup, persisted as one record per pod.

mod cgroup_units;
mod files;
mod netns;
mod recover;
mod sandbox_list;
mod sandbox_remove;
mod sandbox_run;
mod sandbox_status;
mod sandbox_stop;
mod sandbox_update;
pub mod sysctl;
mod teardown;

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use crust_state::{Record, Store};
use serde::{Deserialize, Serialize};

pub use sandbox_list::SandboxFilter;
pub use sandbox_status::SandboxView;
pub use sandbox_update::PodResources;

use crate::{
    cgroup::{CgroupDriver, Cgroupfs},
    error::RuntimeError,
    monitor::MonitorPids,
};

/// How a pod uses one kind of namespace (CRI `NamespaceMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NsMode {
    #[default]
    Pod,
    Container,
    Node,
    Target,
}

/// The pod's namespace modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Namespaces {
    pub network: NsMode,
    pub pid: NsMode,
    pub ipc: NsMode,
}

/// One CRI `IDMapping`: `length` ids from `container_id` inside the user namespace
/// are `host_id`.. on the host (the kernel's `uid_map` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IdMapping {
    pub host_id: u32,
    pub container_id: u32,
    pub length: u32,
}

impl IdMapping {
    /// The host id of `id` inside the namespace, if it is mapped.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        let offset = id.checked_sub(self.container_id)?;
        (offset < self.length).then(|| self.host_id + offset)
    }
}

/// A pod user namespace (CRI `UserNamespace` with mode `POD`): the server has checked
/// there is exactly one uid and one gid mapping, each from container id 0.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UserNamespace {
    pub uids: Vec<IdMapping>,
    pub gids: Vec<IdMapping>,
}

impl UserNamespace {
    /// `uid_map`/`gid_map` text: one `container host length` line per mapping.
    pub fn map_text(maps: &[IdMapping]) -> String {
        maps.iter()
            .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.length))
            .collect()
    }
    /// The host uid and gid the container's root is.
    pub fn host_root(&self) -> Option<(u32, u32)> {
        let uid = self.uids.iter().find_map(|m| m.to_host(0))?;
        let gid = self.gids.iter().find_map(|m| m.to_host(0))?;
        Some((uid, gid))
    }
}

/// `DNSConfig`: what goes into the pod's resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// CRI `PodSandboxMetadata`; (name, namespace, uid, attempt) names a pod uniquely.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SandboxMetadata {
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
}

impl SandboxMetadata {
    /// The reservation key: two live pods may not share it (CRI: ALREADY_EXISTS).
    pub fn key(&self) -> String {
        format!(
            "{}_{}_{}_{}",
            self.name, self.namespace, self.uid, self.attempt
        )
    }
}

/// A port the pod exposes on the host (CRI `PortMapping`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PortMapping {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub container_port: i32,
    pub host_port: i32,
    pub host_ip: String,
}

/// A boxed future, for the [`PodNetwork`] trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the pod network provider is told about a pod.
#[derive(Debug, Clone)]
pub struct NetworkRequest {
    pub pod_id: String,
    pub metadata: SandboxMetadata,
    /// The pod's pinned network namespace.
    pub netns: PathBuf,
    pub port_mappings: Vec<PortMapping>,
    pub annotations: BTreeMap<String, String>,
    pub dns: Option<DnsConfig>,
}

/// The pod's network as set up.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// Network (CNI config) name.
    pub network: String,
    /// Pod addresses, IPv4 first.
    pub ips: Vec<String>,
}

/// The narrow seam to pod networking (CNI), implemented by crustd: the runtime crate
/// does not depend on the network crate, it only sequences network setup inside the
/// pod's state machine (after the namespace is pinned, before Ready; torn down before
/// the namespace is released).
pub trait PodNetwork: Send + Sync {
    /// Sets the pod's network up in `req.netns`. On failure nothing it made remains.
    fn setup<'a>(&'a self, req: &'a NetworkRequest)
    -> BoxFuture<'a, Result<NetworkStatus, String>>;
    /// Tears the pod's network down. Idempotent; a namespace that is already gone is fine.
    fn teardown<'a>(
        &'a self,
        pod_id: &'a str,
        netns: &'a Path,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Checks the pod's network is still as set up (CNI CHECK). Read-only.
    fn check<'a>(&'a self, pod_id: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

/// What the pod is asked to be: the domain form of `PodSandboxConfig`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub metadata: SandboxMetadata,
    pub hostname: String,
    pub log_directory: String,
    pub dns: Option<DnsConfig>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// cgroupfs path of the pod cgroup (kubelet's `cgroup_parent`); empty: crust picks.
    pub cgroup_parent: String,
    pub namespaces: Namespaces,
    pub sysctls: Vec<(String, String)>,
    /// The resolved runtime handler name (never empty).
    pub runtime_handler: String,
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// CRI `LinuxSandboxSecurityContext.privileged`: whether the pod may run privileged
    /// containers. Absent in records written before it was kept: not privileged.
    #[serde(default)]
    pub privileged: bool,
    /// CRI `userns_options` with mode `POD`: the pod gets a user namespace of its own
    /// with these mappings. `None`: the host's (mode `NODE`, or records from before).
    #[serde(default)]
    pub userns: Option<UserNamespace>,
}

/// Sandbox states.
///
/// ```text
///   (new) --run--> Creating --all made--> Ready --stop--> NotReady --remove--> (gone)
///                     |                     |                 ^
///                     +--failure/crash--> (rolled back)       +-- stop (again) / remove
/// ```
/// `Ready` is what was recorded; what is *reported* is Ready only while the monitor
/// (and the pod init, if any) is alive. Stop and Remove persist NotReady (and drop the
/// pod's network from the record) before their first teardown step, so a crash in
/// the middle of one never leaves a pod recorded Ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Creating,
    Ready,
    NotReady,
}

/// A pod's persisted record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: String,
    pub spec: SandboxSpec,
    pub state: SandboxState,
    /// Unix nanoseconds.
    pub created_at: i64,
    /// The pod cgroup and whether crust created it (and so must remove it).
    pub cgroup: String,
    pub cgroup_created: bool,
    /// Cgroup of the pod init, under the pod cgroup (like containerd's sandbox cgroup).
    pub init_cgroup: Option<String>,
    pub monitor: Option<MonitorPids>,
    /// `<state>/pods/<id>`: monitor socket, pod files, shm mount.
    pub pod_dir: PathBuf,
    /// `<state>/ns/<id>`: namespace pins.
    pub pins_dir: PathBuf,
    /// `<state>/sock/<id prefix>.sock`: the monitor's control socket. Kept short
    /// because unix socket paths are limited to 107 bytes.
    pub socket: PathBuf,
    /// The pod network once set up (none for host-network pods).
    #[serde(default)]
    pub network: Option<NetworkStatus>,
    /// Pod-level resources from UpdatePodSandboxResources, if any.
    #[serde(default)]
    pub resources: Option<PodResources>,
}

impl Record for Sandbox {
    const KIND: &'static str = "sandbox";
    const VERSION: u32 = 1;
    fn id(&self) -> &str {
        &self.id
    }
}

impl Sandbox {
    pub fn monitor_socket(&self) -> PathBuf {
        self.socket.clone()
    }
    pub fn shm_dir(&self) -> PathBuf {
        self.pod_dir.join("shm")
    }
    /// The pinned namespace file for `ns` (`user`, `net`, `ipc`, `uts`, `pid`).
    pub fn pin(&self, ns: &str) -> PathBuf {
        self.pins_dir.join(ns)
    }
}

/// Settings of the sandbox manager; roots come from crustd's config.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// crustd's volatile state directory.
    pub state_dir: PathBuf,
    pub monitor_bin: PathBuf,
    pub cgroup_driver: CgroupDriver,
    pub cgroup_root: PathBuf,
    /// Cgroup of every monitor, outside all pod limits.
    pub monitor_cgroup: String,
    /// Parent of pod cgroups for pods that name none (crictl without cgroup_parent).
    pub pod_cgroup_parent: String,
    /// Size of each pod's /dev/shm in bytes.
    pub shm_size: u64,
    /// Persistent per-container directories (writable layers): `<root>/containers`.
    pub containers_dir: PathBuf,
    /// crustd's own `oom_score_adj`: without CAP_SYS_RESOURCE no container can go lower.
    pub min_oom_score_adj: i32,
    /// The host's resolv.conf and hosts, used for pods without DNS config / with the
    /// host network.
    pub host_resolv_conf: PathBuf,
    pub host_hosts: PathBuf,
    /// Runtime handlers of `type = "oci"`: handler name -> the OCI runtime binary
    /// (`runc`) that runs their pods' containers instead of the built-in launcher.
    pub oci_runtimes: BTreeMap<String, PathBuf>,
    /// Those of `oci_runtimes` whose runtime honours a mount's `uidMappings` (its
    /// `features` says `linux.mountExtensions.idmap.enabled`); the others would
    /// ignore them, so idmapped mounts are refused for them.
    pub oci_idmap: std::collections::BTreeSet<String>,
    /// Longest container log line before it is split into `P` records.
    pub max_log_line: usize,
    /// The most ExecSync output kept per stream (stdout, stderr); the rest is dropped
    /// and the truncation noted on stderr.
    pub exec_output_limit: usize,
}

/// Runs pods. Operations on one pod are serialized; different pods proceed in parallel.
pub struct SandboxManager {
    pub(crate) config: SandboxConfig,
    store: Store,
    cgroups: Option<Cgroupfs>,
    /// The systemd connection of the systemd driver, made at first use.
    systemd: tokio::sync::OnceCell<crate::cgroup::Systemd>,
    network: Option<Arc<dyn PodNetwork>>,
    /// Latest persisted record of every pod (what List and Status read).
    records: RwLock<HashMap<String, Sandbox>>,
    /// Per-pod operation locks.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Reserved metadata keys -> pod id.
    names: Mutex<HashMap<String, String>>,
    /// Latest persisted record of every container (shared with [`crate::container::ImageUsers`]).
    pub(crate) containers: Arc<RwLock<HashMap<String, crate::container::Container>>>,
    /// (pod, name, attempt) -> container id.
    pub(crate) container_names: Mutex<HashMap<String, String>>,
    /// Last CPU sample (unix ns, cumulative CPU ns) per container or pod, for rates.
    pub(crate) cpu_samples: Mutex<HashMap<String, (i64, u64)>>,
    /// Empty exec cgroups kept per container for its next ExecSync.
    pub(crate) exec_spares: Mutex<HashMap<String, Vec<String>>>,
    /// Host facts that shape container specs, probed once at start.
    pub(crate) host: crate::container::HostContext,
    /// Pids limit of every container (CRI has none per container; CRI-O's
    /// `pids_limit`). `None`: not limited by crust.
    pub(crate) container_pids_limit: Option<i64>,
    /// AppArmor profiles: loads `crust-default` on first use, checks Localhost ones.
    /// Used only where `host.host_has_apparmor`.
    pub(crate) apparmor: Arc<crate::apparmor::AppArmor>,
    /// Lifecycle events of containers and pods, sent by the commit functions below.
    pub(crate) events: crate::events::EventSink,
    /// Inotify watches on live containers' bundles, for their exit records.
    pub(crate) exits: crate::container::ExitWatcher,
}

/// Where sysfs is mounted, for the LSM probes (roots not in [`SandboxConfig`];
/// tests override the probe's result with [`SandboxManager::with_host_context`]).
const SYS_ROOT: &str = "/sys";
/// Where procfs is mounted, for crustd's own capabilities.
pub(crate) const PROC_ROOT: &str = "/proc";

/// How long crustd waits for a monitor to answer.
/// How long crustd waits for a monitor to create or start a container: longer than
/// the monitor's own 20 s bound on a container's setup, so the outcome is always heard.
pub(crate) const CONTAINER_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) const MONITOR_TIMEOUT: Duration = Duration::from_secs(5);

impl SandboxManager {
    /// Creates the manager. The cgroup hierarchy is opened here (both drivers write
    /// the files), so a host without usable cgroups fails at start rather than at the
    /// first pod; systemd is reached at the first pod.
    pub fn new(
        config: SandboxConfig,
        store: Store,
        network: Option<Arc<dyn PodNetwork>>,
    ) -> Result<SandboxManager, RuntimeError> {
        let cgroups =
            Some(
                Cgroupfs::open(&config.cgroup_root).map_err(|source| RuntimeError::Cgroup {
                    kind: "pod sandbox",
                    id: String::new(),
                    source,
                })?,
            );
        let host = crate::container::HostContext::detect(
            cgroups.as_ref(),
            Path::new(SYS_ROOT),
            Path::new(PROC_ROOT),
            config.min_oom_score_adj,
        );
        tracing::info!(
            cgroup_v2 = host.cgroup_v2,
            device_filter = host.device_filter,
            swap = host.swap_available,
            hugetlb = host.hugetlb_available,
            apparmor = host.host_has_apparmor,
            selinux = host.host_has_selinux,
            "host features"
        );
        Ok(SandboxManager {
            config,
            store,
            cgroups,
            systemd: tokio::sync::OnceCell::new(),
            network,
            records: RwLock::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            containers: Arc::new(RwLock::new(HashMap::new())),
            container_names: Mutex::new(HashMap::new()),
            cpu_samples: Mutex::new(HashMap::new()),
            exec_spares: Mutex::new(HashMap::new()),
            host,
            container_pids_limit: None,
            apparmor: Arc::new(crate::apparmor::AppArmor::new(Box::new(
                crate::apparmor::HostProfiles::under(Path::new(SYS_ROOT)),
            ))),
            events: Default::default(),
            exits: Default::default(),
        })
    }

    /// Replaces the probed host facts (tests of hosts unlike this one).
    pub fn with_host_context(mut self, host: crate::container::HostContext) -> SandboxManager {
        self.host = host;
        self
    }

    /// Limits the number of processes of every container (CRI-O's `pids_limit`;
    /// `-1` unlimited). A limit of 0 is treated as unset.
    pub fn with_container_pids_limit(mut self, limit: Option<i64>) -> SandboxManager {
        self.container_pids_limit = limit.filter(|l| *l != 0);
        self
    }

    pub(crate) fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .expect("locks poisoned")
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    fn pods_dir(&self) -> PathBuf {
        self.config.state_dir.join("pods")
    }

    fn pins_root(&self) -> PathBuf {
        self.config.state_dir.join("ns")
    }

    fn socket_for(&self, id: &str) -> PathBuf {
        // 80 random bits of the id: unique in practice, and short enough for sun_path.
        self.config
            .state_dir
            .join("sock")
            .join(format!("{}.sock", &id[..20]))
    }

    /// Persists `sandbox` and publishes it to readers: the one place a pod's state
    /// changes. Checks the move is allowed by the state machine above.
    fn commit(&self, sandbox: &Sandbox, from: Option<SandboxState>) -> Result<(), RuntimeError> {
        self.commit_with(sandbox, from, |store| store.put(sandbox).map(|()| None))
            .map(|_| ())
    }

    /// [`SandboxManager::commit`], with the record visible at once but durable only
    /// once the returned sync has run ([`crust_state::Store::put_visible`]): for moves
    /// whose loss in a power failure loses nothing else (see the callers).
    fn commit_visible(
        &self,
        sandbox: &Sandbox,
        from: Option<SandboxState>,
    ) -> Result<crust_state::PendingSync, RuntimeError> {
        self.commit_with(sandbox, from, |store| store.put_visible(sandbox).map(Some))
            .map(|pending| pending.expect("put_visible returns its sync"))
    }

    fn commit_with(
        &self,
        sandbox: &Sandbox,
        from: Option<SandboxState>,
        put: impl FnOnce(&Store) -> Result<Option<crust_state::PendingSync>, crust_state::StateError>,
    ) -> Result<Option<crust_state::PendingSync>, RuntimeError> {
        use SandboxState::*;
        let allowed = matches!(
            (from, sandbox.state),
            (None, Creating)
                | (Some(Creating), Creating | Ready)
                | (Some(Ready | NotReady), NotReady)
                | (Some(Ready), Ready)
        );
        if !allowed {
            return Err(RuntimeError::InvalidTransition {
                id: sandbox.id.clone(),
                state: from.unwrap_or(Creating),
                to: sandbox.state,
            });
        }
        let pending = put(&self.store)?;
        let mut records = self.records.write().expect("records poisoned");
        records.insert(sandbox.id.clone(), sandbox.clone());
        // Under the lock: a pod's events go out in the order of its moves.
        for kind in crate::events::sandbox_transition(from, sandbox.state) {
            self.events.sandbox(*kind, sandbox);
        }
        Ok(pending)
    }

    /// Deletes a pod's record and forgets it: the final transition.
    fn forget(&self, sandbox: &Sandbox) -> Result<(), RuntimeError> {
        self.store.remove::<Sandbox>(&sandbox.id)?;
        {
            let mut records = self.records.write().expect("records poisoned");
            // A rolled-back creation was never visible: nothing to tell.
            if let Some(gone) = records.remove(&sandbox.id)
                && gone.state != SandboxState::Creating
            {
                self.events
                    .sandbox(crate::events::LifecycleKind::Deleted, &gone);
            }
        }
        let mut names = self.names.lock().expect("names poisoned");
        if names.get(&sandbox.spec.metadata.key()) == Some(&sandbox.id) {
            names.remove(&sandbox.spec.metadata.key());
        }
        Ok(())
    }

    /// Resolves a full id or a unique prefix of a visible (not `Creating`) pod.
    pub fn resolve(&self, id_or_prefix: &str) -> Result<String, RuntimeError> {
        let records = self.records.read().expect("records poisoned");
        if let Some(s) = records.get(id_or_prefix)
            && s.state != SandboxState::Creating
        {
            return Ok(id_or_prefix.to_string());
        }
        let matches: Vec<&String> = if id_or_prefix.is_empty() {
            Vec::new()
        } else {
            records
                .values()
                .filter(|s| s.state != SandboxState::Creating && s.id.starts_with(id_or_prefix))
                .map(|s| &s.id)
                .collect()
        };
        match matches.as_slice() {
            // The id as the client sent it, but never megabytes of it.
            [] => Err(RuntimeError::NotFound {
                kind: "pod sandbox",
                id: crate::excerpt(id_or_prefix).into_owned(),
            }),
            [one] => Ok((*one).clone()),
            many => Err(RuntimeError::Ambiguous {
                kind: "pod sandbox",
                prefix: id_or_prefix.to_string(),
                count: many.len(),
            }),
        }
    }

    /// [`SandboxManager::resolve`], except that a pod that is not there is `Ok(None)`:
    /// Stop and Remove of a missing pod succeed (CRI idempotence).
    pub(crate) fn resolve_if_present(
        &self,
        id_or_prefix: &str,
    ) -> Result<Option<String>, RuntimeError> {
        match self.resolve(id_or_prefix) {
            Ok(id) => Ok(Some(id)),
            Err(RuntimeError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The same for containers.
    pub(crate) fn resolve_container_if_present(
        &self,
        id_or_prefix: &str,
    ) -> Result<Option<String>, RuntimeError> {
        match self.resolve_container(id_or_prefix) {
            Ok(id) => Ok(Some(id)),
            Err(RuntimeError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn snapshot(&self, id: &str) -> Option<Sandbox> {
        self.records
            .read()
            .expect("records poisoned")
            .get(id)
            .cloned()
    }

    /// The cgroup manager, or why pods cannot run.
    pub(crate) fn cgroups(&self) -> Result<&Cgroupfs, RuntimeError> {
        self.cgroups.as_ref().ok_or(RuntimeError::Unsupported {
            what: "pods without cgroups",
            reason: "no cgroup hierarchy was opened".into(),
        })
    }

    /// Runs the network provider's check for a pod with its own network; `None` when
    /// there is nothing to check (host network, no provider, not set up).
    pub async fn check_network(&self, id: &str) -> Option<Result<(), String>> {
        let sandbox = self.snapshot(id)?;
        sandbox.network.as_ref()?;
        Some(self.network.as_ref()?.check(id).await)
    }

    /// Persists a container and publishes it: the one place a container's state
    /// changes, checked against the state machine in `container::record`.
    pub(crate) fn commit_container(
        &self,
        c: &crate::container::Container,
        from: Option<crate::container::ContainerState>,
    ) -> Result<(), RuntimeError> {
        use crate::container::ContainerState::*;
        let allowed = matches!(
            (from, c.state),
            (None, Creating)
                | (Some(Creating), Created)
                | (Some(Created), Running | Exited)
                | (Some(Running), Exited)
        );
        if !allowed {
            return Err(RuntimeError::ContainerState {
                id: c.id.clone(),
                state: from.unwrap_or(Creating),
                wanted: "a valid transition",
            });
        }
        // Compare and swap: the record must still be in `from` (a concurrent remove or
        // transition wins, and a stale copy can never bring a removed container back).
        let mut map = self.containers.write().expect("containers poisoned");
        match (from, map.get(&c.id)) {
            (None, None) => {}
            (Some(f), Some(current)) if current.state == f => {}
            (_, current) => {
                return Err(RuntimeError::ContainerState {
                    id: c.id.clone(),
                    state: current.map_or(from.unwrap_or(Creating), |x| x.state),
                    wanted: "unchanged since it was read",
                });
            }
        }
        self.store.put(c)?;
        map.insert(c.id.clone(), c.clone());
        // Under the lock: a container's events go out in the order of its moves, and
        // its exit is watched for from the moment its process exists.
        if let Some(kind) = crate::events::container_transition(from, c.state) {
            self.events.container(kind, c);
        }
        if c.state == Created {
            self.exits.track(c);
        }
        Ok(())
    }

    /// Persists a change that is not a state transition (new resource limits). The
    /// record must still be in `c`'s state: a stale copy never undoes a transition.
    pub(crate) fn update_container_record(
        &self,
        c: &crate::container::Container,
    ) -> Result<(), RuntimeError> {
        let mut map = self.containers.write().expect("containers poisoned");
        match map.get(&c.id) {
            None => {
                return Err(RuntimeError::NotFound {
                    kind: "container",
                    id: c.id.clone(),
                });
            }
            Some(current) if current.state != c.state => {
                return Err(RuntimeError::ContainerState {
                    id: c.id.clone(),
                    state: current.state,
                    wanted: "unchanged since it was read",
                });
            }
            Some(_) => {}
        }
        self.store.put(c)?;
        map.insert(c.id.clone(), c.clone());
        Ok(())
    }

    pub(crate) fn forget_container(
        &self,
        c: &crate::container::Container,
    ) -> Result<(), RuntimeError> {
        self.store.remove::<crate::container::Container>(&c.id)?;
        {
            let mut map = self.containers.write().expect("containers poisoned");
            // A rolled-back creation was never visible: nothing to tell.
            if let Some(gone) = map.remove(&c.id)
                && gone.state != crate::container::ContainerState::Creating
            {
                self.events
                    .container(crate::events::LifecycleKind::Deleted, &gone);
            }
        }
        let mut names = self.container_names.lock().expect("names poisoned");
        if names.get(&c.name_key()) == Some(&c.id) {
            names.remove(&c.name_key());
        }
        self.locks.lock().expect("locks poisoned").remove(&c.id);
        Ok(())
    }

    /// A visible container's full id from an id or unique prefix.
    pub fn resolve_container(&self, id_or_prefix: &str) -> Result<String, RuntimeError> {
        let containers = self.containers.read().expect("containers poisoned");
        let visible = |c: &&crate::container::Container| {
            c.state != crate::container::ContainerState::Creating
        };
        if containers.get(id_or_prefix).is_some_and(|c| visible(&c)) {
            return Ok(id_or_prefix.to_string());
        }
        let matches: Vec<&String> = if id_or_prefix.is_empty() {
            Vec::new()
        } else {
            containers
                .values()
                .filter(visible)
                .filter(|c| c.id.starts_with(id_or_prefix))
                .map(|c| &c.id)
                .collect()
        };
        match matches.as_slice() {
            // The id as the client sent it, but never megabytes of it.
            [] => Err(RuntimeError::NotFound {
                kind: "container",
                id: crate::excerpt(id_or_prefix).into_owned(),
            }),
            [one] => Ok((*one).clone()),
            many => Err(RuntimeError::Ambiguous {
                kind: "container",
                prefix: id_or_prefix.to_string(),
                count: many.len(),
            }),
        }
    }

    pub(crate) fn container_snapshot(
        &self,
        id: &str,
    ) -> Result<crate::container::Container, RuntimeError> {
        self.containers
            .read()
            .expect("containers poisoned")
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound {
                kind: "container",
                id: id.to_string(),
            })
    }

    /// Runs a cgroup operation on the blocking pool: killing and removing cgroups waits
    /// (sleeps) for processes to die, which must not stall the async workers serving
    /// every other RPC. `None` when there is no cgroup manager.
    pub(crate) async fn cgroup_blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Cgroupfs) -> T + Send + 'static,
    ) -> Option<T> {
        let cgroups = self.cgroups.clone()?;
        tokio::task::spawn_blocking(move || op(&cgroups)).await.ok()
    }

    /// Sends `req` to the monitor at `socket` on behalf of object `id`; a monitor that
    /// cannot be reached is [`RuntimeError::Monitor`]. The reply may still be a refusal.
    pub(crate) async fn ask_monitor(
        &self,
        socket: &Path,
        id: &str,
        req: &crate::monitor::Request,
        timeout: Duration,
    ) -> Result<crate::monitor::Reply, RuntimeError> {
        crate::monitor::request(socket, req, timeout)
            .await
            .map_err(|source| RuntimeError::Monitor {
                kind: req.object_kind(),
                id: id.to_string(),
                source,
            })
    }

    /// As [`SandboxManager::ask_monitor`], with a refusal turned into
    /// [`RuntimeError::Launch`] carrying the monitor's reason.
    pub(crate) async fn order_monitor(
        &self,
        socket: &Path,
        id: &str,
        req: &crate::monitor::Request,
        timeout: Duration,
    ) -> Result<crate::monitor::Reply, RuntimeError> {
        let reply = self.ask_monitor(socket, id, req, timeout).await?;
        if !reply.ok {
            return Err(RuntimeError::Launch {
                id: id.to_string(),
                message: reply.error.unwrap_or_default(),
            });
        }
        Ok(reply)
    }

    /// The lifecycle events of every container and pod from now on, in commit order
    /// per object; `None` after the first call (crustd's event hub is the one reader).
    /// Take it before [`SandboxManager::recover`] to hear exits recovery learns.
    pub fn lifecycle_events(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<crate::events::LifecycleEvent>> {
        self.events.take_reader()
    }

    /// Where the monitor binary is.
    pub fn monitor_bin(&self) -> &Path {
        &self.config.monitor_bin
    }
}
