//! [`generate_spec`]: one `oci_spec::runtime::Spec` from a container's CRI config, its
//! image config and its pod, as containerd's CRI plugin builds it
//! (`internal/cri/server/container_create*.go`, `internal/cri/opts`, `pkg/oci`).

use std::{collections::HashMap, path::PathBuf};

use oci_spec::runtime::{Linux, LinuxNamespace, LinuxNamespaceType, Process, Root, Spec, User};

use super::{
    ContainerSpec, DeviceLookup, ImageConfigView, NsMode, PodContext, SpecError, SpecInput, field,
    spec_devices, spec_mounts, spec_resources, spec_security, spec_user,
};

/// Annotation recording that `oom_score_adj` was raised to crustd's own; its value is
/// the score that was asked for.
pub const OOM_CLAMPED_ANNOTATION: &str = "io.crust.oom_score_adj.clamped";

/// The OCI runtime spec version we write. crun before 1.15 (Debian bookworm has 1.8)
/// refuses any 1.2.x with "unknown version specified", a prefix check; runc ignores
/// the field, and what we write is readable as 1.1 (containerd 1.7 writes 1.1.0 too).
const OCI_VERSION: &str = "1.1.0";

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The process arguments, by Docker's rules (moby `daemon/commit.go`, as containerd):
/// CRI `command` replaces the image Entrypoint and then drops its Cmd; CRI `args`
/// replace Cmd. An Entrypoint of `[""]` means none.
pub(crate) fn process_args(
    c: &ContainerSpec,
    image: &ImageConfigView,
) -> Result<Vec<String>, SpecError> {
    let mut command = c.command.clone();
    let mut args = c.args.clone();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone();
        }
        match &image.entrypoint {
            Some(ep) if !(ep.len() == 1 && ep[0].is_empty()) => command = ep.clone(),
            _ => {}
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(SpecError::invalid(
            "config.command",
            "no command given and the image has no Entrypoint or Cmd",
        ));
    }
    Ok(command)
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

fn set_env(env: &mut Vec<String>, entry: String) {
    let key = env_key(&entry).to_string();
    match env.iter_mut().find(|e| env_key(e) == key) {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
}

/// The environment: the default PATH and HOSTNAME, then the image's, then CRI's, a later
/// value replacing an earlier one in place; HOME from /etc/passwd when nobody set it
/// (what runc does at start, so both launchers agree).
pub(crate) fn process_env(
    c: &ContainerSpec,
    image: &ImageConfigView,
    pod: &PodContext,
    home: &str,
) -> Result<Vec<String>, SpecError> {
    let mut env = vec![DEFAULT_PATH.to_string()];
    if !pod.hostname.is_empty() {
        env.push(format!("HOSTNAME={}", pod.hostname));
    }
    for e in &image.env {
        set_env(&mut env, e.clone());
    }
    for (i, (k, v)) in c.envs.iter().enumerate() {
        if k.is_empty() || k.contains('=') {
            return Err(SpecError::invalid(
                format!("config.envs[{i}].key"),
                format!("{k:?} is not a variable name"),
            ));
        }
        set_env(&mut env, format!("{k}={v}"));
    }
    if !env.iter().any(|e| env_key(e) == "HOME") {
        env.push(format!("HOME={home}"));
    }
    Ok(env)
}

/// The working directory: CRI's, else the image's, else `/`.
pub(crate) fn process_cwd(
    c: &ContainerSpec,
    image: &ImageConfigView,
) -> Result<PathBuf, SpecError> {
    if !c.working_dir.is_empty() {
        return spec_mounts::clean_absolute(&c.working_dir, "config.working_dir");
    }
    if !image.working_dir.is_empty() {
        return spec_mounts::clean_absolute(&image.working_dir, "image.config.WorkingDir");
    }
    Ok(PathBuf::from("/"))
}

fn ns(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut n = LinuxNamespace::default();
    n.set_typ(typ);
    n.set_path(path);
    n
}

/// New mount and (unless shared) PID namespaces; the pod's net, IPC and UTS joined by
/// their pins; the host's where the pod has none (NODE). A cgroup namespace on cgroup v2
/// for unprivileged containers, as containerd.
pub(crate) fn namespaces(
    input: &SpecInput,
    privileged: bool,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let pod = &input.pod;
    let sc = &input.container.security;
    let mut out = vec![ns(LinuxNamespaceType::Mount, None)];
    // First, as runc joins it first (nsexec: "always join the user namespace
    // first"); the built-in launcher joins it last, see `launch`.
    if let Some((path, _)) = &pod.userns {
        out.insert(0, ns(LinuxNamespaceType::User, Some(path.clone())));
    }
    let net = if pod.host_network {
        None
    } else {
        pod.net_ns.clone()
    };
    if let Some(p) = net {
        out.push(ns(LinuxNamespaceType::Network, Some(p)));
    }
    if let Some(p) = &pod.ipc_ns {
        out.push(ns(LinuxNamespaceType::Ipc, Some(p.clone())));
    }
    if let Some(p) = &pod.uts_ns {
        out.push(ns(LinuxNamespaceType::Uts, Some(p.clone())));
    }
    let pid_field = || format!("{}.namespace_options.pid", field::SC);
    match sc.pid_mode {
        NsMode::Container => out.push(ns(LinuxNamespaceType::Pid, None)),
        NsMode::Pod => match &pod.pid_ns {
            Some(p) => out.push(ns(LinuxNamespaceType::Pid, Some(p.clone()))),
            None => {
                return Err(SpecError::invalid(
                    pid_field(),
                    "POD, but the pod has no shared PID namespace",
                ));
            }
        },
        NsMode::Target => match &input.target_pid_ns {
            Some(p) => out.push(ns(LinuxNamespaceType::Pid, Some(p.clone()))),
            None => {
                return Err(SpecError::invalid(
                    format!("{}.namespace_options.target_id", field::SC),
                    format!(
                        "the PID namespace of target {:?} is not known",
                        sc.target_id
                    ),
                ));
            }
        },
        NsMode::Node => {}
    }
    if input.host.cgroup_v2 && !privileged {
        out.push(ns(LinuxNamespaceType::Cgroup, None));
    }
    Ok(out)
}

pub(crate) fn id_mappings(
    maps: &[crate::sandbox::IdMapping],
) -> Vec<oci_spec::runtime::LinuxIdMapping> {
    maps.iter()
        .map(|m| {
            oci_spec::runtime::LinuxIdMappingBuilder::default()
                .host_id(m.host_id)
                .container_id(m.container_id)
                .size(m.length)
                .build()
                .expect("all fields set")
        })
        .collect()
}

/// The signal that stops the container: CRI's, else the image's, else SIGTERM.
pub fn stop_signal(c: &ContainerSpec, image: &ImageConfigView) -> String {
    c.stop_signal
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| (!image.stop_signal.is_empty()).then(|| image.stop_signal.clone()))
        .unwrap_or_else(|| "SIGTERM".to_string())
}

