//! RunPodSandbox: reserve the name, persist intent, make everything, go Ready; on any
//! failure undo all of it so kubelet's retry starts clean.

use std::{fs, os::unix::fs::PermissionsExt, time::SystemTime};

use nix::mount::{MsFlags, mount};
use tracing::Instrument;

use super::{NsMode, Sandbox, SandboxManager, SandboxSpec, SandboxState, files, sysctl};
use crate::{error::RuntimeError, ids, monitor};

impl SandboxManager {
    /// Creates and starts a pod; returns its id once it is Ready.
    pub async fn run(&self, spec: SandboxSpec) -> Result<String, RuntimeError> {
        self.validate(&spec)?;
        let cgroups = self.cgroups()?;
        let id = ids::new_id();
        let key = spec.metadata.key();
        {
            let mut names = self.names.lock().expect("names poisoned");
            if let Some(existing) = names.get(&key) {
                return Err(RuntimeError::AlreadyExists {
                    kind: "pod sandbox",
                    name: key,
                    id: existing.clone(),
                });
            }
            names.insert(key.clone(), id.clone());
        }
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;

        let cgroup = match self.pod_cgroup_path(&spec, &id) {
            Ok(cgroup) => cgroup,
            Err(e) => {
                self.names.lock().expect("names poisoned").remove(&key);
                return Err(e);
            }
        };
        let mut sandbox = Sandbox {
            id: id.clone(),
            // Under systemd also a pod slice this pod's creation started (see
            // `make_pod_cgroups`).
            cgroup_created: spec.cgroup_parent.is_empty(),
            init_cgroup: (spec.namespaces.pid == NsMode::Pod)
                .then(|| self.init_cgroup_path(&cgroup, &id)),
            cgroup,
            spec,
            state: SandboxState::Creating,
            created_at: 0,
            monitor: None,
            pod_dir: self.pods_dir().join(&id),
            pins_dir: self.pins_root().join(&id),
            socket: self.socket_for(&id),
            network: None,
            resources: None,
        };
        // Intent first: a crash from here on leaves a Creating record, which recovery
        // rolls back. Visible at once (renamed into place) but made durable only in the
        // background, while the pod's namespaces, files, cgroups and monitor are made:
        // a crustd crash finds the renamed record (the page cache outlives a process),
        // and what a power loss could find missing the record for is all volatile
        // (processes, namespaces, mounts and files under `/run`, cgroups) and gone
        // after the reboot too. What outlives a reboot (CNI's IPAM leases and cache)
        // is made only after the sync has returned; see `create`.
        let pending = match crate::step_span!("pod.record")
            .in_scope(|| self.commit_visible(&sandbox, None))
        {
            Ok(pending) => super::sandbox_stop::RecordSync::pending(&id, pending),
            Err(e) => {
                self.names.lock().expect("names poisoned").remove(&key);
                return Err(e);
            }
        };
        match self.create(&mut sandbox, cgroups, pending).await {
            Ok(()) => {
                tracing::info!(pod_id = %id, monitor_pid = sandbox.monitor.map(|m| m.monitor.pid), "pod sandbox ready");
                Ok(id)
            }
            Err(error) => {
                tracing::warn!(pod_id = %id, %error, "RunPodSandbox failed; rolling back");
                if let Err(rollback) = self.teardown(&sandbox, true).await {
                    // The record stays (as Creating) so the next start retries the cleanup.
                    tracing::error!(pod_id = %id, error = %rollback, "rollback incomplete");
                    return Err(error);
                }
                if let Err(forget) = self.forget(&sandbox) {
                    tracing::error!(pod_id = %id, error = %forget, "cannot delete rolled-back record");
                }
                Err(error)
            }
        }
    }

