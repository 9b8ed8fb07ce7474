//! Setting a pod's network up and tearing it down with the CNI plugin chain of the
//! default network, the way kubelet users know it from containerd and CRI-O.

use std::{
    collections::BTreeMap,
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::{
    NetworkError,
    cni_config::{default_network, find_plugin},
    cni_exec::{Invocation, exec},
    quantity::parse_quantity,
};

/// A port the pod exposes on the host (CRI `PortMapping`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub container_port: i32,
    pub host_port: i32,
    /// Empty: every host address.
    pub host_ip: String,
}

/// DNS settings passed to plugins with the `dns` capability.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dns {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// Everything CNI needs to know about one pod.
#[derive(Debug, Clone, Default)]
pub struct PodNetworkRequest {
    pub pod_id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// The pod's pinned network namespace.
    pub netns: PathBuf,
    pub port_mappings: Vec<PortMapping>,
    pub annotations: BTreeMap<String, String>,
    pub dns: Option<Dns>,
    /// Node pod CIDRs (UpdateRuntimeConfig), for plugins with the `ipRanges` capability.
    pub pod_cidrs: Vec<String>,
}

/// The outcome of a successful ADD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodNetworkResult {
    pub network: String,
    /// The pod's addresses without prefix length, IPv4 first.
    pub ips: Vec<String>,
    /// The final plugin result, as returned.
    pub result: Value,
}

/// What is cached per pod under `<cache_dir>/<pod id>.json`: written before ADD (so a
/// crash mid-ADD can still be undone) and completed with the result after it. DEL uses
/// it, so teardown works after a crustd restart and even if the config dir changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheEntry {
    config: Value,
    netns: PathBuf,
    ifname: String,
    args: Vec<(String, String)>,
    runtime_config: Value,
    result: Option<Value>,
}

/// Runs CNI for pods. Cheap to share; every call reads the config directory afresh, so
/// adding, fixing or replacing the network config takes effect without a restart.
#[derive(Debug, Clone)]
pub struct CniManager {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    /// Where ADD results are cached (persistent: under crustd's root).
    pub cache_dir: PathBuf,
    /// Bound on each plugin invocation.
    pub plugin_timeout: Duration,
}

/// The pod's interface CNI sets up (`CNI_IFNAME`): the default interface of pod stats.
pub const POD_IFNAME: &str = "eth0";

impl CniManager {
    fn cache_path(&self, pod_id: &str) -> PathBuf {
        self.cache_dir.join(format!("{pod_id}.json"))
    }

    /// Replaces the pod's cache entry atomically; `durable` also fsyncs it.
    fn write_cache(
        &self,
        pod_id: &str,
        entry: &CacheEntry,
        durable: bool,
    ) -> Result<(), NetworkError> {
        let io = |source| NetworkError::Cache {
            path: self.cache_path(pod_id),
            source,
        };
        fs::create_dir_all(&self.cache_dir).map_err(io)?;
        let bytes = serde_json::to_vec_pretty(entry).expect("cache entry serializes");
        let name = format!("{pod_id}.json");
        if durable {
            crust_state::write_atomic(&self.cache_dir, &name, &bytes).map_err(io)
        } else {
            crust_state::replace_atomic(&self.cache_dir, &name, &bytes).map_err(io)
        }
    }

    /// Runs the chain's ADD for the pod. On failure, everything the chain set up is
    /// deleted again (DEL with the same arguments) before the error is returned.
    pub async fn setup(&self, req: &PodNetworkRequest) -> Result<PodNetworkResult, NetworkError> {
        let net = tracing::debug_span!(target: STEP, "cni.config")
            .in_scope(|| default_network(&self.conf_dir, &self.bin_dirs))?;
        let entry = CacheEntry {
            config: net.config.clone(),
            netns: req.netns.clone(),
            ifname: POD_IFNAME.into(),
            args: cni_args(req),
            runtime_config: runtime_config(req)?,
            result: None,
        };
        // Durable before ADD: the leases ADD makes outlive a reboot, and this entry is
        // what lets DEL release them then.
        tracing::debug_span!(target: STEP, "cni.cache_write")
            .in_scope(|| self.write_cache(&req.pod_id, &entry, true))?;
        match self.add_chain(&req.pod_id, &entry).await {
            Ok(result) => {
                let ips = pod_ips(&result);
                // The result only adds `prevResult` for DEL and CHECK: atomic, not
                // fsync'd. A power loss that loses it leaves the durable intent above
                // (or, for a torn file, the current config), and DEL without the
                // result is what the CNI spec asks plugins to cope with; CHECK needs a
                // ready pod, which no pod is after a reboot.
                tracing::debug_span!(target: STEP, "cni.cache_write").in_scope(|| {
                    self.write_cache(
                        &req.pod_id,
                        &CacheEntry {
                            result: Some(result.clone()),
                            ..entry
                        },
                        false,
                    )
                })?;
                tracing::info!(pod_id = %req.pod_id, network = %net.name, ips = ?ips, "pod network set up");
                Ok(PodNetworkResult {
                    network: net.name,
                    ips,
                    result,
                })
            }
            Err(error) => {
                if let Err(cleanup) = self.del_chain(&req.pod_id, &entry).await {
                    tracing::warn!(pod_id = %req.pod_id, error = %cleanup, "DEL after a failed ADD also failed");
                } else {
                    let _ = fs::remove_file(self.cache_path(&req.pod_id));
                }
                Err(error)
            }
        }
    }

