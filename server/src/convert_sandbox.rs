//! CRI pod sandbox messages <-> the runtime's domain types.

use std::collections::{BTreeMap, HashMap};

use crust_proto::runtime::v1 as cri;
use crust_runtime::sandbox::{
    DnsConfig, IdMapping, Namespaces, NsMode, PortMapping, SandboxFilter, SandboxMetadata,
    SandboxSpec, SandboxView,
};

use crate::error::ApiError;

fn ns_mode(mode: i32) -> Result<NsMode, ApiError> {
    Ok(match cri::NamespaceMode::try_from(mode) {
        Ok(cri::NamespaceMode::Pod) => NsMode::Pod,
        Ok(cri::NamespaceMode::Container) => NsMode::Container,
        Ok(cri::NamespaceMode::Node) => NsMode::Node,
        Ok(cri::NamespaceMode::Target) => NsMode::Target,
        Err(_) => {
            return Err(ApiError::InvalidArgument {
                field: "config.linux.security_context.namespace_options",
                reason: format!("unknown namespace mode {mode}"),
            });
        }
    })
}

fn cri_mode(mode: NsMode) -> i32 {
    match mode {
        NsMode::Pod => cri::NamespaceMode::Pod,
        NsMode::Container => cri::NamespaceMode::Container,
        NsMode::Node => cri::NamespaceMode::Node,
        NsMode::Target => cri::NamespaceMode::Target,
    }
    .into()
}

fn cri_maps(maps: &[IdMapping]) -> Vec<cri::IdMapping> {
    maps.iter()
        .map(|m| cri::IdMapping {
            host_id: m.host_id,
            container_id: m.container_id,
            length: m.length,
        })
        .collect()
}

fn sorted(map: &HashMap<String, String>) -> BTreeMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Builds the runtime's spec from `PodSandboxConfig`. `handler` is already resolved.
pub fn sandbox_spec(
    config: Option<cri::PodSandboxConfig>,
    handler: String,
) -> Result<SandboxSpec, ApiError> {
    let config = config.ok_or(ApiError::InvalidArgument {
        field: "config",
        reason: "is required".into(),
    })?;
    if config.metadata.is_none() {
        return Err(ApiError::InvalidArgument {
            field: "config.metadata",
            reason: "is required".into(),
        });
    }
    crate::convert_limits::pod_config(&config)?;
    let metadata = config.metadata.expect("checked above");
    let linux = config.linux.unwrap_or_default();
    let ns = linux
        .security_context
        .as_ref()
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let userns = crate::convert_userns::userns(
        "config.linux.security_context.namespace_options.userns_options",
        ns.userns_options.as_ref(),
    )?;
    // Kept so CreateContainer can allow privileged containers in this pod only (CRI:
    // "privileged containers ... only if the sandbox is privileged").
    let privileged = linux
        .security_context
        .as_ref()
        .is_some_and(|s| s.privileged);
    let mut sysctls: Vec<(String, String)> = linux.sysctls.into_iter().collect();
    sysctls.sort();
    Ok(SandboxSpec {
        metadata: SandboxMetadata {
            name: metadata.name,
            uid: metadata.uid,
            namespace: metadata.namespace,
            attempt: metadata.attempt,
        },
        hostname: config.hostname,
        log_directory: config.log_directory,
        dns: config.dns_config.map(|d| DnsConfig {
            servers: d.servers,
            searches: d.searches,
            options: d.options,
        }),
        labels: sorted(&config.labels),
        annotations: sorted(&config.annotations),
        cgroup_parent: linux.cgroup_parent,
        namespaces: Namespaces {
            network: ns_mode(ns.network)?,
            pid: ns_mode(ns.pid)?,
            ipc: ns_mode(ns.ipc)?,
        },
        sysctls,
        runtime_handler: handler,
        port_mappings: config
            .port_mappings
            .iter()
            .map(|p| PortMapping {
                protocol: match cri::Protocol::try_from(p.protocol) {
                    Ok(cri::Protocol::Udp) => "udp",
                    Ok(cri::Protocol::Sctp) => "sctp",
                    _ => "tcp",
                }
                .into(),
                container_port: p.container_port,
                host_port: p.host_port,
                host_ip: p.host_ip.clone(),
            })
            .collect(),
        privileged,
        userns,
    })
}