    fn validate(&self, spec: &SandboxSpec) -> Result<(), RuntimeError> {
        let invalid = |field, reason: String| Err(RuntimeError::InvalidArgument { field, reason });
        let m = &spec.metadata;
        for (field, value) in [
            ("config.metadata.name", &m.name),
            ("config.metadata.namespace", &m.namespace),
            ("config.metadata.uid", &m.uid),
        ] {
            if value.is_empty() {
                return invalid(field, "is required".into());
            }
        }
        if spec.hostname.len() > 64 || spec.hostname.contains(['/', '\0', '\n']) {
            return invalid(
                "config.hostname",
                format!("{:?} is not a valid hostname", spec.hostname),
            );
        }
        if !spec.cgroup_parent.is_empty() {
            self.validate_cgroup_parent(&spec.cgroup_parent)
                .map_err(|e| RuntimeError::InvalidArgument {
                    field: "config.linux.cgroup_parent",
                    reason: e.to_string(),
                })?;
        }
        for (field, mode) in [
            ("network", spec.namespaces.network),
            ("pid", spec.namespaces.pid),
            ("ipc", spec.namespaces.ipc),
        ] {
            if mode == NsMode::Target {
                return Err(RuntimeError::InvalidArgument {
                    field: "config.linux.security_context.namespace_options",
                    reason: format!("{field}: TARGET is only valid for containers"),
                });
            }
            if field != "pid" && mode == NsMode::Container {
                return Err(RuntimeError::InvalidArgument {
                    field: "config.linux.security_context.namespace_options",
                    reason: format!("{field}: CONTAINER is not supported for pods"),
                });
            }
        }
        sysctl::validate(&spec.sysctls, spec.namespaces.network, spec.namespaces.ipc)
            .and_then(|()| {
                sysctl::check_known(
                    &spec.sysctls,
                    &std::path::Path::new(super::PROC_ROOT).join("sys"),
                )
            })
            .map_err(|reason| RuntimeError::InvalidArgument {
                field: "config.linux.sysctls",
                reason,
            })?;
        // kubelet refuses `hostUsers: false` with hostNetwork, hostPID or hostIPC
        // (and Status says `user_namespaces_host_network: false`): a host namespace
        // is owned by the host's user namespace, so the pod's root would not own it.
        if spec.userns.is_some() {
            for (field, mode) in [
                ("network", spec.namespaces.network),
                ("pid", spec.namespaces.pid),
                ("ipc", spec.namespaces.ipc),
            ] {
                if mode == NsMode::Node {
                    return Err(RuntimeError::InvalidArgument {
                        field: "config.linux.security_context.namespace_options.userns_options",
                        reason: format!(
                            "a pod user namespace (mode POD) cannot be combined with {field}: NODE"
                        ),
                    });
                }
            }
        }
        if let Some(dns) = &spec.dns {
            files::validate_dns(dns).map_err(|reason| RuntimeError::InvalidArgument {
                field: "config.dns_config",
                reason,
            })?;
        }
        Ok(())
    }

