//! CRI container messages <-> the runtime's domain types.

use std::collections::BTreeMap;

use crust_proto::runtime::v1 as cri;
use crust_runtime::container::{
    CapabilitiesSpec, Container, ContainerFilter, ContainerMetadata, ContainerSpec, ContainerState,
    DeviceSpec, HugepageLimit, ImageConfigView, ImageMount, MountSpec, Propagation, ResourcesSpec,
    SecurityContextSpec, SecurityProfile, SelinuxOptions, SupplementalGroupsPolicy,
};
use crust_runtime::sandbox::NsMode;

use crate::error::ApiError;

fn profile(p: Option<&cri::SecurityProfile>) -> SecurityProfile {
    match p {
        None => SecurityProfile::Unconfined,
        Some(p) => match cri::security_profile::ProfileType::try_from(p.profile_type) {
            Ok(cri::security_profile::ProfileType::Unconfined) => SecurityProfile::Unconfined,
            Ok(cri::security_profile::ProfileType::Localhost) => {
                SecurityProfile::Localhost(p.localhost_ref.clone())
            }
            _ => SecurityProfile::RuntimeDefault,
        },
    }
}

/// The AppArmor profile: the `apparmor` field, else the deprecated `apparmor_profile`
/// string (CRI: "runtime/default", "unconfined", "localhost/<name>"). Neither set is
/// the runtime's default, as in containerd (kubernetes#51746: a pod that names no
/// profile gets the default one, where the host has AppArmor).
#[allow(deprecated)]
fn apparmor(sc: &cri::LinuxContainerSecurityContext) -> Result<SecurityProfile, ApiError> {
    if sc.apparmor.is_some() {
        return Ok(profile(sc.apparmor.as_ref()));
    }
    crust_runtime::apparmor::parse_deprecated(&sc.apparmor_profile).ok_or_else(|| {
        ApiError::InvalidArgument {
            field: "config.linux.security_context.apparmor_profile",
            reason: format!(
                "{:?} is none of runtime/default, unconfined, localhost/<name>",
                crust_runtime::excerpt(&sc.apparmor_profile)
            ),
        }
    })
}

fn ns_mode(mode: i32) -> NsMode {
    match cri::NamespaceMode::try_from(mode) {
        Ok(cri::NamespaceMode::Container) => NsMode::Container,
        Ok(cri::NamespaceMode::Node) => NsMode::Node,
        Ok(cri::NamespaceMode::Target) => NsMode::Target,
        _ => NsMode::Pod,
    }
}

