//! The `cgroupfs` driver: crust writes the cgroup filesystems itself, on v1, hybrid
//! and v2 hosts alike.

use std::{
    collections::BTreeSet,
    fs, io,
    os::fd::OwnedFd,
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
    /// v1 devices (device rules go to its `devices.allow`/`devices.deny`).
    devices: bool,
    /// The v1 controllers of the mount (`cpu,cpuacct` -> both); empty on v2.
    controllers: Vec<String>,
}

impl Hierarchy {
    fn v2(dir: PathBuf) -> Hierarchy {
        Hierarchy {
            dir,
            v2: true,
            cpuset: false,
            freezer: false,
            devices: false,
            controllers: Vec::new(),
        }
    }

    /// A v1 mount whose directory is named after its controllers (`cpu,cpuacct`).
    fn v1(dir: PathBuf) -> Hierarchy {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let controllers: Vec<String> = name.split(',').map(str::to_string).collect();
        let has = |c: &str| controllers.iter().any(|x| x == c);
        Hierarchy {
            cpuset: has("cpuset"),
            freezer: has("freezer"),
            devices: has("devices"),
            controllers,
            dir,
            v2: false,
        }
    }
}

/// What the host's cgroups can limit (containerd and kubelet probe the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupFeatures {
    /// cgroup v2 only (no v1 controllers in use).
    pub v2: bool,
    /// Swap accounting: v1 `memory.memsw.limit_in_bytes`, v2 `memory.swap.max`.
    pub swap: bool,
    /// A hugetlb controller the limits can be written to.
    pub hugetlb: bool,
}

/// Manages cgroups below a cgroup root (normally `/sys/fs/cgroup`). Paths are
/// cgroupfs-style absolute paths such as `/kubepods/besteffort/pod1234`, the same in
/// every hierarchy. Every operation is idempotent.
#[derive(Debug, Clone)]
pub struct Cgroupfs {
    mode: CgroupMode,
    hierarchies: Vec<Hierarchy>,
    /// Device rules go into an eBPF filter on the v2 hierarchy: a v2-only host whose
    /// kernel lets us load one (probed at open). Hybrid hosts keep the v1 devices
    /// controller, as runc does.
    device_filter: bool,
}

/// The controllers crust delegates down to pod and container cgroups on v2 (what
/// kubelet's cgroup manager and runc enable), where the parent has them.
const V2_CONTROLLERS: [&str; 6] = ["cpuset", "cpu", "io", "memory", "hugetlb", "pids"];