    /// Runs the chain's DEL. Idempotent: once a DEL succeeded the cache entry is gone
    /// and later calls do nothing. Without a cache entry (it was never written), the
    /// current config is used, and with no config at all there is nothing to undo.
    pub async fn teardown(&self, pod_id: &str, netns: &Path) -> Result<(), NetworkError> {
        let entry = match fs::read(self.cache_path(pod_id)) {
            Ok(bytes) => serde_json::from_slice::<CacheEntry>(&bytes).ok(),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(NetworkError::Cache {
                    path: self.cache_path(pod_id),
                    source,
                });
            }
        };
        let entry = match entry {
            Some(entry) => entry,
            // A torn cache file: fall back to the current config.
            None => match default_network(&self.conf_dir, &self.bin_dirs) {
                Ok(net) => CacheEntry {
                    config: net.config,
                    netns: netns.to_path_buf(),
                    ifname: POD_IFNAME.into(),
                    args: vec![("IgnoreUnknown".into(), "1".into())],
                    runtime_config: json!({}),
                    result: None,
                },
                Err(_) => {
                    let _ = fs::remove_file(self.cache_path(pod_id));
                    return Ok(());
                }
            },
        };
        self.del_chain(pod_id, &entry).await?;
        match fs::remove_file(self.cache_path(pod_id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(source) => Err(NetworkError::Cache {
                path: self.cache_path(pod_id),
                source,
            }),
        }
    }

    /// Runs the chain's CHECK (CNI 0.4.0+) against the cached result: does the pod's
    /// network still look as ADD left it?
    pub async fn check(&self, pod_id: &str) -> Result<(), NetworkError> {
        let path = self.cache_path(pod_id);
        let bytes = fs::read(&path).map_err(|source| NetworkError::Cache {
            path: path.clone(),
            source,
        })?;
        let entry: CacheEntry =
            serde_json::from_slice(&bytes).map_err(|e| NetworkError::Cache {
                path: path.clone(),
                source: std::io::Error::new(ErrorKind::InvalidData, e),
            })?;
        for plugin in self.plugins(&entry) {
            let config = plugin_config(
                &entry.config,
                plugin,
                &entry.runtime_config,
                entry.result.as_ref(),
            );
            exec(
                &self.plugin_path(plugin)?,
                &config,
                &self.invocation("CHECK", pod_id, &entry),
            )
            .await?;
        }
        Ok(())
    }