/// `ContainerConfig` -> the runtime's spec. Features the built-in launcher does not
/// have yet are refused with UNIMPLEMENTED naming the field, never ignored.
pub fn container_spec(config: cri::ContainerConfig) -> Result<ContainerSpec, ApiError> {
    if config.metadata.is_none() {
        return Err(ApiError::InvalidArgument {
            field: "config.metadata",
            reason: "is required".into(),
        });
    }
    crate::convert_limits::container_config(&config)?;
    let metadata = config.metadata.expect("checked above");
    let linux = config.linux.unwrap_or_default();
    let sc = linux.security_context.unwrap_or_default();
    let seccomp = profile(sc.seccomp.as_ref());
    let apparmor = apparmor(&sc)?;
    let r = linux.resources.unwrap_or_default();
    let ns = sc.namespace_options.clone().unwrap_or_default();
    let unsupported = |what: &'static str, field: &str| {
        Err(ApiError::Unsupported {
            what,
            reason: format!("{field} is not supported yet"),
        })
    };
    for (i, m) in config.mounts.iter().enumerate() {
        let image = m.image.as_ref().is_some_and(|i| !i.image.is_empty());
        if image && (!m.uid_mappings.is_empty() || !m.gid_mappings.is_empty()) {
            return unsupported(
                "idmapped image volumes",
                &format!("config.mounts[{i}].uidMappings/gidMappings with an image"),
            );
        }
        crate::convert_userns::mount_idmap(i, &m.uid_mappings, &m.gid_mappings)?;
        // CRI: with `image` set, "host_path should be unset"; the sub path is "only
        // necessary if the above image field is set".
        if image && !m.host_path.is_empty() {
            return Err(ApiError::InvalidArgument {
                field: "config.mounts[].host_path",
                reason: format!("mounts[{i}] sets both host_path and image"),
            });
        }
        if !image && !m.image_sub_path.is_empty() {
            return Err(ApiError::InvalidArgument {
                field: "config.mounts[].image_sub_path",
                reason: format!("mounts[{i}] has an image_sub_path but no image"),
            });
        }
    }
    let userns = crate::convert_userns::userns(
        "config.linux.security_context.namespace_options.userns_options",
        ns.userns_options.as_ref(),
    )?;
    if cri::NamespaceMode::try_from(ns.pid).is_err() {
        return Err(ApiError::InvalidArgument {
            field: "config.linux.security_context.namespace_options.pid",
            reason: format!("unknown namespace mode {}", ns.pid),
        });
    }
    Ok(ContainerSpec {
        metadata: ContainerMetadata {
            name: metadata.name,
            attempt: metadata.attempt,
        },
        command: config.command,
        args: config.args,
        working_dir: config.working_dir,
        envs: config
            .envs
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect(),
        mounts: config
            .mounts
            .into_iter()
            .enumerate()
            .map(|(i, m)| MountSpec {
                idmap: crate::convert_userns::mount_idmap(i, &m.uid_mappings, &m.gid_mappings)
                    .expect("checked above"),
                container_path: m.container_path,
                host_path: m.host_path,
                readonly: m.readonly,
                propagation: match cri::MountPropagation::try_from(m.propagation) {
                    Ok(cri::MountPropagation::PropagationHostToContainer) => {
                        Propagation::HostToContainer
                    }
                    Ok(cri::MountPropagation::PropagationBidirectional) => {
                        Propagation::Bidirectional
                    }
                    _ => Propagation::Private,
                },
                recursive_read_only: m.recursive_read_only,
                // Resolved to the image's layers by CreateContainer.
                image: m.image.filter(|i| !i.image.is_empty()).map(|i| ImageMount {
                    reference: i.image,
                    sub_path: m.image_sub_path,
                    ..Default::default()
                }),
            })
            .collect(),
        devices: config
            .devices
            .into_iter()
            .map(|d| DeviceSpec {
                container_path: d.container_path,
                host_path: d.host_path,
                permissions: d.permissions,
            })
            .collect(),
        labels: config.labels.into_iter().collect(),
        annotations: config.annotations.into_iter().collect(),
        log_path: config.log_path,
        stdin: config.stdin,
        stdin_once: config.stdin_once,
        tty: config.tty,
        resources: resources(r),
        security: SecurityContextSpec {
            capabilities: sc.capabilities.map(|c| CapabilitiesSpec {
                add: c.add_capabilities,
                drop: c.drop_capabilities,
                add_ambient: c.add_ambient_capabilities,
            }),
            privileged: sc.privileged,
            pid_mode: ns_mode(ns.pid),
            target_id: ns.target_id,
            run_as_user: sc.run_as_user.map(|v| v.value),
            run_as_group: sc.run_as_group.map(|v| v.value),
            run_as_username: sc.run_as_username,
            readonly_rootfs: sc.readonly_rootfs,
            supplemental_groups: sc.supplemental_groups,
            supplemental_groups_policy: match cri::SupplementalGroupsPolicy::try_from(
                sc.supplemental_groups_policy,
            ) {
                Ok(cri::SupplementalGroupsPolicy::Strict) => SupplementalGroupsPolicy::Strict,
                _ => SupplementalGroupsPolicy::Merge,
            },
            no_new_privs: sc.no_new_privs,
            masked_paths: sc.masked_paths,
            readonly_paths: sc.readonly_paths,
            seccomp,
            apparmor,
            selinux: sc
                .selinux_options
                .map(|o| SelinuxOptions {
                    user: o.user,
                    role: o.role,
                    r#type: o.r#type,
                    level: o.level,
                })
                .filter(|o| !o.is_empty()),
            userns,
        },
        // Only CDI devices bring hooks; applied after conversion.
        hooks: Vec::new(),
        // Set by CreateContainer when `image.image` is a checkpoint archive.
        restore: None,
        stop_signal: match cri::Signal::try_from(config.stop_signal) {
            Ok(cri::Signal::RuntimeDefault) | Err(_) => None,
            Ok(sig) => Some(sig.as_str_name().to_string()),
        },
    })
}

