//! Node-wide runtime settings kubelet pushes through `UpdateRuntimeConfig`.

use crust_state::Record;
use serde::{Deserialize, Serialize};

/// The persisted node configuration: today the pod CIDRs, which CNI `host-local` IPAM
/// needs when the network config leaves the range to the runtime.
///
/// There is one record, id `node`. State machine: absent -> set (each update replaces
/// it whole); it is never deleted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// Pod CIDRs in the order kubelet gave them (one per IP family).
    pub pod_cidrs: Vec<String>,
    /// When kubelet last changed them (RFC 3339), empty if never.
    pub updated_at: String,
}

impl Record for NodeConfig {
    const KIND: &'static str = "node-config";
    const VERSION: u32 = 1;
    fn id(&self) -> &str {
        "node"
    }
}
