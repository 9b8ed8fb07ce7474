//! The `systemd` cgroup driver: pods in slices, containers, pod inits and monitors in
//! transient scope units that systemd creates over D-Bus (kubelet's
//! `--cgroup-driver=systemd`, which kubeadm defaults to).
//!
//! ```text
//! -.slice
//!  ├─ kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice   (pod)
//!  │    ├─ crust-<container id>.scope       Delegate=yes, MemoryMax, CPUQuota...
//!  │    └─ crust-init-<pod id>.scope        the pod PID namespace's init
//!  └─ crust.slice
//!       ├─ crust-monitor-<pod id>.scope     outside every pod limit
//!       └─ crust-pod<pod id>.slice          pods that name no cgroup_parent
//! ```
//!
//! A scope needs a process when it starts (systemd refuses an empty one), and systemd
//! removes a scope's cgroup as soon as it is empty. Each crust scope therefore starts
//! with a *keeper*: `crust-monitor keep`, a process that only waits, started by crustd
//! and moved in by systemd (the `PIDs` property). The monitor then places the real
//! process (container init, pod init, itself) into the scope's cgroup as it does under
//! the cgroupfs driver, before it execs. The keeper holds the cgroup until the
//! container ends: when its process exits the monitor kills what is left in the
//! cgroup (keeper included, as it does any leftover), systemd then drops the scope, and
//! the OOM-kill count crust reports from was read by the monitor just before (the exit
//! record's `oom_kills`). It costs one sleeping process per scope, counted in
//! `pids.max` (crust adds one to every pids limit for it) and exempt from the OOM
//! killer where crustd may say so. runc's way (the container's own init pid in `PIDs`)
//! needs the pid before the process runs anything, which crust's monitor, not crustd,
//! has.
//!
//! Limits go both ways: as unit properties (systemd writes them again on every
//! re-realization, so they must be its own) and as cgroup files for what systemd has
//! no property for (hugetlb, `unified`, swappiness), with the same values.

mod dbus;
pub mod names;
pub mod properties;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

pub use names::{
    CRUST_SLICE, container_scope, expand_slice, init_scope, monitor_scope, own_pod_slice,
    parent_slice, unit_of,
};
pub use properties::Prop;

use self::dbus::{Bus, BusError};
use super::CgroupError;

/// Where systemd listens for root without a bus daemon.
pub const PRIVATE_SOCKET: &str = "/run/systemd/private";

/// How long a unit's cgroup may take to appear or go once systemd has the job. Under
/// TCG emulation systemd takes a few hundred milliseconds; this is far beyond.
const UNIT_TIMEOUT: Duration = Duration::from_secs(20);

/// The driver: a systemd connection, the cgroup root its units appear under, and the
/// binary that serves as keeper.
#[derive(Debug, Clone)]
pub struct Systemd {
    bus: Bus,
    cgroup_root: PathBuf,
    keeper_bin: PathBuf,
}

fn err(op: &'static str, unit: &str, reason: impl ToString) -> CgroupError {
    CgroupError::Systemd {
        op,
        unit: unit.to_string(),
        reason: reason.to_string(),
    }
}

impl Systemd {
    /// Connects to systemd (system bus, else `private_socket`). Units' cgroups are
    /// looked for under `cgroup_root` (a pure cgroup v2 mount on a systemd node);
    /// `keeper_bin` is crust-monitor.
    pub async fn connect(
        private_socket: &Path,
        cgroup_root: &Path,
        keeper_bin: &Path,
    ) -> Result<Systemd, CgroupError> {
        let bus = Bus::connect(private_socket)
            .await
            .map_err(|reason| err("connect to", "systemd", reason))?;
        Ok(Systemd {
            bus,
            cgroup_root: cgroup_root.to_path_buf(),
            keeper_bin: keeper_bin.to_path_buf(),
        })
    }

    fn dir(&self, path: &str) -> PathBuf {
        self.cgroup_root.join(path.trim_start_matches('/'))
    }

    /// Starts slice `name` as a transient unit unless it is there already (kubelet
    /// creates its pod slices itself). Returns whether this call created it, and so
    /// whether it is crust's to stop.
    pub async fn ensure_slice(&self, name: &str) -> Result<bool, CgroupError> {
        let path = expand_slice(name)?;
        if self.dir(&path).is_dir() {
            return Ok(false);
        }
        let props = properties::slice_base(&format!("crust pod slice {name}"));
        match self.bus.start_transient_unit(name, &props).await {
            Ok(()) => {}
            // Someone else's, started between our look and our call.
            Err(BusError::UnitExists) => return Ok(false),
            Err(e) => return Err(err("start", name, e)),
        }
        self.wait_for(name, &path, |dir| dir.is_dir()).await?;
        Ok(true)
    }

