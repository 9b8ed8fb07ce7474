//! `UpdateRuntimeConfig`: kubelet pushes the node's pod CIDR(s) once it knows them.

use std::net::IpAddr;

use crust_proto::runtime::v1::{UpdateRuntimeConfigRequest, UpdateRuntimeConfigResponse};

use crate::{daemon::Daemon, error::ApiError, node_config::NodeConfig};

const FIELD: &str = "runtime_config.network_config.pod_cidr";

/// Validates and persists the pod CIDRs. An empty or absent `pod_cidr` changes nothing,
/// as in containerd and CRI-O (kubelet sends it before the node has a CIDR). The new
/// value is on disk before it is visible, so a crash never loses an acknowledged update.
pub async fn update_runtime_config(
    daemon: &Daemon,
    req: UpdateRuntimeConfigRequest,
) -> Result<UpdateRuntimeConfigResponse, ApiError> {
    let pod_cidr = req
        .runtime_config
        .and_then(|c| c.network_config)
        .map(|n| n.pod_cidr)
        .unwrap_or_default();
    if pod_cidr.trim().is_empty() {
        return Ok(UpdateRuntimeConfigResponse {});
    }
    let cidrs = parse_cidrs(&pod_cidr)?;

    let mut node = daemon.node.lock().expect("node config lock poisoned");
    if node.pod_cidrs == cidrs {
        return Ok(UpdateRuntimeConfigResponse {});
    }
    let updated = NodeConfig {
        pod_cidrs: cidrs,
        updated_at: humantime::format_rfc3339(std::time::SystemTime::now()).to_string(),
    };
    daemon.store.put(&updated)?;
    tracing::info!(pod_cidrs = ?updated.pod_cidrs, "pod CIDR updated");
    *node = updated;
    Ok(UpdateRuntimeConfigResponse {})
}

/// Parses kubelet's comma-separated CIDR list (dual-stack sends one per family).
fn parse_cidrs(text: &str) -> Result<Vec<String>, ApiError> {
    let invalid = |reason: String| ApiError::InvalidArgument {
        field: FIELD,
        reason,
    };
    let mut cidrs = Vec::new();
    for part in text.split(',').map(str::trim) {
        let (addr, prefix) = part
            .split_once('/')
            .ok_or_else(|| invalid(format!("{part:?} is not a CIDR (no /prefix)")))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| invalid(format!("{part:?}: {addr:?} is not an IP address")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        match prefix.parse::<u8>() {
            Ok(p) if p <= max => {}
            _ => {
                return Err(invalid(format!(
                    "{part:?}: prefix length must be 0..={max}"
                )));
            }
        }
        cidrs.push(part.to_string());
    }
    if cidrs.len() > 2 {
        return Err(invalid(format!("{text:?}: at most one CIDR per IP family")));
    }
    Ok(cidrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing() {
        let ok: &[(&str, &[&str])] = &[
            ("10.88.0.0/16", &["10.88.0.0/16"]),
            ("10.88.0.0/16, fd00::/64", &["10.88.0.0/16", "fd00::/64"]),
            ("0.0.0.0/0", &["0.0.0.0/0"]),
        ];
        for (text, want) in ok {
            assert_eq!(
                parse_cidrs(text).unwrap(),
                want.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{text}"
            );
        }
        for bad in [
            "10.88.0.0",
            "10.88.0.0/33",
            "fd00::/129",
            "host/24",
            "10.0.0.0/x",
            "a/1,b/2,c/3",
            "1.1.1.0/24,2.2.2.0/24,3.3.3.0/24",
        ] {
            let err = parse_cidrs(bad).unwrap_err();
            assert!(err.to_string().contains(FIELD), "{bad}: {err}");
        }
    }
}
