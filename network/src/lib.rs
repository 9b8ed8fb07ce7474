//! Pod networking for crust through CNI plugins. Pod network setup lands with issue 6;
//! what exists now is finding the node's CNI network configuration, which is what the
//! runtime's `NetworkReady` condition reports.

mod cni_config;

pub use cni_config::{CniNetwork, NetworkError, default_network};