    /// Makes everything of the pod, overlapping what does not depend on each other:
    ///
    /// ```text
    ///   record sync (Creating) ------------------------------+
    ///   netns + pin --+                                      +-- CNI ADD --+
    ///   pod files, cgroups ---+-- monitor (joins the netns) -----------------+-- Ready
    /// ```
    /// CNI ADD needs the pinned network namespace and a durable Creating record (its
    /// leases outlive a reboot, so the record that lets recovery undo them must too);
    /// it does not need the monitor. Pods with a user namespace have the monitor make
    /// their network namespace, so their ADD waits for the monitor.
    async fn create(
        &self,
        sandbox: &mut Sandbox,
        cgroups: &crate::cgroup::Cgroupfs,
        record: super::sandbox_stop::RecordSync,
    ) -> Result<(), RuntimeError> {
        // Started now, awaited before ADD (`network` below).
        let record_sync = tokio::spawn(record.sync());
        let id = sandbox.id.clone();
        let io = |op, path: &std::path::Path| pod_io(&id, op, path);
        let spec = sandbox.spec.clone();
        let host_network = spec.namespaces.network == NsMode::Node;
        let hostname = if spec.hostname.is_empty() {
            spec.metadata.name.chars().take(63).collect()
        } else {
            spec.hostname.clone()
        };

        // crustd makes the network namespace unless the pod's user namespace must own
        // it; its `net.*` sysctls then go in with it, the rest to the monitor.
        let crust_netns = !host_network && spec.userns.is_none();
        let (net_sysctls, monitor_sysctls): (Vec<_>, Vec<_>) = if crust_netns {
            spec.sysctls
                .iter()
                .cloned()
                .partition(|(name, _)| sysctl::namespace_of(name) == Some(sysctl::SysctlNs::Net))
        } else {
            (Vec::new(), spec.sysctls.clone())
        };
        let net_pin = sandbox.pin("net");
        let netns = {
            let (id, pins_dir) = (id.clone(), sandbox.pins_dir.clone());
            async move {
                if !crust_netns {
                    return Ok(());
                }
                super::netns::make_pinned_netns(pins_dir, net_sysctls)
                    .instrument(crate::step_span!("pod.netns"))
                    .await
                    .map_err(|message| RuntimeError::Network {
                        id,
                        message: format!("network namespace: {message}"),
                    })
            }
        };
        let local = async {
            self.make_files(sandbox, &hostname)?;
            // A cgroup_parent named in the config belongs to whoever named it (kubelet,
            // or several crictl pods sharing one): created if missing, never removed by
            // us. Only the cgroup crust picks (`<pod_parent>/<id>`) is the pod's to remove.
            self.make_pod_cgroups(sandbox)
                .instrument(crate::step_span!("pod.cgroups"))
                .await
                .map_err(|source| RuntimeError::Cgroup {
                    kind: "pod sandbox",
                    id: id.clone(),
                    source,
                })
        };
        let (netns, local) = tokio::join!(netns, local);
        netns.and(local)?;

        // The monitor. Its socket's directory is ours alone whatever the umask: the
        // socket is 0600 too, but a directory others can write would let them put
        // their own socket at a pod's path before the monitor binds it.
        if let Some(sock_dir) = sandbox.socket.parent() {
            crate::ensure_private_dir(sock_dir)
                .map_err(io("create private directory", sock_dir))?;
        }
        let dir = sandbox.pod_dir.clone();
        let spec_file = dir.join("monitor-spec.json");
        let monitor_spec = monitor::MonitorSpec {
            pod_id: id.clone(),
            socket: sandbox.monitor_socket(),
            pid_file: dir.join("monitor.json"),
            pins_dir: sandbox.pins_dir.clone(),
            new_net: !host_network && !crust_netns,
            join_net: crust_netns.then(|| net_pin.clone()),
            new_ipc: spec.namespaces.ipc != NsMode::Node,
            // As containerd does: a host-network pod keeps the host's UTS namespace.
            new_uts: !host_network,
            new_pid: spec.namespaces.pid == NsMode::Pod,
            hostname: hostname.clone(),
            sysctls: monitor_sysctls,
            monitor_cgroup_dirs: cgroups.dirs(&self.monitor_cgroup_path(&id)),
            pod_cgroup_dirs: sandbox
                .init_cgroup
                .as_deref()
                .map(|c| cgroups.dirs(c))
                .unwrap_or_default(),
            userns: spec.userns.as_ref().map(|u| {
                (
                    super::UserNamespace::map_text(&u.uids),
                    super::UserNamespace::map_text(&u.gids),
                )
            }),
        };
        let bytes = serde_json::to_vec_pretty(&monitor_spec).expect("monitor spec serializes");
        fs::write(&spec_file, bytes).map_err(io("write", &spec_file))?;
        // The monitor makes and pins the other namespaces and starts the pod init
        // before it reports: this step is all of that.
        let monitor = async {
            monitor::spawn(
                &self.config.monitor_bin,
                &spec_file,
                &dir.join("monitor.log"),
            )
            .instrument(crate::step_span!("pod.monitor_spawn"))
            .await
            .map_err(|source| RuntimeError::Monitor {
                kind: "pod sandbox",
                id: id.clone(),
                source,
            })
        };
        // The pod network, in the pinned namespace, while the record still says
        // Creating: a crash here is rolled back like any other partial pod.
        let network = async {
            record_sync.await.map_err(|e| RuntimeError::Io {
                kind: "pod sandbox",
                id: id.clone(),
                op: "sync the record",
                path: dir.clone(),
                source: std::io::Error::other(e),
            })??;
            let (false, Some(network)) = (host_network, self.network.as_ref()) else {
                return Ok(None);
            };
            let req = super::NetworkRequest {
                pod_id: id.clone(),
                metadata: spec.metadata.clone(),
                netns: net_pin.clone(),
                port_mappings: spec.port_mappings.clone(),
                annotations: spec.annotations.clone(),
                dns: spec.dns.clone(),
            };
            network
                .setup(&req)
                .instrument(crate::step_span!("pod.network_setup"))
                .await
                .map(Some)
                .map_err(|message| RuntimeError::Network {
                    id: id.clone(),
                    message,
                })
        };
        // Both run to the end even when one fails, so the rollback never races an ADD.
        let (pids, status) = if crust_netns {
            tokio::join!(monitor, network)
        } else {
            let pids = monitor.await;
            match pids {
                Ok(pids) => (Ok(pids), network.await),
                Err(e) => (Err(e), Ok(None)),
            }
        };
        if let Ok(pids) = &pids {
            sandbox.monitor = Some(*pids);
        }
        if let Ok(Some(status)) = &status {
            sandbox.network = Some(status.clone());
        }
        pids?;
        if let Some(status) = status? {
            // The pod's own name resolves to its address, as kubelet-managed hosts do.
            let hosts_path = dir.join("hosts");
            let mut hosts = fs::read_to_string(&hosts_path).map_err(io("read", &hosts_path))?;
            for ip in &status.ips {
                hosts.push_str(&format!("{ip}\t{hostname}\n"));
            }
            fs::write(&hosts_path, hosts).map_err(io("write", &hosts_path))?;
        }
        sandbox.created_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or_default();
        sandbox.state = SandboxState::Ready;
        crate::step_span!("pod.record")
            .in_scope(|| self.commit(sandbox, Some(SandboxState::Creating)))
    }

