//! CreateContainer: record intent, prepare the rootfs dirs and cgroup, generate the OCI
//! spec, and have the pod's monitor create the (waiting) process.

use std::{fs, path::PathBuf, time::SystemTime};

use super::{
    Container, ContainerSpec, ContainerState, ContainerUser, HostDevices, ImageForContainer,
    PodContext, SpecInput, container_create_host, container_dirs, generate_spec, spec_files,
};
use crate::{
    error::RuntimeError,
    ids,
    monitor::{OciRuntime, OverlayMount, Request, RestoreImages},
    sandbox::{NsMode, SandboxManager},
};

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// How long reading the spec's input files may take. They are regular files of a few
/// KiB on local disk, so only a hung filesystem takes longer; crustd then answers
/// instead of waiting with it.
const SPEC_FILES_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The image's /etc/passwd and /etc/group and a Localhost seccomp profile.
struct SpecFiles {
    passwd: Option<String>,
    group: Option<String>,
    seccomp: Option<String>,
}

/// Reads the files the spec needs on a blocking thread (never on a runtime worker,
/// whose other tasks would stall with it), each bounded and regular-only (see
/// `spec_files`). A bad file is the image's or the profile's fault, so it is an
/// INVALID_ARGUMENT naming the file (and the image).
async fn read_spec_files(c: &Container) -> Result<SpecFiles, RuntimeError> {
    let layers: Vec<PathBuf> = c
        .image
        .lower
        .iter()
        .map(|l| c.image.layers_root.join(l))
        .collect();
    let image = c.image.reference.clone();
    let seccomp = match &c.spec.security.seccomp {
        super::SecurityProfile::Localhost(path) => Some(path.clone()),
        _ => None,
    };
    let id = c.id.clone();
    let task = tokio::task::spawn_blocking(move || -> Result<SpecFiles, RuntimeError> {
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        let image_file = |path: &str| {
            spec_files::read_image_file(
                &layers,
                path,
                &format!("the image's /{path}"),
                super::MAX_SPEC_FILE,
            )
            .map(|o| o.map(text))
            .map_err(|e| spec_file_error(&id, "config.image", Some(&image), e))
        };
        let seccomp = seccomp
            .map(|path| {
                const FIELD: &str = "config.linux.security_context.seccomp.localhost_ref";
                if !path.starts_with('/') {
                    return Err(RuntimeError::InvalidArgument {
                        field: FIELD,
                        reason: format!(
                            "seccomp profile {:?} is not an absolute path",
                            crate::excerpt(&path)
                        ),
                    });
                }
                let what = format!("seccomp profile {:?}", crate::excerpt(&path));
                spec_files::read_host_file(path.as_ref(), &what, super::MAX_SPEC_FILE)
                    .map(text)
                    .map_err(|e| spec_file_error(&id, FIELD, None, e))
            })
            .transpose()?;
        Ok(SpecFiles {
            passwd: image_file("etc/passwd")?,
            group: image_file("etc/group")?,
            seccomp,
        })
    });
    match tokio::time::timeout(SPEC_FILES_TIMEOUT, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(RuntimeError::Launch {
            id: c.id.clone(),
            message: format!("reading the image's /etc/passwd and /etc/group failed: {join}"),
        }),
        Err(_) => Err(RuntimeError::DeadlineExceeded {
            id: c.id.clone(),
            what: "reading the image's /etc/passwd, /etc/group and seccomp profile".into(),
            after: SPEC_FILES_TIMEOUT,
        }),
    }
}

/// A file that is not a bounded regular file is the caller's (image's, profile's)
/// fault. So is a profile path that cannot be opened (missing, a loop, no access: the
/// path is the request's). An I/O error inside the image store (a layer directory that
/// cannot be opened or read) is crust's.
fn spec_file_error(
    id: &str,
    field: &'static str,
    image: Option<&str>,
    e: spec_files::SpecFileError,
) -> RuntimeError {
    match (e, image) {
        (
            spec_files::SpecFileError::Io {
                op, path, source, ..
            },
            Some(_),
        ) => RuntimeError::Io {
            kind: "container",
            id: id.to_string(),
            op,
            path,
            source,
        },
        (e, image) => RuntimeError::InvalidArgument {
            field,
            reason: match image {
                Some(image) => format!("image {:?}: {e}", crate::excerpt(image)),
                None => e.to_string(),
            },
        },
    }
}

