//! The `cgroupfs` driver: crust writes the cgroup filesystems itself, on v1, hybrid
//! and v2 hosts alike.

use std::{
    collections::BTreeSet,
    fs, io,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::{
        signal::{Signal, kill},
        statfs::{CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, statfs},
    },
    unistd::Pid,
};

use super::{CgroupError, CgroupMode, detect_mode};

/// One mounted hierarchy: a v1 controller mount (`<root>/memory`), the hybrid
/// `<root>/unified`, or the v2 root itself.
#[derive(Debug, Clone)]
struct Hierarchy {
    dir: PathBuf,
    v2: bool,
    /// v1 cpuset: new cgroups start with empty `cpus`/`mems` and must inherit them.
    cpuset: bool,
    /// v1 freezer.
    freezer: bool,
}

/// Manages cgroups below a cgroup root (normally `/sys/fs/cgroup`). Paths are
/// cgroupfs-style absolute paths such as `/kubepods/besteffort/pod1234`, the same in
/// every hierarchy. Every operation is idempotent.
#[derive(Debug, Clone)]
pub struct Cgroupfs {
    mode: CgroupMode,
    hierarchies: Vec<Hierarchy>,
}

const KILL_TIMEOUT: Duration = Duration::from_secs(5);

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Checks a cgroupfs path: absolute, no `.`/`..` or empty components, and no
/// characters that could name a file outside the hierarchy.
pub fn validate_path(path: &str) -> Result<(), CgroupError> {
    let invalid = |reason| {
        Err(CgroupError::InvalidPath {
            path: path.to_string(),
            reason,
        })
    };
    if !path.starts_with('/') {
        return invalid("must start with /");
    }
    if path == "/" {
        return invalid("the root cgroup cannot be managed");
    }
    for part in path[1..].split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return invalid("empty, '.' or '..' component");
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'))
        {
            return invalid("only letters, digits and -_.:@ are allowed in components");
        }
    }
    Ok(())
}

impl Cgroupfs {
    /// Discovers the hierarchies under `root`.
    pub fn open(root: &Path) -> Result<Cgroupfs, CgroupError> {
        let mode = detect_mode(root)?;
        let mut hierarchies = Vec::new();
        match mode {
            CgroupMode::Unified => hierarchies.push(Hierarchy {
                dir: root.to_path_buf(),
                v2: true,
                cpuset: false,
                freezer: false,
            }),
            CgroupMode::Hybrid | CgroupMode::Legacy => {
                let entries = fs::read_dir(root).map_err(io_err("read", root))?;
                let mut dirs: Vec<PathBuf> =
                    entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
                dirs.sort();
                for dir in dirs {
                    // `cpu,cpuacct` style mounts often have `cpu` and `cpuacct` symlinks.
                    if fs::symlink_metadata(&dir)
                        .map(|m| !m.is_dir())
                        .unwrap_or(true)
                    {
                        continue;
                    }
                    let Ok(fs_type) = statfs(&dir).map(|s| s.filesystem_type()) else {
                        continue;
                    };
                    let name = dir
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if fs_type == CGROUP2_SUPER_MAGIC {
                        hierarchies.push(Hierarchy {
                            dir,
                            v2: true,
                            cpuset: false,
                            freezer: false,
                        });
                    } else if fs_type == CGROUP_SUPER_MAGIC {
                        let controllers: Vec<&str> = name.split(',').collect();
                        hierarchies.push(Hierarchy {
                            cpuset: controllers.contains(&"cpuset"),
                            freezer: controllers.contains(&"freezer"),
                            dir,
                            v2: false,
                        });
                    }
                }
            }
        }
        Ok(Cgroupfs { mode, hierarchies })
    }

    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    /// The directory of `path` in every hierarchy, with whether it is cgroup v2.
    pub(crate) fn dirs_with_version(&self, path: &str) -> Vec<(PathBuf, bool)> {
        self.hierarchies
            .iter()
            .map(|h| (h.dir.join(&path[1..]), h.v2))
            .collect()
    }

    /// The directory of `path` in every hierarchy.
    pub fn dirs(&self, path: &str) -> Vec<PathBuf> {
        self.hierarchies
            .iter()
            .map(|h| h.dir.join(&path[1..]))
            .collect()
    }

