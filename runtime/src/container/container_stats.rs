//! ContainerStats / PodSandboxStats: cgroup usage, writable layer usage, and a CPU
//! rate computed from the previous sample (CRI's `usage_nano_cores`).

use std::{
    collections::HashSet,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::{Container, ContainerState, container_create::now};
use crate::{cgroup::CgroupUsage, error::RuntimeError, sandbox::SandboxManager};

/// One sample of a cgroup's use.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageSample {
    /// Unix nanoseconds when taken.
    pub timestamp: i64,
    pub usage: CgroupUsage,
    /// CPU use since the previous sample, in nanocores (1e9 = one core busy).
    pub nano_cores: Option<u64>,
}

/// A container's stats.
#[derive(Debug, Clone)]
pub struct ContainerStatsView {
    pub container: Container,
    pub sample: UsageSample,
    /// Bytes and inodes in the writable layer, and where it lives.
    pub writable_bytes: u64,
    pub writable_inodes: u64,
    pub writable_dir: PathBuf,
}

pub(super) fn du(dir: &Path) -> (u64, u64) {
    let (mut bytes, mut inodes) = (0, 0);
    let mut seen = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        inodes += 1;
        bytes += meta.blocks() * 512;
        if meta.is_dir() {
            stack.extend(
                fs::read_dir(&path)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        }
    }
    (bytes, inodes)
}

impl SandboxManager {
    /// Samples a cgroup and derives the CPU rate from the previous sample of `key`.
    pub(crate) fn sample(&self, key: &str, cgroup: &str) -> UsageSample {
        let usage = self.cgroups().map(|c| c.usage(cgroup)).unwrap_or_default();
        let timestamp = now();
        let mut last = self.cpu_samples.lock().expect("samples poisoned");
        let nano_cores = match (usage.cpu_ns, last.get(key)) {
            (Some(cpu), Some(&(t0, cpu0))) if timestamp > t0 && cpu >= cpu0 => {
                Some(((cpu - cpu0) as u128 * 1_000_000_000 / (timestamp - t0) as u128) as u64)
            }
            _ => None,
        };
        if let Some(cpu) = usage.cpu_ns {
            last.insert(key.to_string(), (timestamp, cpu));
        }
        UsageSample {
            timestamp,
            usage,
            nano_cores,
        }
    }

    /// Stats of one container (running or not: CRI lists stats for every container).
    pub fn container_stats(&self, id: &str) -> Result<ContainerStatsView, RuntimeError> {
        let container = self.container_status(id)?;
        Ok(self.stats_of(container))
    }

    /// Stats of a container record already in hand (a list need not look it up again).
    pub fn stats_of(&self, container: Container) -> ContainerStatsView {
        let sample = self.sample(&container.id, &container.cgroup);
        let writable_dir = container.dir.join("upper");
        let (writable_bytes, writable_inodes) =
            if container.state == ContainerState::Exited && !writable_dir.exists() {
                (0, 0)
            } else {
                du(&writable_dir)
            };
        ContainerStatsView {
            container,
            sample,
            writable_bytes,
            writable_inodes,
            writable_dir,
        }
    }

    /// Stats of a pod: its cgroup (children included) and each of its containers.
    pub fn pod_stats(
        &self,
        id: &str,
    ) -> Result<
        (
            crate::sandbox::SandboxView,
            UsageSample,
            Vec<ContainerStatsView>,
        ),
        RuntimeError,
    > {
        let view = self.status(id)?;
        let sample = self.sample(&view.sandbox.id, &view.sandbox.cgroup);
        let filter = super::ContainerFilter {
            pod_id: view.sandbox.id.clone(),
            ..Default::default()
        };
        let containers = self
            .list_containers(&filter)
            .into_iter()
            .filter(|c| c.state == ContainerState::Running)
            .map(|c| self.stats_of(c))
            .collect();
        Ok((view, sample, containers))
    }
}