impl SandboxManager {
    /// Creates a container in pod `pod_id` from `spec` and `image`; returns its id.
    pub async fn create_container(
        &self,
        pod_id: &str,
        spec: ContainerSpec,
        image: ImageForContainer,
    ) -> Result<String, RuntimeError> {
        let pod_id = self.resolve(pod_id)?;
        let lock = self.lock_for(&pod_id);
        let _guard = lock.lock().await;
        let pod = self.status(&pod_id)?;
        if !pod.ready {
            return Err(RuntimeError::NotReady { id: pod_id.clone() });
        }
        let sandbox = pod.sandbox;
        // CRI: the container's userns_options are the pod's, repeated (kubelet sends
        // both). containerd refuses a difference ("user namespace config for sandbox
        // is different from container") as a plain error, which reaches the client as
        // UNKNOWN; it is the request that is inconsistent, so INVALID_ARGUMENT here.
        if spec.security.userns != sandbox.spec.userns {
            let show = |u: &Option<crate::sandbox::UserNamespace>| match u {
                Some(u) => format!(
                    "POD uids {:?} gids {:?}",
                    crate::sandbox::UserNamespace::map_text(&u.uids).trim(),
                    crate::sandbox::UserNamespace::map_text(&u.gids).trim()
                ),
                None => "NODE".to_string(),
            };
            return Err(RuntimeError::InvalidArgument {
                field: "config.linux.security_context.namespace_options.userns_options",
                reason: format!(
                    "the container's ({}) differ from its pod's ({})",
                    show(&spec.security.userns),
                    show(&sandbox.spec.userns)
                ),
            });
        }
        self.check_idmapped_mounts(&spec, &sandbox)?;
        if spec.metadata.name.is_empty() {
            return Err(RuntimeError::InvalidArgument {
                field: "config.metadata.name",
                reason: "is required".into(),
            });
        }
        if spec.restore.is_some() {
            self.check_restorable(&spec, &sandbox)?;
        }

        let id = ids::new_id();
        let bundle = sandbox.pod_dir.join("containers").join(&id);
        let log_path = if sandbox.spec.log_directory.is_empty() || spec.log_path.is_empty() {
            bundle.join("container.log")
        } else {
            PathBuf::from(&sandbox.spec.log_directory).join(&spec.log_path)
        };
        let container = Container {
            id: id.clone(),
            pod_id: pod_id.clone(),
            state: ContainerState::Creating,
            created_at: now(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            pid: None,
            log_path,
            dir: self.config.containers_dir.join(&id),
            bundle,
            cgroup: self.container_cgroup_path(&sandbox.cgroup, &id),
            oom_kills_before_kill: None,
            user: None,
            spec,
            image,
        };
        {
            let mut names = self.container_names.lock().expect("names poisoned");
            if let Some(existing) = names.get(&container.name_key()) {
                return Err(RuntimeError::AlreadyExists {
                    kind: "container",
                    name: container.name_key(),
                    id: existing.clone(),
                });
            }
            names.insert(container.name_key(), id.clone());
        }
        if let Err(e) = self.commit_container(&container, None) {
            self.container_names
                .lock()
                .expect("names poisoned")
                .remove(&container.name_key());
            return Err(e);
        }
        let mut container = container;
        match self.make_container(&mut container, &sandbox).await {
            Ok(()) => Ok(id),
            Err(error) => {
                tracing::warn!(container_id = %id, %error, "CreateContainer failed; rolling back");
                if let Err(e) = self.remove_container_files(&container).await {
                    tracing::error!(container_id = %id, error = %e, "rollback incomplete");
                    return Err(error);
                }
                let _ = self.forget_container(&container);
                Err(error)
            }
        }
    }

    async fn make_container(
        &self,
        c: &mut Container,
        sandbox: &crate::sandbox::Sandbox,
    ) -> Result<(), RuntimeError> {
        let id = c.id.clone();
        let io = |op: &'static str, path: &std::path::Path| {
            let (id, path) = (id.clone(), path.to_path_buf());
            move |source| RuntimeError::Io {
                kind: "container",
                id,
                op,
                path,
                source,
            }
        };
        let dir_io = |(op, path, source)| RuntimeError::Io {
            kind: "container",
            id: id.clone(),
            op,
            path,
            source,
        };
        // Private: `upper` may hold setuid binaries and device nodes the container made.
        let top_layer = c.image.lower.first().map(|l| c.image.layers_root.join(l));
        container_dirs::make_writable_dirs(
            &self.config.containers_dir,
            &c.dir,
            top_layer.as_deref(),
        )
        .map_err(dir_io)?;
        if let Some(restore) = &c.spec.restore {
            // CRIU's images and the checkpointed writable layer, into this container's
            // new directories (the overlay is not mounted yet).
            let (archive, dir) = (restore.archive.clone(), c.dir.clone());
            tokio::task::spawn_blocking(move || {
                super::container_restore::unpack_for_restore(&archive, &dir)
            })
            .await
            .map_err(|e| RuntimeError::Launch {
                id: id.clone(),
                message: format!("unpack task: {e}"),
            })?
            .map_err(dir_io)?;
        }
        // A pod user namespace: `upper` is the container's `/` as overlayfs shows it,
        // so it belongs to the container's root as the namespace maps it (its owner
        // from the top layer, shifted), as containerd chowns the snapshot's upper dir.
        if let Some((uid, gid)) = sandbox.spec.userns.as_ref().and_then(|u| u.host_root()) {
            use std::os::unix::fs::MetadataExt;
            let upper = c.dir.join("upper");
            let meta = fs::symlink_metadata(&upper).map_err(io("stat", &upper))?;
            let shift = |id: u32, base: u32| id.checked_add(base).unwrap_or(base);
            std::os::unix::fs::lchown(
                &upper,
                Some(shift(meta.uid(), uid)),
                Some(shift(meta.gid(), gid)),
            )
            .map_err(io("chown", &upper))?;
        }
        fs::create_dir_all(&c.bundle).map_err(io("create", &c.bundle))?;
        if let Some(parent) = c.log_path.parent() {
            fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        let cgroups = self.cgroups()?;

        let ns = &sandbox.spec.namespaces;
        let pin = |name: &str| {
            let p = sandbox.pin(name);
            p.exists().then_some(p)
        };
        // Host side of the mounts, before the spec names them: image volumes (with
        // the image's content copied up) and CRI host paths (created, resolved).
        let spec_error = |e: super::SpecError| RuntimeError::InvalidArgument {
            field: "config",
            reason: e.to_string(),
        };
        let host_error = |(op, path, source): container_create_host::HostError| RuntimeError::Io {
            kind: "container",
            id: id.clone(),
            op,
            path,
            source,
        };
        let volumes_root = c.dir.join("volumes");
        let volumes =
            super::image_volumes(&c.spec, &c.image.config, &volumes_root).map_err(spec_error)?;
        let layers: Vec<PathBuf> = c
            .image
            .lower
            .iter()
            .map(|l| c.image.layers_root.join(l))
            .collect();
        container_create_host::create_image_volumes(&volumes, &layers).map_err(host_error)?;
        if let Some(userns) = &sandbox.spec.userns {
            container_create_host::shift_image_volumes(&volumes, userns).map_err(host_error)?;
        }
        let mut container_spec = c.spec.clone();
        super::image_mounts::mount_image_volumes(&id, &c.dir, &mut container_spec.mounts)?;
        container_spec.mounts =
            container_create_host::resolve_mount_sources(&container_spec.mounts).map_err(|e| {
                match e {
                    Ok(host) => host_error(host),
                    Err(spec) => spec_error(spec),
                }
            })?;
        if container_spec.resources.pids_limit.is_none() {
            container_spec.resources.pids_limit = self.container_pids_limit;
        }

        let target_pid_ns = match c.spec.security.pid_mode {
            NsMode::Target => Some(self.target_pid_ns(&c.pod_id, &c.spec.security.target_id)?),
            _ => None,
        };
        let files = read_spec_files(c).await?;
        let oci_binary = self
            .config
            .oci_runtimes
            .get(&sandbox.spec.runtime_handler)
            .cloned();
        // An OCI runtime mounts the rootfs as the pod's mapped root (see
        // `userns_rootfs`); the built-in launcher mounts it as host root, in the
        // container's own mount namespace.
        let rootfs = match (
            &oci_binary,
            sandbox.spec.userns.as_ref().and_then(|u| u.host_root()),
        ) {
            (Some(_), Some(root)) => super::userns_rootfs::prepare(&self.config.state_dir, &id, root)
                .map_err(|e| match e {
                    super::userns_rootfs::RootfsError::Io((op, path, source)) => RuntimeError::Io {
                        kind: "container",
                        id: id.clone(),
                        op,
                        path,
                        source,
                    },
                    super::userns_rootfs::RootfsError::NotTraversable { path, mode, ids } => {
                        RuntimeError::Unsupported {
                            what: "a pod user namespace with an oci handler",
                            reason: format!(
                                "the pod's root (host uid {} gid {}) cannot traverse {} (mode {mode:o}) to reach its rootfs under {}: every directory above it must be searchable (o+x)",
                                ids.0,
                                ids.1,
                                path.display(),
                                self.config.state_dir.display()
                            ),
                        }
                    }
                })?,
            _ => c.dir.join("rootfs"),
        };
        let input = SpecInput {
            target_pid_ns,
            container: container_spec,
            image: c.image.config.clone(),
            pod: PodContext {
                sandbox_id: sandbox.id.clone(),
                net_ns: pin("net"),
                ipc_ns: pin("ipc"),
                uts_ns: pin("uts"),
                pid_ns: pin("pid"),
                hostname: fs::read_to_string(sandbox.pod_dir.join("hostname"))
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
                hosts_file: Some(sandbox.pod_dir.join("hosts")),
                hostname_file: Some(sandbox.pod_dir.join("hostname")),
                resolv_conf: Some(sandbox.pod_dir.join("resolv.conf")),
                shm_dir: (ns.ipc != NsMode::Node).then(|| sandbox.shm_dir()),
                sysctls: sandbox.spec.sysctls.clone(),
                cgroup_path: c.cgroup.clone(),
                host_network: ns.network == NsMode::Node,
                privileged: sandbox.spec.privileged,
                userns: sandbox
                    .spec
                    .userns
                    .clone()
                    .and_then(|u| pin("user").map(|p| (p, u))),
            },
            host: self.host.clone(),
            rootfs,
            etc_passwd: files.passwd,
            etc_group: files.group,
            volumes_root,
            // A Localhost profile is a file on the host; its contents go into the spec.
            seccomp_localhost: files.seccomp,
        };
        let oci = self.oci_runtime(sandbox);
        let mut spec = generate_spec(&input, &HostDevices::default()).map_err(spec_error)?;
        // Made with its limits in one step: a systemd scope takes them as properties.
        let resources = spec.linux().as_ref().and_then(|l| l.resources().clone());
        let cg_err = |source| RuntimeError::Cgroup {
            kind: "container",
            id: id.clone(),
            source,
        };
        self.make_container_cgroup(&id, &c.cgroup, resources.as_ref())
            .await
            .map_err(cg_err)?;
        cgroups.set_oom_group(&c.cgroup).map_err(cg_err)?;
        if oci.is_some()
            && let Some(linux) = spec.linux_mut()
        {
            // runc's cgroupfs driver takes a relative cgroupsPath as relative to its
            // own cgroup; ours are relative to the hierarchy roots.
            linux.set_cgroups_path(Some(PathBuf::from(format!("/{}", c.cgroup))));
            // Pod sysctls are the pod's namespaces' own, already set there by the
            // monitor when it made them. runc would refuse them anyway: it runs inside
            // the pod's network namespace (the monitor's), so its "not the host's
            // namespace" check sees the pod's as its own host's.
            linux.set_sysctl(None);
        }
        c.user = spec.process().as_ref().map(|p| ContainerUser {
            uid: p.user().uid(),
            gid: p.user().gid(),
            additional_gids: p.user().additional_gids().clone().unwrap_or_default(),
        });
        self.ensure_apparmor_profile(c, &spec).await?;
        let spec_file = c.spec_file();
        fs::write(
            &spec_file,
            serde_json::to_vec_pretty(&spec).expect("spec serializes"),
        )
        .map_err(io("write", &spec_file))?;

        if c.spec.restore.is_some() {
            // Nothing runs until StartContainer restores it.
            c.state = ContainerState::Created;
            return self.commit_container(c, Some(ContainerState::Creating));
        }
        let req = self.monitor_create_request(c, sandbox, None)?;
        let reply = self
            .order_monitor(
                &sandbox.monitor_socket(),
                &id,
                &req,
                crate::sandbox::CONTAINER_TIMEOUT,
            )
            .await?;
        c.pid = reply.pid;
        c.state = ContainerState::Created;
        self.commit_container(c, Some(ContainerState::Creating))
    }
}

impl SandboxManager {
    /// The pod's `oci` handler's runtime, or `None` for the built-in launcher.
    fn oci_runtime(&self, sandbox: &crate::sandbox::Sandbox) -> Option<Box<OciRuntime>> {
        self.config
            .oci_runtimes
            .get(&sandbox.spec.runtime_handler)
            .map(|binary| {
                Box::new(OciRuntime {
                    binary: binary.clone(),
                    root: self.config.state_dir.join("runc"),
                })
            })
    }