    fn plugins<'a>(&self, entry: &'a CacheEntry) -> Vec<&'a Value> {
        entry
            .config
            .get("plugins")
            .and_then(Value::as_array)
            .map(|p| p.iter().collect())
            .unwrap_or_default()
    }

    async fn add_chain(&self, pod_id: &str, entry: &CacheEntry) -> Result<Value, NetworkError> {
        let mut prev: Option<Value> = None;
        for plugin in self.plugins(entry) {
            let config = plugin_config(&entry.config, plugin, &entry.runtime_config, prev.as_ref());
            let result = exec(
                &self.plugin_path(plugin)?,
                &config,
                &self.invocation("ADD", pod_id, entry),
            )
            .instrument(plugin_span(plugin, "ADD"))
            .await?;
            prev = Some(result);
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    async fn del_chain(&self, pod_id: &str, entry: &CacheEntry) -> Result<(), NetworkError> {
        let mut first_error = None;
        for plugin in self.plugins(entry).into_iter().rev() {
            let config = plugin_config(
                &entry.config,
                plugin,
                &entry.runtime_config,
                entry.result.as_ref(),
            );
            let outcome = match self.plugin_path(plugin) {
                Ok(path) => exec(&path, &config, &self.invocation("DEL", pod_id, entry))
                    .instrument(plugin_span(plugin, "DEL"))
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            // Go on with the rest of the chain: one plugin's failure must not leak what
            // the others set up.
            if let Err(e) = outcome {
                tracing::warn!(pod_id, error = %e, "CNI DEL failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn plugin_path(&self, plugin: &Value) -> Result<PathBuf, NetworkError> {
        let kind = plugin
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        find_plugin(kind, &self.bin_dirs).ok_or_else(|| NetworkError::PluginMissing {
            plugin: kind.to_string(),
            file: PathBuf::from("(cached config)"),
            dirs: self.bin_dirs.clone(),
        })
    }

    fn invocation<'a>(
        &'a self,
        command: &'static str,
        pod_id: &'a str,
        entry: &'a CacheEntry,
    ) -> Invocation<'a> {
        Invocation {
            command,
            container_id: pod_id,
            netns: &entry.netns,
            ifname: &entry.ifname,
            args: &entry.args,
            bin_dirs: &self.bin_dirs,
            timeout: self.plugin_timeout,
        }
    }
}

/// `CNI_ARGS` as kubelet-era runtimes pass them.
/// The target of step spans, for `CRUST_SPAN_TIMINGS` (see crustd's `span_timings`):
/// at debug level they are disabled callsites unless that file is asked for.
const STEP: &str = "crust::step";

/// The step span of one plugin invocation, named by its type and command.
fn plugin_span(plugin: &Value, command: &str) -> tracing::Span {
    tracing::debug_span!(
        target: STEP,
        "cni.plugin",
        detail = %format_args!(
            "{} {command}",
            plugin.get("type").and_then(serde_json::Value::as_str).unwrap_or("?")
        )
    )
}

fn cni_args(req: &PodNetworkRequest) -> Vec<(String, String)> {
    vec![
        ("IgnoreUnknown".into(), "1".into()),
        ("K8S_POD_NAMESPACE".into(), req.namespace.clone()),
        ("K8S_POD_NAME".into(), req.name.clone()),
        ("K8S_POD_INFRA_CONTAINER_ID".into(), req.pod_id.clone()),
        ("K8S_POD_UID".into(), req.uid.clone()),
    ]
}

/// All capability arguments for this pod; each plugin gets only those it declares.
fn runtime_config(req: &PodNetworkRequest) -> Result<Value, NetworkError> {
    let mut rc = serde_json::Map::new();
    let ports: Vec<Value> = req
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| {
            json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": if p.protocol.is_empty() { "tcp".to_string() } else { p.protocol.to_lowercase() },
                "hostIP": p.host_ip,
            })
        })
        .collect();
    rc.insert("portMappings".into(), Value::Array(ports));
    let rate = |key: &str| -> Result<Option<u64>, NetworkError> {
        req.annotations
            .get(key)
            .map(|v| {
                parse_quantity(v).map_err(|reason| NetworkError::InvalidAnnotation {
                    key: key.to_string(),
                    reason,
                })
            })
            .transpose()
    };
    let (ingress, egress) = (
        rate("kubernetes.io/ingress-bandwidth")?,
        rate("kubernetes.io/egress-bandwidth")?,
    );
    if ingress.is_some() || egress.is_some() {
        // Burst as kubelet always sent it: effectively unlimited.
        let mut bw = serde_json::Map::new();
        if let Some(r) = ingress {
            bw.insert("ingressRate".into(), json!(r));
            bw.insert("ingressBurst".into(), json!(i32::MAX));
        }
        if let Some(r) = egress {
            bw.insert("egressRate".into(), json!(r));
            bw.insert("egressBurst".into(), json!(i32::MAX));
        }
        rc.insert("bandwidth".into(), Value::Object(bw));
    }
    if let Some(dns) = &req.dns {
        rc.insert(
            "dns".into(),
            json!({"servers": dns.servers, "searches": dns.searches, "options": dns.options}),
        );
    }
    if !req.pod_cidrs.is_empty() {
        let ranges: Vec<Value> = req
            .pod_cidrs
            .iter()
            .map(|c| json!([{"subnet": c}]))
            .collect();
        rc.insert("ipRanges".into(), Value::Array(ranges));
    }
    Ok(Value::Object(rc))
}

