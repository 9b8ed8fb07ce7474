//! Pod networking for crust through CNI plugins: finding the node's network config
//! (what `NetworkReady` reports), and running the plugin chain's ADD and DEL for pods
//! with results cached so teardown works after a restart; and the interface counters
//! of a pod's network namespace.

mod cni_config;
mod cni_exec;
mod default_conflist;
mod netdev;
mod pod_network;
mod quantity;

pub use cni_config::{CniNetwork, NetworkError, default_network};
pub use default_conflist::{DEFAULT_CONFLIST, DEFAULT_CONFLIST_NAME};
pub use netdev::{InterfaceCounters, interface_counters, parse_net_dev};
pub use pod_network::{
    CniManager, Dns, POD_IFNAME, PodNetworkRequest, PodNetworkResult, PortMapping, pod_ips,
};
pub use quantity::parse_quantity;