    /// What the pod's monitor is asked to make `c` from its generated spec: create it
    /// (waiting for StartContainer), or with `restore`, restore it from a checkpoint.
    pub(super) fn monitor_create_request(
        &self,
        c: &Container,
        sandbox: &crate::sandbox::Sandbox,
        restore: Option<RestoreImages>,
    ) -> Result<Request, RuntimeError> {
        Ok(Request::CreateContainer {
            id: c.id.clone(),
            spec: c.spec_file(),
            log_path: c.log_path.clone(),
            exit_file: c.exit_file(),
            cgroup_dirs: self.cgroups()?.dirs(&c.cgroup),
            overlay: Some(OverlayMount {
                layers_root: c.image.layers_root.clone(),
                lower: c.image.lower.clone(),
                upper: c.dir.join("upper"),
                work: c.dir.join("work"),
                idmap: sandbox.spec.userns.as_ref().map(|_| sandbox.pin("user")),
            }),
            stdin: c.spec.stdin,
            stdin_once: c.spec.stdin_once,
            tty: c.spec.tty,
            oci: self.oci_runtime(sandbox),
            max_log_line: self.config.max_log_line,
            restore,
        })
    }

    /// CRI `Mount.uidMappings`/`gidMappings` (KEP-127): kubelet sets them to the
    /// pod's own mappings for the volumes it idmaps ("It will use the same mappings
    /// the kubelet allocated for the user namespace"), so that files kubelet made as
    /// host root are the container's root's. Both launchers idmap the bind with the
    /// pod's pinned user namespace, so anything else (other mappings, no pod user
    /// namespace) is refused, naming the mount; so is an `oci` handler whose runtime
    /// would silently ignore the mappings (runc 1.1).
    fn check_idmapped_mounts(
        &self,
        spec: &ContainerSpec,
        sandbox: &crate::sandbox::Sandbox,
    ) -> Result<(), RuntimeError> {
        const FIELD: &str = "config.mounts[].uidMappings";
        for (i, m) in spec.mounts.iter().enumerate() {
            let Some(idmap) = &m.idmap else { continue };
            let text = |u: &crate::sandbox::UserNamespace| {
                format!(
                    "uids {:?} gids {:?}",
                    crate::sandbox::UserNamespace::map_text(&u.uids).trim(),
                    crate::sandbox::UserNamespace::map_text(&u.gids).trim()
                )
            };
            match &sandbox.spec.userns {
                None => {
                    return Err(RuntimeError::InvalidArgument {
                        field: FIELD,
                        reason: format!(
                            "mounts[{i}] is idmapped but the pod has no user namespace (userns_options mode POD)"
                        ),
                    });
                }
                Some(pod) if pod != idmap => {
                    return Err(RuntimeError::InvalidArgument {
                        field: FIELD,
                        reason: format!(
                            "mounts[{i}]: the mappings ({}) must be the pod's user namespace's ({}): the mount is idmapped with that namespace",
                            text(idmap),
                            text(pod)
                        ),
                    });
                }
                Some(_) => {}
            }
            let handler = &sandbox.spec.runtime_handler;
            if let Some(binary) = self.config.oci_runtimes.get(handler)
                && !self.config.oci_idmap.contains(handler)
            {
                return Err(RuntimeError::Unsupported {
                    what: "idmapped mounts with this runtime handler",
                    reason: format!(
                        "config.mounts[{i}].uidMappings: {} (handler {handler:?}) does not honour a mount's uidMappings/gidMappings (its `features` lacks linux.mountExtensions.idmap, which runc has from 1.2) and would mount without them",
                        binary.display()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The spec's AppArmor profile must be loaded before either launcher applies it:
    /// the kernel would fail the exec transition with a bare ENOENT after the
    /// container was made. `crust-default` is loaded here on first use; a Localhost
    /// profile missing is FAILED_PRECONDITION naming the profile and the field
    /// (containerd: "apparmor profile not found").
    async fn ensure_apparmor_profile(
        &self,
        c: &Container,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(), RuntimeError> {
        let Some(profile) = spec
            .process()
            .as_ref()
            .and_then(|p| p.apparmor_profile().clone())
        else {
            return Ok(());
        };
        let field = match c.spec.security.apparmor {
            super::SecurityProfile::Localhost(_) => {
                "config.linux.security_context.apparmor.localhost_ref"
            }
            _ => "config.linux.security_context.apparmor",
        };
        let apparmor = self.apparmor.clone();
        let name = profile.clone();
        let ensured = tokio::task::spawn_blocking(move || apparmor.ensure(&name, field))
            .await
            .unwrap_or_else(|e| {
                Err(crate::apparmor::AppArmorError::Load {
                    profile: profile.clone(),
                    parser: "apparmor_parser".into(),
                    reason: format!("loader task failed: {e}"),
                })
            })
            .map_err(|source| RuntimeError::AppArmor {
                id: c.id.clone(),
                source,
            })?;
        if ensured == crate::apparmor::Ensured::LoadedDefault {
            tracing::info!(container_id = %c.id, profile = %profile, "loaded the default AppArmor profile");
        }
        Ok(())
    }

    /// The PID namespace of `target_id` for `pid: TARGET` (CRI: "the container will be
    /// placed in the PID namespace of the container identified by target_id", which
    /// kubelet uses for ephemeral debug containers). The target must be a container of
    /// the same pod whose process exists, since its namespace lives only as long as
    /// its init.
    fn target_pid_ns(&self, pod_id: &str, target_id: &str) -> Result<PathBuf, RuntimeError> {
        const FIELD: &str = "config.linux.security_context.namespace_options.target_id";
        if target_id.is_empty() {
            return Err(RuntimeError::InvalidArgument {
                field: FIELD,
                reason: "is required when pid is TARGET".into(),
            });
        }
        let target = self.container_snapshot(&self.resolve_container(target_id)?)?;
        if target.pod_id != pod_id {
            return Err(RuntimeError::InvalidArgument {
                field: FIELD,
                reason: format!(
                    "container {} belongs to pod sandbox {}, not {pod_id}",
                    target.id, target.pod_id
                ),
            });
        }
        match target.pid {
            Some(pid) if target.state == ContainerState::Running && pid.is_alive() => {
                Ok(PathBuf::from(format!("/proc/{}/ns/pid", pid.pid)))
            }
            _ => Err(RuntimeError::ContainerState {
                id: target.id,
                state: target.state,
                wanted: "running (the target of pid TARGET)",
            }),
        }
    }
}