/// The stdin of one plugin: its own object plus the list's `name` and `cniVersion`,
/// the capability arguments it declared in `capabilities`, and `prevResult`.
fn plugin_config(
    list: &Value,
    plugin: &Value,
    runtime_config: &Value,
    prev: Option<&Value>,
) -> Value {
    let mut config = plugin.as_object().cloned().unwrap_or_default();
    config.insert(
        "name".into(),
        list.get("name").cloned().unwrap_or(Value::Null),
    );
    config.insert(
        "cniVersion".into(),
        list.get("cniVersion").cloned().unwrap_or(Value::Null),
    );
    let declared: Vec<&String> = plugin
        .get("capabilities")
        .and_then(Value::as_object)
        .map(|caps| {
            caps.iter()
                .filter(|(_, on)| on.as_bool() == Some(true))
                .map(|(k, _)| k)
                .collect()
        })
        .unwrap_or_default();
    let mut rc = serde_json::Map::new();
    for cap in declared {
        if let Some(value) = runtime_config.get(cap) {
            rc.insert(cap.clone(), value.clone());
        }
    }
    if !rc.is_empty() {
        config.insert("runtimeConfig".into(), Value::Object(rc));
    }
    if let Some(prev) = prev.filter(|p| !p.is_null()) {
        config.insert("prevResult".into(), prev.clone());
    }
    Value::Object(config)
}

/// Pod addresses from a CNI result (0.4.0 or 1.0.0 form), IPv4 first, prefix dropped.
pub fn pod_ips(result: &Value) -> Vec<String> {
    let mut ips: Vec<String> = result
        .get("ips")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|ip| ip.get("address").and_then(Value::as_str))
                .map(|a| a.split('/').next().unwrap_or(a).to_string())
                .collect()
        })
        .unwrap_or_default();
    ips.sort_by_key(|ip| ip.contains(':'));
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_get_only_declared_capabilities_and_prev_result() {
        let list = json!({"cniVersion": "1.0.0", "name": "net", "plugins": []});
        let rc = json!({"portMappings": [{"hostPort": 80}], "dns": {"servers": []}});
        let bridge = json!({"type": "bridge"});
        let portmap =
            json!({"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": true}});
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let c = plugin_config(&list, &bridge, &rc, None);
        assert_eq!(c["name"], "net");
        assert_eq!(c["cniVersion"], "1.0.0");
        assert!(
            c.get("runtimeConfig").is_none(),
            "bridge declared nothing: {c}"
        );
        assert!(c.get("prevResult").is_none());
        let c = plugin_config(&list, &portmap, &rc, Some(&prev));
        assert_eq!(
            c["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 80}]}),
            "only declared and present ones"
        );
        assert_eq!(c["prevResult"], prev);
    }

    #[test]
    fn runtime_config_from_the_pod() {
        let req = PodNetworkRequest {
            port_mappings: vec![
                PortMapping {
                    protocol: "TCP".into(),
                    container_port: 80,
                    host_port: 12000,
                    host_ip: "".into(),
                },
                PortMapping {
                    protocol: "UDP".into(),
                    container_port: 53,
                    host_port: 0,
                    host_ip: "".into(),
                },
            ],
            annotations: BTreeMap::from([("kubernetes.io/ingress-bandwidth".into(), "10M".into())]),
            pod_cidrs: vec!["10.88.0.0/16".into()],
            ..Default::default()
        };
        let rc = runtime_config(&req).unwrap();
        assert_eq!(
            rc["portMappings"],
            json!([{"hostPort": 12000, "containerPort": 80, "protocol": "tcp", "hostIP": ""}])
        );
        assert_eq!(rc["bandwidth"]["ingressRate"], 10_000_000);
        assert!(rc["bandwidth"].get("egressRate").is_none());
        assert_eq!(rc["ipRanges"], json!([[{"subnet": "10.88.0.0/16"}]]));
        let bad = PodNetworkRequest {
            annotations: BTreeMap::from([("kubernetes.io/egress-bandwidth".into(), "fast".into())]),
            ..Default::default()
        };
        let err = runtime_config(&bad).unwrap_err().to_string();
        assert!(err.contains("kubernetes.io/egress-bandwidth"), "{err}");
    }

    #[test]
    fn ips_from_results_of_both_versions() {
        let v1 = json!({"ips": [{"address": "fd00::5/64"}, {"address": "10.88.0.5/16", "gateway": "10.88.0.1"}]});
        assert_eq!(pod_ips(&v1), vec!["10.88.0.5", "fd00::5"]);
        let v04 = json!({"ips": [{"version": "4", "address": "10.1.0.2/24"}]});
        assert_eq!(pod_ips(&v04), vec!["10.1.0.2"]);
        assert!(pod_ips(&Value::Null).is_empty());
    }

    #[test]
    fn cni_args_name_the_pod() {
        let req = PodNetworkRequest {
            pod_id: "abc".into(),
            name: "web".into(),
            namespace: "ns".into(),
            uid: "u".into(),
            ..Default::default()
        };
        let args = cni_args(&req);
        assert!(args.contains(&("K8S_POD_NAME".into(), "web".into())));
        assert!(args.contains(&("K8S_POD_INFRA_CONTAINER_ID".into(), "abc".into())));
        assert_eq!(args[0], ("IgnoreUnknown".into(), "1".into()));
    }
}
