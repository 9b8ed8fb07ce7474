//! crustd's implementation of the runtime's [`PodNetwork`] seam: CNI through the
//! network crate, with the pod CIDR kubelet pushed via UpdateRuntimeConfig.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use crust_network::{CniManager, Dns, PodNetworkRequest, PortMapping};
use crust_runtime::sandbox::{BoxFuture, NetworkRequest, NetworkStatus, PodNetwork};

use crate::{config::Config, node_config::NodeConfig};

/// CNI for pods.
pub struct CniPodNetwork {
    cni: CniManager,
    node: Arc<Mutex<NodeConfig>>,
}

impl CniPodNetwork {
    pub fn new(config: &Config, node: Arc<Mutex<NodeConfig>>) -> CniPodNetwork {
        CniPodNetwork {
            cni: CniManager {
                conf_dir: config.network.cni_conf_dir.clone(),
                bin_dirs: config.network.cni_bin_dirs.clone(),
                cache_dir: config.root.join("cni"),
                plugin_timeout: config.network.plugin_timeout,
            },
            node,
        }
    }
}

impl PodNetwork for CniPodNetwork {
    fn setup<'a>(
        &'a self,
        req: &'a NetworkRequest,
    ) -> BoxFuture<'a, Result<NetworkStatus, String>> {
        Box::pin(async move {
            let pod_cidrs = self
                .node
                .lock()
                .expect("node config lock poisoned")
                .pod_cidrs
                .clone();
            let request = PodNetworkRequest {
                pod_id: req.pod_id.clone(),
                name: req.metadata.name.clone(),
                namespace: req.metadata.namespace.clone(),
                uid: req.metadata.uid.clone(),
                netns: req.netns.clone(),
                port_mappings: req
                    .port_mappings
                    .iter()
                    .map(|p| PortMapping {
                        protocol: p.protocol.clone(),
                        container_port: p.container_port,
                        host_port: p.host_port,
                        host_ip: p.host_ip.clone(),
                    })
                    .collect(),
                annotations: req.annotations.clone(),
                dns: req.dns.as_ref().map(|d| Dns {
                    servers: d.servers.clone(),
                    searches: d.searches.clone(),
                    options: d.options.clone(),
                }),
                pod_cidrs,
            };
            let result = self.cni.setup(&request).await.map_err(|e| e.to_string())?;
            Ok(NetworkStatus {
                network: result.network,
                ips: result.ips,
            })
        })
    }

    fn teardown<'a>(
        &'a self,
        pod_id: &'a str,
        netns: &'a Path,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.cni
                .teardown(pod_id, netns)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn check<'a>(&'a self, pod_id: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { self.cni.check(pod_id).await.map_err(|e| e.to_string()) })
    }
}