    /// The pod's hostname, hosts, resolv.conf and /dev/shm under its directory.
    fn make_files(&self, sandbox: &Sandbox, hostname: &str) -> Result<(), RuntimeError> {
        let _span = crate::step_span!("pod.files").entered();
        let id = &sandbox.id;
        let io = |op, path: &std::path::Path| pod_io(id, op, path);
        let spec = &sandbox.spec;
        let host_network = spec.namespaces.network == NsMode::Node;
        let dir = &sandbox.pod_dir;
        // `pods/` is root's alone (crustd makes it so at start; again here in case it
        // was removed since): the pods' specs and files are not for other users.
        let pods = self.pods_dir();
        crate::ensure_private_dir(&pods).map_err(io("create private directory", &pods))?;
        fs::create_dir_all(dir).map_err(io("create", dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o711)).map_err(io("chmod", dir))?;
        let write = |name: &str, content: &[u8]| {
            fs::write(dir.join(name), content).map_err(io("write", &dir.join(name)))
        };
        write("hostname", format!("{hostname}\n").as_bytes())?;
        let hosts = if host_network {
            fs::read(&self.config.host_hosts).map_err(io("read", &self.config.host_hosts))?
        } else {
            files::hosts(hostname).into_bytes()
        };
        write("hosts", &hosts)?;
        let resolv = match &spec.dns {
            Some(dns)
                if !dns.servers.is_empty()
                    || !dns.searches.is_empty()
                    || !dns.options.is_empty() =>
            {
                files::resolv_conf(dns).into_bytes()
            }
            _ => fs::read(&self.config.host_resolv_conf)
                .map_err(io("read", &self.config.host_resolv_conf))?,
        };
        write("resolv.conf", &resolv)?;

        // Pod /dev/shm, unless the pod uses the host's IPC namespace (and so its shm).
        if spec.namespaces.ipc != NsMode::Node {
            let shm = sandbox.shm_dir();
            fs::create_dir_all(&shm).map_err(io("create", &shm))?;
            let options = format!("mode=1777,size={}", self.config.shm_size);
            mount(
                Some("shm"),
                &shm,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(options.as_str()),
            )
            .map_err(|e| RuntimeError::Io {
                kind: "pod sandbox",
                id: id.clone(),
                op: "mount shm tmpfs at",
                path: shm.clone(),
                source: e.into(),
            })?;
        }
        Ok(())
    }
}

/// Maps an I/O error of `op` on `path` to the pod's [`RuntimeError::Io`].
fn pod_io(
    id: &str,
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> RuntimeError + use<> {
    let (id, path) = (id.to_string(), path.to_path_buf());
    move |source| RuntimeError::Io {
        kind: "pod sandbox",
        id,
        op,
        path,
        source,
    }
}