    /// Creates `path` (and missing parents) in every hierarchy. Returns true if the leaf
    /// was created by this call (so rollback knows whether it is ours to remove).
    pub fn create(&self, path: &str) -> Result<bool, CgroupError> {
        validate_path(path)?;
        let mut created = false;
        for h in &self.hierarchies {
            let mut dir = h.dir.clone();
            for part in path[1..].split('/') {
                let parent = dir.clone();
                dir.push(part);
                match fs::create_dir(&dir) {
                    Ok(()) => created = true,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("create", &dir)(e)),
                }
                // Also when the directory already existed: a concurrent creator may
                // not have filled it in yet, and a child inheriting empty cpus/mems
                // could never take a process (ENOSPC).
                if h.cpuset {
                    inherit_cpuset(&parent, &dir)?;
                }
            }
        }
        Ok(created)
    }

    /// Moves process `pid` (all its threads) into `path` in every hierarchy.
    pub fn add_process(&self, path: &str, pid: i32) -> Result<(), CgroupError> {
        validate_path(path)?;
        for dir in self.dirs(path) {
            let procs = dir.join("cgroup.procs");
            fs::write(&procs, pid.to_string()).map_err(io_err("write", &procs))?;
        }
        Ok(())
    }

    /// Every process in `path` (any hierarchy), as seen from our PID namespace.
    pub fn procs(&self, path: &str) -> Result<Vec<i32>, CgroupError> {
        validate_path(path)?;
        let mut pids = BTreeSet::new();
        for dir in self.dirs(path) {
            let procs = dir.join("cgroup.procs");
            match fs::read_to_string(&procs) {
                Ok(text) => pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("read", &procs)(e)),
            }
        }
        Ok(pids.into_iter().collect())
    }

    /// Freezes or thaws `path` with whatever freezer exists (v2 `cgroup.freeze`, v1
    /// `freezer.state`). Returns false when there is no freezer.
    pub fn set_frozen(&self, path: &str, frozen: bool) -> Result<bool, CgroupError> {
        validate_path(path)?;
        let mut any = false;
        for h in &self.hierarchies {
            let dir = h.dir.join(&path[1..]);
            let (file, value) = match (h.v2, h.freezer) {
                (true, _) => (dir.join("cgroup.freeze"), if frozen { "1" } else { "0" }),
                (false, true) => (
                    dir.join("freezer.state"),
                    if frozen { "FROZEN" } else { "THAWED" },
                ),
                _ => continue,
            };
            match fs::write(&file, value) {
                Ok(()) => any = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("write", &file)(e)),
            }
        }
        Ok(any)
    }

    /// SIGKILLs every process in `path` and waits until the cgroup is empty. Uses
    /// `cgroup.kill` where the kernel has it (atomic, races with fork cannot escape);
    /// otherwise freezes the cgroup so nothing forks between listing and killing.
    pub fn kill_all(&self, path: &str) -> Result<(), CgroupError> {
        validate_path(path)?;
        let deadline = Instant::now() + KILL_TIMEOUT;
        loop {
            let pids = self.procs(path)?;
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(CgroupError::Busy {
                    path: path.to_string(),
                    pids,
                });
            }
            let killed_by_kernel = self
                .hierarchies
                .iter()
                .filter(|h| h.v2)
                .map(|h| h.dir.join(&path[1..]).join("cgroup.kill"))
                .any(|file| fs::write(file, "1").is_ok());
            if !killed_by_kernel {
                let frozen = self.set_frozen(path, true).unwrap_or(false);
                for pid in self.procs(path)? {
                    // ESRCH: already gone, which is what we want.
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                if frozen {
                    // A frozen process cannot die; thaw so the kill is delivered.
                    self.set_frozen(path, false)?;
                }
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills what is left in `path` and below, and removes it (children first) from
    /// every hierarchy. A cgroup that does not exist is already removed.
    pub fn remove(&self, path: &str) -> Result<(), CgroupError> {
        validate_path(path)?;
        // Child cgroups first: a cgroup with children cannot be removed (EBUSY).
        let mut children = BTreeSet::new();
        for dir in self.dirs(path) {
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    children.insert(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        for child in children {
            self.remove(&format!("{path}/{child}"))?;
        }
        self.kill_all(path)?;
        let mut errors = Vec::new();
        for dir in self.dirs(path) {
            // Exited processes leave their cgroup asynchronously; retry EBUSY briefly.
            let deadline = Instant::now() + KILL_TIMEOUT;
            loop {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc_ebusy()) && Instant::now() < deadline =>
                    {
                        thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => {
                        errors.push(io_err("remove", &dir)(e));
                        break;
                    }
                }
            }
        }
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes the OCI resource limits into `path`: each limit goes to the file of
    /// whichever hierarchy has it (v1 `memory.limit_in_bytes`, v2 `memory.max`...). A
    /// limit no hierarchy can hold is an error, never silently dropped.
    pub fn apply_resources(
        &self,
        path: &str,
        r: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), CgroupError> {
        validate_path(path)?;
        let mut writes: Vec<LimitWrite> = Vec::new();
        if let Some(mem) = r.memory() {
            let limit = mem
                .limit()
                .filter(|l| *l > 0)
                .map(|l| LimitWrite::same("memory.limit_in_bytes", "memory.max", l));
            let swap = mem
                .swap()
                .filter(|s| *s > 0)
                .map(|s| LimitWrite::same("memory.memsw.limit_in_bytes", "memory.swap.max", s));
            // v1 requires memory <= memory+swap at every step: when raising, raise the
            // memsw limit first; when lowering, lower the memory limit first.
            let raising = match (mem.limit(), self.current_v1(path, "memory.limit_in_bytes")) {
                (Some(new), Some(current)) => new > current,
                _ => false,
            };
            if raising {
                writes.extend(swap.clone());
                writes.extend(limit);
            } else {
                writes.extend(limit);
                writes.extend(swap);
            }
        }
        if let Some(cpu) = r.cpu() {
            if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
                // cgroup v2 weight from v1 shares, as runc converts it.
                let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
                writes.push(LimitWrite::new(
                    "cpu.shares",
                    shares.to_string(),
                    "cpu.weight",
                    weight.to_string(),
                ));
            }
            let period = cpu.period().filter(|p| *p > 0);
            if let Some(period) = period {
                // v2 has no period file of its own: it goes into cpu.max with the quota.
                writes.push(LimitWrite {
                    optional: true,
                    ..LimitWrite::new("cpu.cfs_period_us", period.to_string(), "", String::new())
                });
            }
            if let Some(quota) = cpu.quota().filter(|q| *q > 0) {
                let v2 = format!("{quota} {}", period.unwrap_or(100_000));
                writes.push(LimitWrite::new(
                    "cpu.cfs_quota_us",
                    quota.to_string(),
                    "cpu.max",
                    v2,
                ));
            }
            if let Some(cpus) = cpu.cpus().as_ref().filter(|c| !c.is_empty()) {
                writes.push(LimitWrite::same("cpuset.cpus", "cpuset.cpus", cpus));
            }
            if let Some(mems) = cpu.mems().as_ref().filter(|m| !m.is_empty()) {
                writes.push(LimitWrite::same("cpuset.mems", "cpuset.mems", mems));
            }
        }
        if let Some(pids) = r.pids().as_ref().filter(|p| p.limit() > 0) {
            writes.push(LimitWrite::same("pids.max", "pids.max", pids.limit()));
        }
        for w in writes {
            let mut done = false;
            for h in &self.hierarchies {
                let (file, value) = if h.v2 {
                    (w.v2_file, &w.v2_value)
                } else {
                    (w.v1_file, &w.v1_value)
                };
                if file.is_empty() {
                    continue;
                }
                let target = h.dir.join(&path[1..]).join(file);
                if target.exists() {
                    fs::write(&target, value).map_err(io_err("write", &target))?;
                    done = true;
                }
            }
            if !done && !w.optional {
                return Err(CgroupError::Unsupported {
                    path: path.to_string(),
                    file: w.v1_file.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The current value of a v1 file of `path`, if some hierarchy has it.
    fn current_v1(&self, path: &str, file: &str) -> Option<i64> {
        self.hierarchies
            .iter()
            .filter(|h| !h.v2)
            .find_map(|h| fs::read_to_string(h.dir.join(&path[1..]).join(file)).ok())
            .and_then(|v| v.trim().parse().ok())
    }

    /// True if `path` exists in any hierarchy.
    pub fn exists(&self, path: &str) -> bool {
        validate_path(path).is_ok() && self.dirs(path).iter().any(|d| d.is_dir())
    }
}

/// One limit, as written on each cgroup version (file names and value formats differ).
#[derive(Debug, Clone)]
struct LimitWrite {
    v1_file: &'static str,
    v1_value: String,
    /// Empty when v2 has no file for it.
    v2_file: &'static str,
    v2_value: String,
    /// No hierarchy having the file is fine (the value is carried by another write).
    optional: bool,
}

impl LimitWrite {
    fn new(
        v1_file: &'static str,
        v1_value: String,
        v2_file: &'static str,
        v2_value: String,
    ) -> LimitWrite {
        LimitWrite {
            v1_file,
            v1_value,
            v2_file,
            v2_value,
            optional: false,
        }
    }

    fn same(v1_file: &'static str, v2_file: &'static str, value: impl ToString) -> LimitWrite {
        LimitWrite::new(v1_file, value.to_string(), v2_file, value.to_string())
    }
}

fn libc_ebusy() -> i32 {
    nix::errno::Errno::EBUSY as i32
}

/// v1 cpuset cgroups are created with empty `cpus` and `mems`; a process cannot join
/// until they are set, so copy the parent's (what runc and libcgroup do).
fn inherit_cpuset(parent: &Path, dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let to = dir.join(file);
        if fs::read_to_string(&to).is_ok_and(|v| !v.trim().is_empty()) {
            continue;
        }
        let from = parent.join(file);
        let value = fs::read_to_string(&from).map_err(io_err("read", &from))?;
        fs::write(&to, value.trim()).map_err(io_err("write", &to))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_validated() {
        for (path, ok) in [
            ("/kubepods/besteffort/pod1234", true),
            ("/crust/pods/abc-1_2.3", true),
            ("/system.slice/kubelet.service", true),
            ("relative", false),
            ("/", false),
            ("/a/../b", false),
            ("/a//b", false),
            ("/a/./b", false),
            ("/a b", false),
            ("/a\nb", false),
        ] {
            assert_eq!(validate_path(path).is_ok(), ok, "{path:?}");
        }
    }
}
