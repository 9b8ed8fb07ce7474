//! Where pods, pod inits, monitors and containers get their cgroups, for both drivers:
//! plain directories under `cgroupfs`; slices and transient scopes that systemd makes
//! under `systemd` (see [`crate::cgroup::systemd`]). Everything after creation (placing
//! processes, stats, freezing, killing) goes through the cgroup files either way.

use oci_spec::runtime::LinuxResources;

use super::{Sandbox, SandboxManager, SandboxSpec};
use crate::{
    cgroup::{
        CgroupDriver, CgroupError, CgroupMode, Systemd, systemd,
        systemd::properties::resource_properties,
    },
    error::RuntimeError,
};

impl SandboxManager {
    pub(crate) fn systemd_driver(&self) -> bool {
        self.config.cgroup_driver == CgroupDriver::Systemd
    }

    /// The systemd connection, made at first use: crustd starts (and answers Status)
    /// on a node where systemd is not reachable yet; pods fail with why.
    pub(crate) async fn systemd(&self) -> Result<&Systemd, CgroupError> {
        self.systemd
            .get_or_try_init(|| async {
                if self
                    .cgroups()
                    .map(|c| c.mode())
                    .map_err(|_| CgroupError::Systemd {
                        op: "use",
                        unit: "cgroups".into(),
                        reason: "no cgroup manager".into(),
                    })?
                    != CgroupMode::Unified
                {
                    return Err(CgroupError::Systemd {
                        op: "use",
                        unit: "the systemd cgroup driver".into(),
                        reason: format!(
                            "it needs a pure cgroup v2 host; {} is v1 or hybrid",
                            self.config.cgroup_root.display()
                        ),
                    });
                }
                Systemd::connect(
                    std::path::Path::new(systemd::PRIVATE_SOCKET),
                    &self.config.cgroup_root,
                    &self.config.monitor_bin,
                )
                .await
            })
            .await
    }

    /// Checks kubelet's `cgroup_parent` in the driver's form: a cgroupfs path, or a
    /// systemd slice name.
    pub(crate) fn validate_cgroup_parent(&self, parent: &str) -> Result<(), CgroupError> {
        if self.systemd_driver() {
            systemd::expand_slice(parent).map(drop)
        } else {
            crate::cgroup::validate_path(parent)
        }
    }

    /// The pod's cgroup path: kubelet's parent (a slice name expanded to its path under
    /// systemd), or one crust picks.
    pub(crate) fn pod_cgroup_path(
        &self,
        spec: &SandboxSpec,
        id: &str,
    ) -> Result<String, RuntimeError> {
        let invalid = |e: CgroupError| RuntimeError::InvalidArgument {
            field: "config.linux.cgroup_parent",
            reason: e.to_string(),
        };
        match (self.systemd_driver(), spec.cgroup_parent.is_empty()) {
            (false, true) => Ok(format!("{}/{id}", self.config.pod_cgroup_parent)),
            (false, false) => Ok(spec.cgroup_parent.clone()),
            (true, true) => systemd::expand_slice(&systemd::own_pod_slice(id)).map_err(invalid),
            (true, false) => systemd::expand_slice(&spec.cgroup_parent).map_err(invalid),
        }
    }

    /// The pod init's cgroup, inside the pod's.
    pub(crate) fn init_cgroup_path(&self, pod_cgroup: &str, pod_id: &str) -> String {
        if self.systemd_driver() {
            format!("{pod_cgroup}/{}", systemd::init_scope(pod_id))
        } else {
            format!("{pod_cgroup}/{pod_id}")
        }
    }

    /// The monitor's cgroup: one shared by all monitors under cgroupfs, a scope per
    /// monitor under systemd.
    pub(crate) fn monitor_cgroup_path(&self, pod_id: &str) -> String {
        if self.systemd_driver() {
            format!(
                "/{}/{}",
                systemd::CRUST_SLICE,
                systemd::monitor_scope(pod_id)
            )
        } else {
            self.config.monitor_cgroup.clone()
        }
    }

    /// A container's cgroup, inside its pod's.
    pub(crate) fn container_cgroup_path(&self, pod_cgroup: &str, id: &str) -> String {
        if self.systemd_driver() {
            format!("{pod_cgroup}/{}", systemd::container_scope(id))
        } else {
            format!("{pod_cgroup}/{id}")
        }
    }

