//! What ListPodSandboxMetrics reports of a pod and its containers, gathered in one
//! pass: each running container's cgroup counters, its processes (threads, open
//! files, sockets) from `/proc`, and its writable layer with the filesystem under it.
//! The pod's network counters are read by the caller (the network crate joins the
//! pod's namespace; the runtime does not depend on it): [`PodMetricsView::netns`]
//! says where.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::{Container, ContainerFilter, ContainerState, container_create::now};
use crate::{
    cgroup::CgroupDetail,
    error::RuntimeError,
    sandbox::{NsMode, Sandbox, SandboxManager},
};

/// Counts over a set of processes, as cAdvisor's process metrics have them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessCounts {
    pub processes: u64,
    pub threads: u64,
    pub fds: u64,
    pub sockets: u64,
}

/// Counts the threads (`task/` entries), open descriptors (`fd/` entries) and the
/// sockets among them of `pids` under `proc_root`. A process that exits meanwhile is
/// left out; a descriptor that closes meanwhile is counted or not, either is right.
pub fn process_counts(proc_root: &Path, pids: &[i32]) -> ProcessCounts {
    let mut c = ProcessCounts::default();
    for pid in pids {
        let dir = proc_root.join(pid.to_string());
        let Ok(tasks) = fs::read_dir(dir.join("task")) else {
            continue;
        };
        c.processes += 1;
        c.threads += tasks.count() as u64;
        for fd in fs::read_dir(dir.join("fd")).into_iter().flatten().flatten() {
            c.fds += 1;
            if fs::read_link(fd.path()).is_ok_and(|target| {
                target
                    .as_os_str()
                    .as_encoded_bytes()
                    .starts_with(b"socket:")
            }) {
                c.sockets += 1;
            }
        }
    }
    c
}

/// Size and inodes of a filesystem (statvfs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsCapacity {
    pub bytes_total: u64,
    pub inodes_total: u64,
    pub inodes_free: u64,
}

fn fs_capacity(dir: &Path) -> Option<FsCapacity> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(FsCapacity {
        bytes_total: s.blocks() as u64 * s.fragment_size() as u64,
        inodes_total: s.files() as u64,
        inodes_free: s.files_free() as u64,
    })
}

/// One running container's metrics.
#[derive(Debug, Clone)]
pub struct ContainerMetricsView {
    pub container: Container,
    pub detail: CgroupDetail,
    pub processes: ProcessCounts,
    /// Bytes and inodes used in the writable layer, where it lives, and the
    /// filesystem under it.
    pub writable_bytes: u64,
    pub writable_inodes: u64,
    pub writable_dir: PathBuf,
    pub writable_fs: Option<FsCapacity>,
}

/// A pod's metrics: what its record says, where its network namespace is, and its
/// running containers.
#[derive(Debug, Clone)]
pub struct PodMetricsView {
    pub sandbox: Sandbox,
    /// Unix nanoseconds when gathered.
    pub timestamp: i64,
    /// The pinned network namespace; `None` for host-network pods (their counters are
    /// the node's, not the pod's, so none are reported).
    pub netns: Option<PathBuf>,
    pub containers: Vec<ContainerMetricsView>,
}

impl Sandbox {
    /// The pod's own network namespace pin, `None` when it uses the node's.
    pub fn netns(&self) -> Option<PathBuf> {
        (self.spec.namespaces.network != NsMode::Node).then(|| self.pin("net"))
    }
}

impl SandboxManager {
    /// Processes in the pod's cgroup and below (its containers and the pod init);
    /// `None` without a cgroup manager or when the cgroup cannot be read.
    pub fn pod_process_count(&self, sandbox: &Sandbox) -> Option<u64> {
        let pids = self.cgroups().ok()?.procs_below(&sandbox.cgroup).ok()?;
        Some(pids.len() as u64)
    }

    /// Metrics of the pod `id` (id or unique prefix) and of its running containers.
    /// Containers that are not running are left out: their cgroups hold nothing to
    /// report, and kubelet drops series of containers that are gone.
    pub fn pod_metrics(&self, id: &str) -> Result<PodMetricsView, RuntimeError> {
        let view = self.status(id)?;
        let filter = ContainerFilter {
            pod_id: view.sandbox.id.clone(),
            state: Some(ContainerState::Running),
            ..Default::default()
        };
        let containers = self
            .list_containers(&filter)
            .into_iter()
            .map(|c| self.container_metrics(c))
            .collect();
        Ok(PodMetricsView {
            netns: view.sandbox.netns(),
            sandbox: view.sandbox,
            timestamp: now(),
            containers,
        })
    }

    fn container_metrics(&self, container: Container) -> ContainerMetricsView {
        let cgroups = self.cgroups().ok();
        let detail = cgroups
            .map(|c| c.detail(&container.cgroup))
            .unwrap_or_default();
        let pids = cgroups
            .and_then(|c| c.procs_below(&container.cgroup).ok())
            .unwrap_or_default();
        let processes = process_counts(Path::new(crate::sandbox::PROC_ROOT), &pids);
        let writable_dir = container.dir.join("upper");
        let (writable_bytes, writable_inodes) = super::container_stats::du(&writable_dir);
        ContainerMetricsView {
            writable_fs: fs_capacity(&writable_dir),
            container,
            detail,
            processes,
            writable_bytes,
            writable_inodes,
            writable_dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/proc`: process 10 with two threads, a file, a socket and a pipe;
    /// process 11 with one thread and no descriptors; 12 has exited.
    #[test]
    fn processes_threads_fds_and_sockets() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        for (pid, tasks) in [(10, &[10, 13][..]), (11, &[11][..])] {
            for t in tasks {
                fs::create_dir_all(p.join(format!("{pid}/task/{t}"))).unwrap();
            }
            fs::create_dir_all(p.join(format!("{pid}/fd"))).unwrap();
        }
        for (fd, target) in [
            ("0", "/dev/null"),
            ("3", "socket:[12345]"),
            ("4", "pipe:[9]"),
        ] {
            std::os::unix::fs::symlink(target, p.join("10/fd").join(fd)).unwrap();
        }
        assert_eq!(
            process_counts(p, &[10, 11, 12]),
            ProcessCounts {
                processes: 2,
                threads: 3,
                fds: 3,
                sockets: 1,
            }
        );
        assert_eq!(process_counts(p, &[]), ProcessCounts::default(), "none");
    }

    /// The real `/proc` for this test process: the three sockets it holds show (other
    /// tests running beside it may hold more).
    #[test]
    fn own_process_counts() {
        let _sockets: Vec<_> = (0..3)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let c = process_counts(Path::new("/proc"), &[std::process::id() as i32]);
        assert_eq!(c.processes, 1);
        assert!(c.threads >= 1, "{c:?}");
        assert!(c.sockets >= 3, "{c:?}");
        assert!(c.fds >= c.sockets + 3, "stdio too: {c:?}");
    }
}