/// Generates the spec both launchers run.
///
/// Reads nothing from the host but device nodes, through `devices`. The caller supplies
/// the image's /etc/passwd and /etc/group, a Localhost seccomp profile's contents, the
/// target container's PID namespace for `pid: TARGET`, and creates the directories
/// [`super::image_volumes`] lists.
///
/// ```
/// use crust_runtime::container::{generate_spec, ContainerSpec, HostDevices, NsMode, SpecInput};
/// let mut container = ContainerSpec { command: vec!["/bin/true".into()], ..Default::default() };
/// container.security.pid_mode = NsMode::Container;
/// let input = SpecInput {
///     container,
///     rootfs: "/rootfs".into(),
///     ..Default::default()
/// };
/// let spec = generate_spec(&input, &HostDevices::default()).unwrap();
/// assert_eq!(spec.process().as_ref().unwrap().args().as_ref().unwrap(), &["/bin/true"]);
/// ```
pub fn generate_spec(input: &SpecInput, devices: &dyn DeviceLookup) -> Result<Spec, SpecError> {
    let c = &input.container;
    let sc = &c.security;
    let privileged = sc.privileged;
    if privileged && !input.pod.privileged {
        return Err(SpecError::invalid(
            format!("{}.privileged", field::SC),
            "the pod does not allow privileged containers",
        ));
    }

    let args = process_args(c, &input.image)?;
    let user = spec_user::resolve_user(
        sc,
        &input.image.user,
        input.etc_passwd.as_deref(),
        input.etc_group.as_deref(),
    )?;
    let env = process_env(c, &input.image, &input.pod, &user.home)?;
    let cwd = process_cwd(c, &input.image)?;
    let (mut caps, ambient) = spec_security::capabilities(
        privileged,
        sc.capabilities.as_ref(),
        input.host.capabilities_mask,
    )?;
    // On cgroup v2 the device cgroup is an eBPF filter crust loads (see
    // cgroup::devices_bpf). Where the kernel refuses it, nothing would stop a node
    // made in the container's /dev tmpfs from reaching a host device (the rootfs
    // itself is nodev): CAP_MKNOD is then left out of the default set, unless the
    // container asks for it by name.
    let asked_mknod = sc.capabilities.as_ref().is_some_and(|c| {
        c.add
            .iter()
            .any(|n| n.trim_start_matches("CAP_").eq_ignore_ascii_case("MKNOD"))
    });
    if input.host.cgroup_v2 && !input.host.device_filter && !privileged && !asked_mknod {
        caps.remove(&oci_spec::runtime::Capability::Mknod);
    }
    let seccomp = spec_security::seccomp(sc, &caps, input.seccomp_localhost.as_deref())?;
    // Checked even when privileged: a profile the host cannot apply is an error, not
    // silently dropped (containerd's GenerateApparmorSpecOpts).
    let apparmor = spec_security::apparmor(sc, input.host.host_has_apparmor)?;
    let selinux = spec_security::selinux(sc, input.host.host_has_selinux)?;
    let (masked, readonly) = spec_security::masked_and_readonly(sc)?;
    let (oom, clamped_from) =
        spec_resources::oom_score_adj(c.resources.oom_score_adj, input.host.min_oom_score_adj)?;
    let (mounts, rootfs_propagation) = spec_mounts::mounts(input, privileged)?;

    let mut spec_user = User::default();
    spec_user.set_uid(user.uid);
    spec_user.set_gid(user.gid);
    spec_user.set_additional_gids(Some(user.additional_gids.clone()));

    let mut process = Process::default();
    process.set_terminal(Some(c.tty));
    process.set_console_size(None);
    process.set_user(spec_user);
    process.set_args(Some(args));
    process.set_command_line(None);
    process.set_env(Some(env));
    process.set_cwd(cwd);
    process.set_capabilities(Some(spec_security::linux_capabilities(&caps, &ambient)));
    process.set_rlimits(spec_resources::rlimits(&input.host.rlimits)?);
    process.set_no_new_privileges(Some(sc.no_new_privs));
    process.set_apparmor_profile(apparmor);
    process.set_oom_score_adj(Some(oom));
    process.set_selinux_label(selinux);
    process.set_io_priority(None);
    process.set_scheduler(None);
    process.set_exec_cpu_affinity(None);

    // Devices: the defaults, then all host devices (privileged) or the CRI ones.
    let mut resources = spec_resources::resources(&c.resources, &input.host)?;
    let mut rules = spec_devices::default_cgroup_rules();
    let devs = if privileged {
        rules.push(spec_devices::rule(true, None, None, None, "rwm"));
        spec_devices::merge_devices(
            spec_devices::default_devices(),
            spec_devices::privileged_devices(devices)?,
        )
    } else {
        let (cri_devs, cri_rules) = spec_devices::cri_devices(&c.devices, devices)?;
        rules.extend(cri_rules);
        spec_devices::merge_devices(spec_devices::default_devices(), cri_devs)
    };
    resources.set_devices(Some(rules));

    let mut linux = Linux::default();
    linux.set_net_devices(None);
    // With a pod user namespace the runtime joins it (by path) rather than making
    // one; runc still wants the mappings (it checks they are there and uses them for
    // the ids it chowns, such as the console).
    let (uids, gids) = match &input.pod.userns {
        Some((_, u)) => (Some(id_mappings(&u.uids)), Some(id_mappings(&u.gids))),
        None => (None, None),
    };
    linux.set_uid_mappings(uids);
    linux.set_gid_mappings(gids);
    linux.set_sysctl(spec_resources::sysctls(&input.pod.sysctls));
    linux.set_resources(Some(resources));
    linux.set_cgroups_path(
        (!input.pod.cgroup_path.is_empty()).then(|| PathBuf::from(&input.pod.cgroup_path)),
    );
    linux.set_namespaces(Some(namespaces(input, privileged)?));
    linux.set_devices(Some(devs));
    linux.set_seccomp(seccomp);
    linux.set_rootfs_propagation(rootfs_propagation);
    linux.set_masked_paths(Some(masked));
    linux.set_readonly_paths(Some(readonly));
    linux.set_mount_label(None);
    linux.set_intel_rdt(None);
    linux.set_memory_policy(None);
    linux.set_personality(None);
    linux.set_time_offsets(None);

    let mut root = Root::default();
    root.set_path(input.rootfs.clone());
    root.set_readonly(Some(sc.readonly_rootfs));

    let mut annotations = HashMap::from([
        (
            "io.kubernetes.cri.container-type".to_string(),
            "container".to_string(),
        ),
        (
            "io.kubernetes.cri.container-name".to_string(),
            c.metadata.name.clone(),
        ),
        (
            "io.kubernetes.cri.sandbox-id".to_string(),
            input.pod.sandbox_id.clone(),
        ),
    ]);
    if let Some(from) = clamped_from {
        annotations.insert(OOM_CLAMPED_ANNOTATION.to_string(), from.to_string());
    }

    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_string());
    spec.set_root(Some(root));
    spec.set_mounts(Some(mounts));
    spec.set_process(Some(process));
    // The container shares the pod's UTS namespace, whose hostname the pod set.
    spec.set_hostname(None);
    spec.set_domainname(None);
    spec.set_hooks(super::spec_hooks::oci_hooks(&c.hooks));
    spec.set_annotations(Some(annotations));
    spec.set_linux(Some(linux));
    spec.set_solaris(None);
    spec.set_windows(None);
    spec.set_vm(None);
    spec.set_zos(None);
    Ok(spec)
}