fn metadata(m: &SandboxMetadata) -> cri::PodSandboxMetadata {
    cri::PodSandboxMetadata {
        name: m.name.clone(),
        uid: m.uid.clone(),
        namespace: m.namespace.clone(),
        attempt: m.attempt,
    }
}

fn state(ready: bool) -> i32 {
    if ready {
        cri::PodSandboxState::SandboxReady
    } else {
        cri::PodSandboxState::SandboxNotready
    }
    .into()
}

/// The short form ListPodSandbox returns.
pub fn pod_sandbox(v: &SandboxView) -> cri::PodSandbox {
    let s = &v.sandbox;
    cri::PodSandbox {
        id: s.id.clone(),
        metadata: Some(metadata(&s.spec.metadata)),
        state: state(v.ready),
        created_at: s.created_at,
        labels: s.spec.labels.clone().into_iter().collect(),
        annotations: s.spec.annotations.clone().into_iter().collect(),
        runtime_handler: s.spec.runtime_handler.clone(),
    }
}

/// The full form PodSandboxStatus returns.
pub fn pod_sandbox_status(v: &SandboxView) -> cri::PodSandboxStatus {
    let s = &v.sandbox;
    let n = s.spec.namespaces;
    cri::PodSandboxStatus {
        id: s.id.clone(),
        metadata: Some(metadata(&s.spec.metadata)),
        state: state(v.ready),
        created_at: s.created_at,
        network: Some(match &s.network {
            Some(net) => cri::PodSandboxNetworkStatus {
                ip: net.ips.first().cloned().unwrap_or_default(),
                additional_ips: net
                    .ips
                    .iter()
                    .skip(1)
                    .map(|ip| cri::PodIp { ip: ip.clone() })
                    .collect(),
            },
            None => cri::PodSandboxNetworkStatus::default(),
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(cri::NamespaceOption {
                    network: cri_mode(n.network),
                    pid: cri_mode(n.pid),
                    ipc: cri_mode(n.ipc),
                    // What the pod got, as sent (kubelet compares it with what it
                    // asked for).
                    userns_options: Some(match &s.spec.userns {
                        Some(u) => cri::UserNamespace {
                            mode: cri::NamespaceMode::Pod.into(),
                            uids: cri_maps(&u.uids),
                            gids: cri_maps(&u.gids),
                        },
                        None => cri::UserNamespace {
                            mode: cri::NamespaceMode::Node.into(),
                            ..Default::default()
                        },
                    }),
                    ..Default::default()
                }),
            }),
        }),
        labels: s.spec.labels.clone().into_iter().collect(),
        annotations: s.spec.annotations.clone().into_iter().collect(),
        runtime_handler: s.spec.runtime_handler.clone(),
    }
}

/// `PodSandboxFilter` -> the runtime's filter.
pub fn filter(f: Option<cri::PodSandboxFilter>) -> SandboxFilter {
    let f = f.unwrap_or_default();
    SandboxFilter {
        id: f.id,
        ready: f
            .state
            .map(|s| s.state == i32::from(cri::PodSandboxState::SandboxReady)),
        labels: sorted(&f.label_selector),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(privileged: Option<bool>) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "p".into(),
                namespace: "n".into(),
                uid: "u".into(),
                attempt: 0,
            }),
            linux: privileged.map(|privileged| cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    privileged,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn privileged_flag_is_kept() {
        for (name, sent, want) in [
            ("privileged pod", Some(true), true),
            ("unprivileged pod", Some(false), false),
            ("no linux config", None, false),
        ] {
            let spec = sandbox_spec(Some(config(sent)), "runc".into()).unwrap();
            assert_eq!(spec.privileged, want, "{name}");
        }
    }

    #[test]
    fn records_without_the_flag_load_unprivileged() {
        let spec = sandbox_spec(Some(config(Some(true))), "runc".into()).unwrap();
        let mut json = serde_json::to_value(&spec).unwrap();
        json.as_object_mut().unwrap().remove("privileged");
        let old: SandboxSpec = serde_json::from_value(json).unwrap();
        assert!(!old.privileged);
    }
}