const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest one wait for killed members lasts before the cgroup is listed again.
const KILL_WAIT_TURN: Duration = Duration::from_millis(100);

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
            CgroupMode::Unified => hierarchies.push(Hierarchy::v2(root.to_path_buf())),
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
                    if fs_type == CGROUP2_SUPER_MAGIC {
                        hierarchies.push(Hierarchy::v2(dir));
                    } else if fs_type == CGROUP_SUPER_MAGIC {
                        hierarchies.push(Hierarchy::v1(dir));
                    }
                }
            }
        }
        let device_filter = mode == CgroupMode::Unified && super::devices_bpf::supported();
        Ok(Cgroupfs {
            mode,
            hierarchies,
            device_filter,
        })
    }

    /// Turns the v2 eBPF device filter on or off (on: `dir` must be a real cgroup2
    /// directory). For tests: [`Cgroupfs::unified_at`] starts with it off, since plain
    /// directories cannot take a program.
    pub fn with_device_filter(mut self, on: bool) -> Cgroupfs {
        self.device_filter = on;
        self
    }

    /// Whether device rules are enforced by the cgroup: v1 `devices.allow`, or the v2
    /// eBPF filter.
    pub fn enforces_devices(&self) -> bool {
        self.device_filter || self.hierarchies.iter().any(|h| h.devices)
    }

    /// A cgroup v2 manager at `dir` without checking the filesystem: for tests over
    /// plain directories that stand in for a cgroup2 mount.
    pub fn unified_at(dir: &Path) -> Cgroupfs {
        Cgroupfs {
            mode: CgroupMode::Unified,
            hierarchies: vec![Hierarchy::v2(dir.to_path_buf())],
            device_filter: false,
        }
    }

    /// A v1 manager over `dirs`, each named after its controllers (`memory`,
    /// `cpu,cpuacct`), without checking the filesystems: for tests over plain
    /// directories.
    pub fn legacy_at(dirs: &[PathBuf]) -> Cgroupfs {
        Cgroupfs {
            mode: CgroupMode::Legacy,
            hierarchies: dirs.iter().cloned().map(Hierarchy::v1).collect(),
            device_filter: false,
        }
    }

    /// A hybrid manager: v1 `dirs` as in [`Cgroupfs::legacy_at`], then a cgroup2
    /// `unified` directory, without checking the filesystems: for tests.
    pub fn hybrid_at(dirs: &[PathBuf], unified: &Path) -> Cgroupfs {
        let mut c = Cgroupfs::legacy_at(dirs);
        c.mode = CgroupMode::Hybrid;
        c.hierarchies.push(Hierarchy::v2(unified.to_path_buf()));
        c
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
                if h.v2 {
                    // Every ancestor delegates its controllers, or the leaf has no
                    // memory.max, cpu.max... to write (cgroups(7), "subtree_control").
                    enable_controllers(&parent, parent == h.dir);
                }
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

    /// Sets `memory.oom.group` to 1 on `path`'s v2 cgroup: an OOM kill takes the whole
    /// container, not one process of it (kubelet's default on v2 since 1.32, and
    /// what a pod's containers expect: a half-killed container is not restarted).
    /// Returns false when there is no such file (v1, or no memory controller).
    pub fn set_oom_group(&self, path: &str) -> Result<bool, CgroupError> {
        validate_path(path)?;
        let mut set = false;
        for h in self.hierarchies.iter().filter(|h| h.v2) {
            let file = h.dir.join(&path[1..]).join("memory.oom.group");
            if !file.exists() {
                continue;
            }
            fs::write(&file, "1").map_err(io_err("write", &file))?;
            set = true;
        }
        Ok(set)
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

    /// Every process in `path` and in the cgroups below it.
    pub fn procs_below(&self, path: &str) -> Result<Vec<i32>, CgroupError> {
        validate_path(path)?;
        let mut pids: BTreeSet<i32> = self.procs(path)?.into_iter().collect();
        for child in self.children(path) {
            pids.extend(self.procs_below(&format!("{path}/{child}"))?);
        }
        Ok(pids.into_iter().collect())
    }

    /// Names of the cgroups directly below `path`, in any hierarchy.
    fn children(&self, path: &str) -> BTreeSet<String> {
        let mut children = BTreeSet::new();
        for dir in self.dirs(path) {
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    children.insert(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        children
    }

    /// SIGKILLs every process in `path` and below and waits until they are gone. Uses
    /// `cgroup.kill` where the kernel has it (atomic, races with fork cannot escape;
    /// it takes the whole subtree); otherwise freezes the cgroup (which freezes its
    /// subtree too) so nothing forks between listing and killing.
    pub fn kill_all(&self, path: &str) -> Result<(), CgroupError> {
        validate_path(path)?;
        let deadline = Instant::now() + KILL_TIMEOUT;
        loop {
            // Below too: a cgroup's own member list leaves out its children's, and
            // a parent with no direct members is not an empty subtree.
            let pids = self.procs_below(path)?;
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(CgroupError::Busy {
                    path: path.to_string(),
                    pids,
                });
            }
            // Opened before the kill: their exits wake the wait below, which ends as
            // soon as the last one is gone instead of after a fixed sleep.
            // ESRCH: gone already, nothing to kill or wait for; another error (no
            // pidfds before Linux 5.3): killed by PID, waited for by sleeping.
            let pin = |pid: i32| match crate::proc::pidfd_open(pid) {
                Ok(fd) => Some((pid, Some(fd))),
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => None,
                Err(_) => Some((pid, None)),
            };
            let mut pidfds: Vec<(i32, Option<OwnedFd>)> =
                pids.iter().filter_map(|&pid| pin(pid)).collect();
            let killed_by_kernel = self
                .hierarchies
                .iter()
                .filter(|h| h.v2)
                .map(|h| h.dir.join(&path[1..]).join("cgroup.kill"))
                .any(|file| fs::write(file, "1").is_ok());
            if !killed_by_kernel {
                let frozen = self.set_frozen(path, true).unwrap_or(false);
                // Members that joined after the listing (a fork before the freeze).
                for pid in self.procs_below(path)? {
                    if !pidfds.iter().any(|(p, _)| *p == pid) {
                        pidfds.extend(pin(pid));
                    }
                }
                for (pid, fd) in &pidfds {
                    // ESRCH: already gone, which is what we want. Through the pidfd
                    // where there is one, so a recycled PID is never signalled.
                    let _ = match fd {
                        Some(fd) => crate::proc::pidfd_kill(fd).map_err(|_| ()),
                        None => kill(Pid::from_raw(*pid), Signal::SIGKILL).map_err(|_| ()),
                    };
                }
                if frozen {
                    // A frozen process cannot die; thaw so the kill is delivered.
                    self.set_frozen(path, false)?;
                }
            }
            let (fds, unpinned): (Vec<_>, Vec<_>) =
                pidfds.into_iter().partition(|(_, fd)| fd.is_some());
            if unpinned.is_empty() {
                // Woken by the last exit; the next turn lists the cgroup again.
                crate::proc::wait_pidfds(
                    fds.into_iter().filter_map(|(_, fd)| fd).collect(),
                    KILL_WAIT_TURN.min(deadline.saturating_duration_since(Instant::now())),
                );
            } else {
                thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Kills what is left in `path` and below, and removes it (children first) from
    /// every hierarchy. A cgroup that does not exist is already removed.
    pub fn remove(&self, path: &str) -> Result<(), CgroupError> {
        validate_path(path)?;
        // Child cgroups first: a cgroup with children cannot be removed (EBUSY).
        for child in self.children(path) {
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
    /// limit no hierarchy can hold is an error, never silently dropped. Device rules are
    /// written on v1 only (see [`Cgroupfs::apply_device_rules`]); `unified` is refused
    /// unless the host is cgroup v2 only, as runc does (`ErrV1NoUnified`).
    pub fn apply_resources(
        &self,
        path: &str,
        r: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), CgroupError> {
        validate_path(path)?;
        let unified = r.unified().as_ref().filter(|u| !u.is_empty());
        if unified.is_some() && self.mode != CgroupMode::Unified {
            return Err(CgroupError::UnifiedOnV1 {
                path: path.to_string(),
            });
        }
        let mut writes: Vec<LimitWrite> = Vec::new();
        if let Some(mem) = r.memory() {
            let limit = mem.limit().filter(|l| *l > 0);
            let limit_write =
                limit.map(|l| LimitWrite::same("memory.limit_in_bytes", "memory.max", l));
            let swap_write = match mem.swap().filter(|s| *s > 0 || *s == -1) {
                None => None,
                // OCI `swap` is memory+swap (v1's memsw); v2's memory.swap.max is swap
                // alone, so it gets the difference (runc's
                // ConvertMemorySwapToCgroupV2Value).
                Some(-1) => Some(LimitWrite::new(
                    "memory.memsw.limit_in_bytes",
                    "-1".into(),
                    "memory.swap.max",
                    "max".into(),
                )),
                Some(swap) => {
                    let v2 = match limit {
                        Some(l) if swap >= l => (swap - l).to_string(),
                        Some(l) => {
                            return Err(CgroupError::InvalidValue {
                                path: path.to_string(),
                                file: "memory.swap.max".into(),
                                reason: format!("memory+swap {swap} is below the memory limit {l}"),
                            });
                        }
                        None if self.mode == CgroupMode::Unified => {
                            return Err(CgroupError::InvalidValue {
                                path: path.to_string(),
                                file: "memory.swap.max".into(),
                                reason: "a swap limit needs a memory limit".into(),
                            });
                        }
                        // v1 or hybrid: no v2 hierarchy carries memory files.
                        None => String::new(),
                    };
                    Some(LimitWrite::new(
                        "memory.memsw.limit_in_bytes",
                        swap.to_string(),
                        "memory.swap.max",
                        v2,
                    ))
                }
            };
            // v1 requires memory <= memory+swap at every step: when raising, raise the
            // memsw limit first; when lowering, lower the memory limit first.
            let raising = match (limit, self.current_v1(path, "memory.limit_in_bytes")) {
                (Some(new), Some(current)) => new > current,
                _ => false,
            };
            if raising {
                writes.extend(swap_write);
                writes.extend(limit_write);
            } else {
                writes.extend(limit_write);
                writes.extend(swap_write);
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
            // -1 is CRI's "no limit" (UpdateContainerResources sends it to lift one):
            // v1 takes -1, v2 `max`.
            let quota = cpu.quota().filter(|q| *q > 0 || *q == -1);
            if self.mode == CgroupMode::Unified {
                // v2 has one file, `cpu.max` = "$QUOTA [$PERIOD]"; the quota always
                // comes first, so a period alone keeps the quota already there.
                if quota.is_some() || period.is_some() {
                    let q = match quota {
                        Some(-1) => "max".to_string(),
                        Some(q) => q.to_string(),
                        None => self.current_v2_quota(path),
                    };
                    let value = match period {
                        Some(p) => format!("{q} {p}"),
                        None => q,
                    };
                    writes.push(LimitWrite::v2_only("cpu.max", value));
                }
            } else {
                // Period before quota, as runc: a quota is checked against the period.
                if let Some(p) = period {
                    writes.push(LimitWrite::v1_only("cpu.cfs_period_us", p));
                }
                if let Some(q) = quota {
                    writes.push(LimitWrite::v1_only("cpu.cfs_quota_us", q));
                }
            }
            if let Some(cpus) = cpu.cpus().as_ref().filter(|c| !c.is_empty()) {
                writes.push(LimitWrite::same("cpuset.cpus", "cpuset.cpus", cpus));
            }
            if let Some(mems) = cpu.mems().as_ref().filter(|m| !m.is_empty()) {
                writes.push(LimitWrite::same("cpuset.mems", "cpuset.mems", mems));
            }
        }
        if let Some(pids) = r.pids().as_ref() {
            match pids.limit() {
                l if l > 0 => writes.push(LimitWrite::same("pids.max", "pids.max", l)),
                // Unlimited, on both versions.
                -1 => writes.push(LimitWrite::same("pids.max", "pids.max", "max")),
                _ => {}
            }
        }
        for h in r.hugepage_limits().iter().flatten() {
            // CRI page sizes are the kernel's file-name form ("2MB", "1GB").
            let size = h.page_size();
            if size.is_empty() || !size.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(CgroupError::InvalidValue {
                    path: path.to_string(),
                    file: format!("hugetlb.{size}"),
                    reason: "not a page size like 2MB".into(),
                });
            }
            let limit = h.limit();
            writes.push(LimitWrite::new(
                format!("hugetlb.{size}.limit_in_bytes"),
                limit.to_string(),
                format!("hugetlb.{size}.max"),
                limit.to_string(),
            ));
            // Reservations count against the same limit where the kernel has them
            // (5.7+), as runc writes both.
            writes.push(LimitWrite {
                optional: true,
                ..LimitWrite::new(
                    format!("hugetlb.{size}.rsvd.limit_in_bytes"),
                    limit.to_string(),
                    format!("hugetlb.{size}.rsvd.max"),
                    limit.to_string(),
                )
            });
        }
        for w in writes {
            self.write_limit(path, &w)?;
        }
        if let Some(rules) = r.devices().as_ref().filter(|d| !d.is_empty()) {
            self.apply_device_rules(path, rules)?;
        }
        // Last, so they override the typed fields, as runc applies them.
        for (key, value) in unified.into_iter().flatten() {
            if key.is_empty() || key.contains('/') || key.starts_with('.') {
                return Err(CgroupError::InvalidValue {
                    path: path.to_string(),
                    file: key.clone(),
                    reason: "`unified` keys are file names".into(),
                });
            }
            let w = LimitWrite::v2_only(key.clone(), value);
            self.write_limit(path, &w)?;
        }
        Ok(())
    }

    /// Writes one limit into every hierarchy that has its file.
    fn write_limit(&self, path: &str, w: &LimitWrite) -> Result<(), CgroupError> {
        let mut done = false;
        for h in &self.hierarchies {
            let (file, value) = if h.v2 {
                (&w.v2_file, &w.v2_value)
            } else {
                (&w.v1_file, &w.v1_value)
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
            // Name the file of the host's version.
            let file = if self.mode == CgroupMode::Unified || w.v1_file.is_empty() {
                &w.v2_file
            } else {
                &w.v1_file
            };
            return Err(CgroupError::Unsupported {
                path: path.to_string(),
                file: file.clone(),
            });
        }
        Ok(())
    }

    /// Writes device cgroup rules into `path`'s v1 `devices.deny`/`devices.allow`, in
    /// order (the spec's list starts with "deny all", which empties the kernel's allow
    /// list, then adds what is allowed, as runc's v1 devices controller).
    ///
    /// cgroup v2 has no device files: the kernel checks device access with eBPF
    /// programs attached to the cgroup (`BPF_CGROUP_DEVICE`), so there the same rules
    /// become one (see [`super::devices_bpf`]), replacing the one attached before.
    /// Without either (a kernel that refuses the program) the rules are not enforced
    /// by the cgroup, which is logged (the spec then leaves CAP_MKNOD out).
    pub fn apply_device_rules(
        &self,
        path: &str,
        rules: &[oci_spec::runtime::LinuxDeviceCgroup],
    ) -> Result<(), CgroupError> {
        validate_path(path)?;
        let mut written = false;
        for h in self.hierarchies.iter().filter(|h| h.devices) {
            let dir = h.dir.join(&path[1..]);
            for rule in rules {
                let Some(line) = device_rule_line(rule) else {
                    continue;
                };
                let file = dir.join(if rule.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                });
                fs::write(&file, &line).map_err(|source| CgroupError::DeviceRule {
                    path: file.clone(),
                    rule: line.clone(),
                    source,
                })?;
            }
            written = true;
        }
        if self.device_filter {
            for h in self.hierarchies.iter().filter(|h| h.v2) {
                let dir = h.dir.join(&path[1..]);
                super::devices_bpf::apply(&dir, rules).map_err(|source| {
                    CgroupError::DeviceFilter {
                        path: path.to_string(),
                        source,
                    }
                })?;
                written = true;
            }
        }
        if !written {
            tracing::warn!(
                cgroup = path,
                "no v1 devices controller and no eBPF device filter: device rules are \
                 not enforced by the cgroup"
            );
        }
        Ok(())
    }

    /// What this host's cgroups can limit, for spec generation.
    pub fn features(&self) -> CgroupFeatures {
        let v1 = |controller: &str| {
            self.hierarchies
                .iter()
                .filter(|h| !h.v2)
                .find(|h| h.controllers.iter().any(|c| c == controller))
        };
        match self.mode {
            CgroupMode::Unified => {
                let root = &self.hierarchies[0].dir;
                let controllers =
                    fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
                let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
                // The root cgroup has no memory.swap.max; any child with the memory
                // controller has one when the kernel accounts swap (containerd looks in
                // its own cgroup for the same reason).
                let swap = has("memory")
                    && fs::read_dir(root)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .any(|e| e.path().join("memory.swap.max").exists());
                CgroupFeatures {
                    v2: true,
                    swap,
                    hugetlb: has("hugetlb"),
                }
            }
            // In hybrid mode runc (and crust) limit through the v1 controllers only;
            // the cgroup2 mount serves placement, freeze and kill.
            CgroupMode::Hybrid | CgroupMode::Legacy => CgroupFeatures {
                v2: false,
                swap: v1("memory")
                    .is_some_and(|h| h.dir.join("memory.memsw.limit_in_bytes").exists()),
                hugetlb: v1("hugetlb").is_some(),
            },
        }
    }

    /// The quota in `path`'s v2 `cpu.max` ("max" when unset or unreadable).
    fn current_v2_quota(&self, path: &str) -> String {
        self.hierarchies
            .iter()
            .filter(|h| h.v2)
            .find_map(|h| fs::read_to_string(h.dir.join(&path[1..]).join("cpu.max")).ok())
            .and_then(|v| v.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| "max".to_string())
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
    /// Empty when v1 has no file for it.
    v1_file: String,
    v1_value: String,
    /// Empty when v2 has no file for it.
    v2_file: String,
    v2_value: String,
    /// No hierarchy having the file is fine (the value is carried by another write).
    optional: bool,
}

impl LimitWrite {
    fn new(
        v1_file: impl Into<String>,
        v1_value: String,
        v2_file: impl Into<String>,
        v2_value: String,
    ) -> LimitWrite {
        LimitWrite {
            v1_file: v1_file.into(),
            v1_value,
            v2_file: v2_file.into(),
            v2_value,
            optional: false,
        }
    }

    fn same(v1_file: &str, v2_file: &str, value: impl ToString) -> LimitWrite {
        LimitWrite::new(v1_file, value.to_string(), v2_file, value.to_string())
    }

    fn v1_only(file: &str, value: impl ToString) -> LimitWrite {
        LimitWrite::new(file, value.to_string(), "", String::new())
    }

    fn v2_only(file: impl Into<String>, value: impl ToString) -> LimitWrite {
        LimitWrite::new("", String::new(), file, value.to_string())
    }
}

/// A v1 `devices.allow`/`devices.deny` line: `c 1:3 rwm`, `a *:* rwm`. `None` for a
/// type the device cgroup does not know (fifos: the kernel takes only a, b and c).
fn device_rule_line(rule: &oci_spec::runtime::LinuxDeviceCgroup) -> Option<String> {
    use oci_spec::runtime::LinuxDeviceType as T;
    let typ = match rule.typ() {
        None | Some(T::A) => 'a',
        Some(T::B) => 'b',
        Some(T::C) | Some(T::U) => 'c',
        Some(T::P) => return None,
    };
    let num = |n: Option<i64>| {
        n.filter(|n| *n >= 0)
            .map_or("*".to_string(), |n| n.to_string())
    };
    let access = rule.access().clone().filter(|a| !a.is_empty());
    Some(format!(
        "{typ} {}:{} {}",
        num(rule.major()),
        num(rule.minor()),
        access.as_deref().unwrap_or("rwm")
    ))
}

/// Enables [`V2_CONTROLLERS`] in `dir`'s `cgroup.subtree_control`, those `dir` has
/// (`cgroup.controllers`) and has not enabled yet, in one write (as runc); when that
/// is refused, one at a time so one refusal does not cost the rest. Best effort: a
/// missing controller just means a limit the features probe already reports as
/// unavailable.
///
/// A cgroup that holds processes (a running container, below which an exec gets its
/// cgroup) is left alone, the root excepted (`is_root`: it may mix): the kernel
/// refuses domain controllers there (EBUSY, the "no internal processes" rule), but
/// takes the threaded ones (cpu, pids), which would make it a thread root and every
/// new child an invalid domain no process can join (EOPNOTSUPP).
fn enable_controllers(dir: &Path, is_root: bool) {
    let Ok(available) = fs::read_to_string(dir.join("cgroup.controllers")) else {
        return;
    };
    if !is_root && fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
    {
        return;
    }
    let file = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&file).unwrap_or_default();
    let has = |list: &str, c: &str| {
        list.split_whitespace()
            .any(|x| x.trim_start_matches('+') == c)
    };
    let wanted: Vec<String> = V2_CONTROLLERS
        .iter()
        .filter(|c| has(&available, c) && !has(&enabled, c))
        .map(|c| format!("+{c}"))
        .collect();
    if wanted.is_empty() || fs::write(&file, wanted.join(" ")).is_ok() {
        return;
    }
    for c in wanted {
        if let Err(e) = fs::write(&file, &c) {
            tracing::debug!(dir = %dir.display(), controller = c, error = %e, "controller not delegated");
        }
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