    /// Makes the pod's cgroup, its init's and its monitor's. Under systemd the pod
    /// slice is crust's to stop later only if this call started it (kubelet makes its
    /// own pod slices before RunPodSandbox).
    pub(crate) async fn make_pod_cgroups(&self, sandbox: &mut Sandbox) -> Result<(), CgroupError> {
        let monitor_cgroup = self.monitor_cgroup_path(&sandbox.id);
        if !self.systemd_driver() {
            let cgroups = self.cgroups().map_err(|_| no_manager())?;
            cgroups.create(&sandbox.cgroup)?;
            if let Some(init_cgroup) = &sandbox.init_cgroup {
                cgroups.create(init_cgroup)?;
            }
            cgroups.create(&monitor_cgroup)?;
            return Ok(());
        }
        let systemd = self.systemd().await?;
        let slice = systemd::unit_of(&sandbox.cgroup)
            .unwrap_or_default()
            .to_string();
        if systemd.ensure_slice(&slice).await? {
            sandbox.cgroup_created = true;
        }
        if sandbox.init_cgroup.is_some() {
            systemd
                .start_scope(
                    &systemd::init_scope(&sandbox.id),
                    &slice,
                    &format!("crust pod {} init", sandbox.id),
                    Vec::new(),
                )
                .await?;
        }
        systemd
            .start_scope(
                &systemd::monitor_scope(&sandbox.id),
                systemd::CRUST_SLICE,
                &format!("crust monitor of pod {}", sandbox.id),
                Vec::new(),
            )
            .await?;
        Ok(())
    }

    /// Makes container cgroup `path` (in pod cgroup `pod_cgroup`) with `resources`:
    /// a directory with the limits written, or a scope started with them.
    pub(crate) async fn make_container_cgroup(
        &self,
        id: &str,
        path: &str,
        resources: Option<&LinuxResources>,
    ) -> Result<(), CgroupError> {
        let cgroups = self.cgroups().map_err(|_| no_manager())?;
        let Some(resources) = resources else {
            if self.systemd_driver() {
                self.start_container_scope(id, path, &Vec::new()).await?;
            } else {
                cgroups.create(path)?;
            }
            return Ok(());
        };
        if self.systemd_driver() {
            let mut resources = resources.clone();
            systemd::with_keeper(&mut resources);
            let props = resource_properties(path, &resources)?;
            self.start_container_scope(id, path, &props).await?;
            cgroups.apply_resources(path, &resources)
        } else {
            cgroups.create(path)?;
            cgroups.apply_resources(path, resources)
        }
    }

    async fn start_container_scope(
        &self,
        id: &str,
        path: &str,
        props: &[(&'static str, systemd::Prop)],
    ) -> Result<(), CgroupError> {
        let systemd = self.systemd().await?;
        let scope = systemd::container_scope(id);
        systemd
            .start_scope(
                &scope,
                systemd::parent_slice(path),
                &format!("crust container {id}"),
                props.to_vec(),
            )
            .await
            .map(drop)
    }

    /// New limits for a running container's scope or a pod's slice: unit properties
    /// (systemd, which writes its own properties back over the files whenever it
    /// re-realizes a unit) and the files.
    pub(crate) async fn update_cgroup(
        &self,
        path: &str,
        resources: &LinuxResources,
    ) -> Result<(), CgroupError> {
        let cgroups = self.cgroups().map_err(|_| no_manager())?;
        if self.systemd_driver()
            && let Some(unit) = systemd::unit_of(path)
        {
            let mut resources = resources.clone();
            systemd::with_keeper(&mut resources);
            let props = resource_properties(path, &resources)?;
            self.systemd().await?.set_properties(unit, &props).await?;
            return cgroups.apply_resources(path, &resources);
        }
        cgroups.apply_resources(path, resources)
    }

    /// Kills what is in cgroup `path`, and removes it: under systemd the unit is
    /// stopped (which removes its cgroup) and found by the path's last component, so
    /// this works the same after a crustd restart. Gone already is fine.
    pub(crate) async fn remove_cgroup(&self, path: &str) -> Result<(), CgroupError> {
        let unit = systemd::unit_of(path).filter(|_| self.systemd_driver());
        if let Some(unit) = unit {
            // A slice several pods share (crictl pods naming one parent) is stopped
            // with the last of them: stopping a slice stops every unit inside it.
            if unit.ends_with(".slice") && self.has_children(path) {
                tracing::debug!(cgroup = path, "slice still holds other units; left running");
                return Ok(());
            }
            let doomed = path.to_string();
            if let Some(Err(e)) = self.cgroup_blocking(move |c| c.kill_all(&doomed)).await {
                tracing::debug!(cgroup = path, error = %e, "kill before stopping the unit");
            }
            self.systemd().await?.stop_unit(unit).await?;
        }
        let doomed = path.to_string();
        self.cgroup_blocking(move |c| c.remove(&doomed))
            .await
            .unwrap_or(Ok(()))
    }
}

impl SandboxManager {
    fn has_children(&self, path: &str) -> bool {
        let Ok(cgroups) = self.cgroups() else {
            return false;
        };
        cgroups.dirs(path).iter().any(|dir| {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        })
    }
}

fn no_manager() -> CgroupError {
    CgroupError::Systemd {
        op: "use",
        unit: "cgroups".into(),
        reason: "no cgroup manager".into(),
    }
}