/// CRI `LinuxContainerResources` -> the runtime's form.
pub fn resources(r: cri::LinuxContainerResources) -> ResourcesSpec {
    ResourcesSpec {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_in_bytes,
        memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
        cpuset_cpus: r.cpuset_cpus,
        cpuset_mems: r.cpuset_mems,
        pids_limit: None,
        hugepage_limits: r
            .hugepage_limits
            .into_iter()
            .map(|h| HugepageLimit {
                page_size: h.page_size,
                limit: h.limit,
            })
            .collect(),
        unified: r.unified.into_iter().collect(),
        oom_score_adj: r.oom_score_adj,
    }
}

fn cri_resources(r: &ResourcesSpec) -> cri::LinuxContainerResources {
    cri::LinuxContainerResources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_in_bytes,
        memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|h| cri::HugepageLimit {
                page_size: h.page_size.clone(),
                limit: h.limit,
            })
            .collect(),
        unified: r
            .unified
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        oom_score_adj: r.oom_score_adj,
    }
}

/// The image store's config, as the spec generator reads it.
pub fn image_config(c: &crust_image::ImageConfig) -> ImageConfigView {
    ImageConfigView {
        entrypoint: (!c.entrypoint.is_empty()).then(|| c.entrypoint.clone()),
        cmd: c.cmd.clone(),
        env: c.env.clone(),
        working_dir: c.working_dir.clone(),
        user: c.user.clone(),
        volumes: c.volumes.clone(),
        stop_signal: c.stop_signal.clone(),
    }
}

pub fn state(s: ContainerState) -> i32 {
    match s {
        ContainerState::Creating | ContainerState::Created => cri::ContainerState::ContainerCreated,
        ContainerState::Running => cri::ContainerState::ContainerRunning,
        ContainerState::Exited => cri::ContainerState::ContainerExited,
    }
    .into()
}

fn map(m: &BTreeMap<String, String>) -> std::collections::HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn image_spec(c: &Container) -> cri::ImageSpec {
    cri::ImageSpec {
        image: c.image.reference.clone(),
        ..Default::default()
    }
}

/// The short form ListContainers returns.
pub fn container(c: &Container) -> cri::Container {
    cri::Container {
        id: c.id.clone(),
        pod_sandbox_id: c.pod_id.clone(),
        metadata: Some(cri::ContainerMetadata {
            name: c.spec.metadata.name.clone(),
            attempt: c.spec.metadata.attempt,
        }),
        image: Some(image_spec(c)),
        image_ref: c.image.id.clone(),
        state: state(c.state),
        created_at: c.created_at,
        labels: map(&c.spec.labels),
        annotations: map(&c.spec.annotations),
        image_id: c.image.id.clone(),
    }
}