    /// Starts scope `name` in `slice` with `props` (limits) and waits for its cgroup.
    /// Returns the scope's cgroup path. A leftover failed unit of the same name is
    /// reset first.
    pub async fn start_scope(
        &self,
        name: &str,
        slice: &str,
        description: &str,
        props: Vec<(&'static str, Prop)>,
    ) -> Result<String, CgroupError> {
        let slice_path = expand_slice(slice)?;
        let path = if slice_path == "/" {
            format!("/{name}")
        } else {
            format!("{slice_path}/{name}")
        };
        let _ = self.bus.reset_failed_unit(name).await;
        let (keeper, pid) = self.spawn_keeper(name)?;
        let mut all = properties::scope_base(description, slice, &[pid]);
        all.extend(props);
        if let Err(e) = self.bus.start_transient_unit(name, &all).await {
            kill_keeper(keeper, pid).await;
            return Err(match e {
                BusError::UnitExists => CgroupError::Systemd {
                    op: "start",
                    unit: name.to_string(),
                    reason: "a unit of that name exists (a container or pod id reused?)".into(),
                },
                e => err("start", name, e),
            });
        }
        let procs = self.dir(&path).join("cgroup.procs");
        let placed = self
            .wait_for(name, &path, |_| {
                std::fs::read_to_string(&procs)
                    .is_ok_and(|t| t.lines().any(|l| l.trim() == pid.to_string()))
            })
            .await;
        if let Err(e) = placed {
            let _ = self.bus.stop_unit(name).await;
            kill_keeper(keeper, pid).await;
            return Err(e);
        }
        // Reaped whenever it ends (when crust stops the scope); after a crustd restart
        // the keeper is init's child instead.
        tokio::spawn(async move {
            let mut keeper = keeper;
            let _ = keeper.wait().await;
        });
        Ok(path)
    }

    /// Changes a running unit's properties (UpdateContainerResources).
    pub async fn set_properties(
        &self,
        unit: &str,
        props: &[(&'static str, Prop)],
    ) -> Result<(), CgroupError> {
        if props.is_empty() {
            return Ok(());
        }
        self.bus
            .set_unit_properties(unit, props)
            .await
            .map_err(|e| err("set properties of", unit, e))
    }

    /// Stops `unit` (killing whatever is left in it), forgets a failed state, and
    /// waits until systemd has unloaded it. A unit that is gone already is fine.
    pub async fn stop_unit(&self, unit: &str) -> Result<(), CgroupError> {
        match self.bus.stop_unit(unit).await {
            Ok(()) | Err(BusError::NoSuchUnit) => {}
            Err(e) => return Err(err("stop", unit, e)),
        }
        let deadline = tokio::time::Instant::now() + UNIT_TIMEOUT;
        loop {
            let _ = self.bus.reset_failed_unit(unit).await;
            match self.bus.unit_loaded(unit).await {
                Ok(false) => return Ok(()),
                Ok(true) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(true) => return Err(err("stop", unit, "still loaded after stopping it")),
                Err(e) => return Err(err("look up", unit, e)),
            }
        }
    }

    /// Whether `unit` is loaded in systemd.
    pub async fn unit_exists(&self, unit: &str) -> Result<bool, CgroupError> {
        self.bus
            .unit_loaded(unit)
            .await
            .map_err(|e| err("look up", unit, e))
    }

    async fn wait_for(
        &self,
        unit: &str,
        path: &str,
        ready: impl Fn(&Path) -> bool,
    ) -> Result<(), CgroupError> {
        let dir = self.dir(path);
        let deadline = tokio::time::Instant::now() + UNIT_TIMEOUT;
        while !ready(&dir) {
            if tokio::time::Instant::now() > deadline {
                return Err(err(
                    "start",
                    unit,
                    format!("its cgroup {} did not appear", dir.display()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Starts a keeper: in its own process group (no signal meant for crustd's
    /// reaches it) with nothing open, and out of the OOM killer's reach where crustd
    /// may lower scores (an OOM kill in the container must not take the cgroup's
    /// anchor with it, nor count as the container's).
    fn spawn_keeper(&self, unit: &str) -> Result<(tokio::process::Child, u32), CgroupError> {
        let child = tokio::process::Command::new(&self.keeper_bin)
            .arg("keep")
            .arg(unit)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                err(
                    "start",
                    unit,
                    format!("spawn keeper {}: {e}", self.keeper_bin.display()),
                )
            })?;
        let pid = child
            .id()
            .ok_or_else(|| err("start", unit, "keeper exited at once"))?;
        let _ = std::fs::write(format!("/proc/{pid}/oom_score_adj"), "-1000");
        Ok((child, pid))
    }
}

async fn kill_keeper(mut keeper: tokio::process::Child, _pid: u32) {
    let _ = keeper.start_kill();
    let _ = keeper.wait().await;
}

/// Adds the keeper to a pids limit: the container itself gets what it asked for.
pub fn with_keeper(resources: &mut oci_spec::runtime::LinuxResources) {
    if let Some(pids) = *resources.pids()
        && pids.limit() > 0
    {
        let mut pids = pids;
        pids.set_limit(pids.limit() + 1);
        resources.set_pids(Some(pids));
    }
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::{LinuxPidsBuilder, LinuxResourcesBuilder};

    use super::*;

    #[test]
    fn the_keeper_is_added_to_pids_limits_only() {
        let cases = [(Some(10), Some(11)), (Some(-1), Some(-1)), (None, None)];
        for (limit, want) in cases {
            let mut b = LinuxResourcesBuilder::default();
            if let Some(l) = limit {
                b = b.pids(LinuxPidsBuilder::default().limit(l).build().unwrap());
            }
            let mut r = b.build().unwrap();
            with_keeper(&mut r);
            assert_eq!(r.pids().as_ref().map(|p| p.limit()), want, "{limit:?}");
        }
    }
}
