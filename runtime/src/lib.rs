//! Pod sandboxes and containers for crust: the per-pod monitor, the container launcher
//! and cgroups. Sandboxes and containers land with issues 4 and 5; until then crustd
//! answers their RPCs with `UNIMPLEMENTED`. What exists now is the cgroup knowledge the
//! daemon reports from its first start.

pub mod cgroup;