/// The full form ContainerStatus returns.
pub fn container_status(c: &Container) -> cri::ContainerStatus {
    cri::ContainerStatus {
        id: c.id.clone(),
        metadata: Some(cri::ContainerMetadata {
            name: c.spec.metadata.name.clone(),
            attempt: c.spec.metadata.attempt,
        }),
        state: state(c.state),
        created_at: c.created_at,
        started_at: c.started_at,
        finished_at: c.finished_at,
        exit_code: c.exit_code,
        image: Some(image_spec(c)),
        image_ref: c.image.id.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        labels: map(&c.spec.labels),
        annotations: map(&c.spec.annotations),
        mounts: c
            .spec
            .mounts
            .iter()
            .map(|m| cri::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                propagation: match m.propagation {
                    Propagation::Private => cri::MountPropagation::PropagationPrivate,
                    Propagation::HostToContainer => {
                        cri::MountPropagation::PropagationHostToContainer
                    }
                    Propagation::Bidirectional => cri::MountPropagation::PropagationBidirectional,
                } as i32,
                recursive_read_only: m.recursive_read_only,
                image: m.image.as_ref().map(|i| cri::ImageSpec {
                    image: i.reference.clone(),
                    ..Default::default()
                }),
                image_sub_path: m
                    .image
                    .as_ref()
                    .map(|i| i.sub_path.clone())
                    .unwrap_or_default(),
                ..Default::default()
            })
            .collect(),
        user: c.user.as_ref().map(|u| cri::ContainerUser {
            linux: Some(cri::LinuxContainerUser {
                uid: u.uid.into(),
                gid: u.gid.into(),
                supplemental_groups: u.additional_gids.iter().map(|&g| g.into()).collect(),
            }),
        }),
        // The signal StopContainer sends: the container's, else the image's, else
        // SIGTERM (never RUNTIME_DEFAULT once decided).
        stop_signal: signal(&crust_runtime::container::stop_signal(
            &c.spec,
            &c.image.config,
        )) as i32,
        log_path: c.log_path.display().to_string(),
        image_id: c.image.id.clone(),
        resources: Some(cri::ContainerResources {
            linux: Some(cri_resources(&c.spec.resources)),
            windows: None,
        }),
    }
}

/// A stop signal's name (`SIGINT`, `INT`) as CRI's enum; RUNTIME_DEFAULT for what it
/// has no value for (a number, `SIGRTMIN+3`).
fn signal(name: &str) -> cri::Signal {
    let upper = name.to_ascii_uppercase();
    cri::Signal::from_str_name(&upper)
        .or_else(|| cri::Signal::from_str_name(&format!("SIG{upper}")))
        .unwrap_or(cri::Signal::RuntimeDefault)
}

/// `ContainerFilter` -> the runtime's filter.
pub fn filter(f: Option<cri::ContainerFilter>) -> ContainerFilter {
    let f = f.unwrap_or_default();
    ContainerFilter {
        id: f.id,
        pod_id: f.pod_sandbox_id,
        labels: f.label_selector.into_iter().collect(),
        state: f
            .state
            .map(|s| match cri::ContainerState::try_from(s.state) {
                Ok(cri::ContainerState::ContainerRunning) => ContainerState::Running,
                Ok(cri::ContainerState::ContainerExited) => ContainerState::Exited,
                _ => ContainerState::Created,
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRI `apparmor` wins; without it the deprecated `apparmor_profile` string
    /// decides; neither is the runtime default (containerd's reading).
    #[test]
    #[allow(deprecated)]
    fn apparmor_field_and_its_deprecated_string() {
        let sc = |apparmor: Option<(cri::security_profile::ProfileType, &str)>, old: &str| {
            cri::LinuxContainerSecurityContext {
                apparmor: apparmor.map(|(t, r)| cri::SecurityProfile {
                    profile_type: t as i32,
                    localhost_ref: r.into(),
                }),
                apparmor_profile: old.into(),
                ..Default::default()
            }
        };
        use cri::security_profile::ProfileType as T;
        let cases = [
            (
                "nothing: default",
                sc(None, ""),
                SecurityProfile::RuntimeDefault,
            ),
            (
                "new field wins",
                sc(Some((T::Unconfined, "")), "localhost/x"),
                SecurityProfile::Unconfined,
            ),
            (
                "new localhost",
                sc(Some((T::Localhost, "p")), ""),
                SecurityProfile::Localhost("p".into()),
            ),
            (
                "deprecated localhost",
                sc(None, "localhost/p"),
                SecurityProfile::Localhost("p".into()),
            ),
            (
                "deprecated unconfined",
                sc(None, "unconfined"),
                SecurityProfile::Unconfined,
            ),
            (
                "deprecated runtime/default",
                sc(None, "runtime/default"),
                SecurityProfile::RuntimeDefault,
            ),
        ];
        for (name, sc, want) in cases {
            assert_eq!(apparmor(&sc).unwrap(), want, "{name}");
        }
        let err = apparmor(&sc(None, "p")).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.to_string().contains("apparmor_profile") && err.to_string().contains("\"p\""),
            "{err}"
        );
    }
}
