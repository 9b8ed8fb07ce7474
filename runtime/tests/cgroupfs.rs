//! The cgroupfs manager against the host's real cgroup mounts (run as root): the v1
//! controllers of this hybrid host, and the empty cgroup2 at `<root>/unified` for the v2
//! path (placement, freeze, kill), since v2 controllers cannot be enabled here.

use std::{
    fs,
    path::Path,
    process::{Child, Command},
    sync::atomic::{AtomicU32, Ordering},
};

use crust_runtime::cgroup::{CgroupMode, Cgroupfs};

static N: AtomicU32 = AtomicU32::new(0);

/// A uniquely named test cgroup, removed (with anything in it) on drop.
struct TestCgroup<'a> {
    manager: &'a Cgroupfs,
    path: String,
}

impl<'a> TestCgroup<'a> {
    fn new(manager: &'a Cgroupfs) -> Self {
        let path = format!(
            "/crust-test-{}-{}/pod",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        TestCgroup { manager, path }
    }
    fn parent(&self) -> String {
        self.path.rsplit_once('/').unwrap().0.to_string()
    }
}

impl Drop for TestCgroup<'_> {
    fn drop(&mut self) {
        let _ = self.manager.remove(&self.path);
        let _ = self.manager.remove(&self.parent());
    }
}

/// A `sleep` we started, killed by PID on drop.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("1000")
                .spawn()
                .expect("spawn sleep"),
        )
    }
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn exercise(manager: &Cgroupfs) {
    let cg = TestCgroup::new(manager);
    assert!(
        manager.create(&cg.path).unwrap(),
        "first create makes the cgroup"
    );
    assert!(
        !manager.create(&cg.path).unwrap(),
        "second create is a no-op"
    );
    for dir in manager.dirs(&cg.path) {
        assert!(dir.is_dir(), "{} missing", dir.display());
    }

    let mut sleeper = Sleeper::start();
    manager.add_process(&cg.path, sleeper.pid()).unwrap();
    assert_eq!(manager.procs(&cg.path).unwrap(), vec![sleeper.pid()]);
    let own = fs::read_to_string(format!("/proc/{}/cgroup", sleeper.pid())).unwrap();
    assert!(
        own.contains(&cg.path),
        "process should be in {}: {own}",
        cg.path
    );

    assert!(
        manager.set_frozen(&cg.path, true).unwrap(),
        "a freezer must exist"
    );
    let state = fs::read_to_string(format!("/proc/{}/status", sleeper.pid())).unwrap();
    assert!(state.contains("State:"), "{state}");
    manager.set_frozen(&cg.path, false).unwrap();

    manager.kill_all(&cg.path).unwrap();
    let status = sleeper.0.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL");
    assert!(manager.procs(&cg.path).unwrap().is_empty());

    manager.remove(&cg.path).unwrap();
    manager.remove(&cg.path).expect("removing twice is fine");
    assert!(!manager.exists(&cg.path));
}

#[test]
fn v1_hierarchies_of_the_host() {
    let manager = Cgroupfs::open(Path::new("/sys/fs/cgroup")).unwrap();
    assert_ne!(
        manager.mode(),
        CgroupMode::Unified,
        "this test is about a v1/hybrid host"
    );
    exercise(&manager);
}

#[test]
fn v2_on_the_unified_mount() {
    let unified = Path::new("/sys/fs/cgroup/unified");
    let manager = Cgroupfs::open(unified).expect("cgroup2 mounted at /sys/fs/cgroup/unified");
    assert_eq!(manager.mode(), CgroupMode::Unified);
    exercise(&manager);
}

#[test]
fn remove_kills_what_is_left() {
    let manager = Cgroupfs::open(Path::new("/sys/fs/cgroup")).unwrap();
    let cg = TestCgroup::new(&manager);
    manager.create(&cg.path).unwrap();
    let mut sleepers: Vec<_> = (0..3).map(|_| Sleeper::start()).collect();
    for s in &sleepers {
        manager.add_process(&cg.path, s.pid()).unwrap();
    }
    manager.remove(&cg.path).unwrap();
    for s in &mut sleepers {
        assert!(s.0.wait().is_ok());
    }
    assert!(!manager.exists(&cg.path));
}

// ---- Resource limits --------------------------------------------------------------

use oci_spec::runtime::{
    LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxHugepageLimit, LinuxMemory, LinuxPids,
    LinuxResources,
};

fn memory(limit: Option<i64>, swap: Option<i64>) -> LinuxResources {
    let mut m = LinuxMemory::default();
    m.set_limit(limit);
    m.set_swap(swap);
    let mut r = LinuxResources::default();
    r.set_memory(Some(m));
    r
}

fn cpu(quota: Option<i64>, period: Option<u64>) -> LinuxResources {
    let mut c = LinuxCpu::default();
    c.set_quota(quota);
    c.set_period(period);
    let mut r = LinuxResources::default();
    r.set_cpu(Some(c));
    r
}

fn pids(limit: i64) -> LinuxResources {
    let mut p = LinuxPids::default();
    p.set_limit(limit);
    let mut r = LinuxResources::default();
    r.set_pids(Some(p));
    r
}

fn hugepages(sizes: &[(&str, i64)]) -> LinuxResources {
    let mut r = LinuxResources::default();
    r.set_hugepage_limits(Some(
        sizes
            .iter()
            .map(|(size, limit)| {
                let mut h = LinuxHugepageLimit::default();
                h.set_page_size(size.to_string());
                h.set_limit(*limit);
                h
            })
            .collect(),
    ));
    r
}

fn unified(pairs: &[(&str, &str)]) -> LinuxResources {
    let mut r = LinuxResources::default();
    r.set_unified(Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    ));
    r
}

fn device_rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    mm: Option<(i64, i64)>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut d = LinuxDeviceCgroup::default();
    d.set_allow(allow);
    d.set_typ(typ);
    d.set_major(mm.map(|m| m.0));
    d.set_minor(mm.map(|m| m.1));
    d.set_access(Some(access.to_string()));
    d
}

/// What crust's spec generation emits: deny all, mknod of anything, /dev/null, one
/// CRI device (8:0 read-only).
fn device_rules() -> LinuxResources {
    use LinuxDeviceType::{B, C};
    let mut r = LinuxResources::default();
    r.set_devices(Some(vec![
        device_rule(false, None, None, "rwm"),
        device_rule(true, Some(C), None, "m"),
        device_rule(true, Some(B), None, "m"),
        device_rule(true, Some(C), Some((1, 3)), "rwm"),
        device_rule(true, Some(B), Some((8, 0)), "r"),
    ]));
    r
}

fn read(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// The host's v1 hierarchies: limits land in the v1 files, -1 lifts a CPU quota, and
/// device rules replace the default allow-all with exactly the listed exceptions.
#[test]
fn v1_limits_and_device_rules_on_the_host() {
    let root = Path::new("/sys/fs/cgroup");
    let manager = Cgroupfs::open(root).unwrap();
    let cg = TestCgroup::new(&manager);
    manager.create(&cg.path).unwrap();
    let file = |controller: &str, name: &str| root.join(controller).join(&cg.path[1..]).join(name);

    manager
        .apply_resources(&cg.path, &memory(Some(64 << 20), Some(96 << 20)))
        .unwrap();
    assert_eq!(
        read(&file("memory", "memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    if manager.features().swap {
        assert_eq!(
            read(&file("memory", "memory.memsw.limit_in_bytes")),
            (96u64 << 20).to_string(),
            "v1 memsw is memory+swap, as OCI's swap"
        );
    }

    manager
        .apply_resources(&cg.path, &cpu(Some(50_000), Some(100_000)))
        .unwrap();
    assert_eq!(read(&file("cpu", "cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&file("cpu", "cpu.cfs_period_us")), "100000");
    manager
        .apply_resources(&cg.path, &cpu(Some(-1), None))
        .unwrap();
    assert_eq!(
        read(&file("cpu", "cpu.cfs_quota_us")),
        "-1",
        "-1 lifts the quota"
    );

    manager.apply_resources(&cg.path, &pids(42)).unwrap();
    assert_eq!(read(&file("pids", "pids.max")), "42");
    manager.apply_resources(&cg.path, &pids(-1)).unwrap();
    assert_eq!(read(&file("pids", "pids.max")), "max");

    assert_eq!(
        read(&file("devices", "devices.list")),
        "a *:* rwm",
        "default allow-all"
    );
    manager.apply_resources(&cg.path, &device_rules()).unwrap();
    let mut list: Vec<String> = read(&file("devices", "devices.list"))
        .lines()
        .map(str::to_string)
        .collect();
    list.sort();
    assert_eq!(list, ["b *:* m", "b 8:0 r", "c *:* m", "c 1:3 rwm"]);

    let err = manager
        .apply_resources(&cg.path, &unified(&[("memory.high", "1000000")]))
        .unwrap_err();
    assert!(err.to_string().contains("`unified`"), "{err}");
}

/// A hugepage limit on v1 goes to `hugetlb.<size>.limit_in_bytes` (plain directories
/// standing in for the controllers: this host has no v1 hugetlb mount).
#[test]
fn v1_hugetlb_and_features_on_fixtures() {
    let tmp = tempfile::tempdir().unwrap();
    let (mem, huge) = (tmp.path().join("memory"), tmp.path().join("hugetlb"));
    let manager = Cgroupfs::legacy_at(&[mem.clone(), huge.clone()]);
    assert_eq!(
        manager.features(),
        crust_runtime::cgroup::CgroupFeatures {
            v2: false,
            swap: false,
            hugetlb: true
        },
        "no memsw file: no swap accounting"
    );
    fs::create_dir_all(&mem).unwrap();
    fs::write(mem.join("memory.memsw.limit_in_bytes"), "0").unwrap();
    assert!(
        manager.features().swap,
        "memsw at the root: swap accounting"
    );

    let dir = huge.join("pod/c");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("hugetlb.2MB.limit_in_bytes"), "0").unwrap();
    manager
        .apply_resources("/pod/c", &hugepages(&[("2MB", 4 << 20)]))
        .unwrap();
    assert_eq!(
        read(&dir.join("hugetlb.2MB.limit_in_bytes")),
        (4u64 << 20).to_string()
    );
    let err = manager
        .apply_resources("/pod/c", &hugepages(&[("1GB", 1 << 30)]))
        .unwrap_err();
    assert!(
        err.to_string().contains("hugetlb.1GB.limit_in_bytes"),
        "{err}"
    );

    let without = Cgroupfs::legacy_at(&[mem]);
    assert!(!without.features().hugetlb, "no hugetlb mount");
}

/// A cgroup v2 directory with the files the kernel would have, for the v2 formats.
fn v2_fixture() -> (tempfile::TempDir, Cgroupfs, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pod/c");
    fs::create_dir_all(&dir).unwrap();
    for (file, value) in [
        ("memory.max", "max"),
        ("memory.swap.max", "max"),
        ("memory.high", "max"),
        ("cpu.max", "max 100000"),
        ("cpu.weight", "100"),
        ("pids.max", "max"),
        ("hugetlb.2MB.max", "max"),
    ] {
        fs::write(dir.join(file), value).unwrap();
    }
    let manager = Cgroupfs::unified_at(tmp.path());
    (tmp, manager, dir)
}

#[test]
fn v2_memory_swap_is_swap_alone() {
    let (_tmp, m, dir) = v2_fixture();
    m.apply_resources("/pod/c", &memory(Some(64 << 20), Some(96 << 20)))
        .unwrap();
    assert_eq!(read(&dir.join("memory.max")), (64u64 << 20).to_string());
    assert_eq!(
        read(&dir.join("memory.swap.max")),
        (32u64 << 20).to_string(),
        "OCI swap is memory+swap; v2 wants swap alone"
    );
    m.apply_resources("/pod/c", &memory(Some(64 << 20), Some(64 << 20)))
        .unwrap();
    assert_eq!(
        read(&dir.join("memory.swap.max")),
        "0",
        "swap = limit: no swap"
    );
    m.apply_resources("/pod/c", &memory(Some(64 << 20), Some(-1)))
        .unwrap();
    assert_eq!(
        read(&dir.join("memory.swap.max")),
        "max",
        "-1: unlimited swap"
    );
    let err = m
        .apply_resources("/pod/c", &memory(Some(64 << 20), Some(32 << 20)))
        .unwrap_err();
    assert!(err.to_string().contains("memory.swap.max"), "{err}");
    let err = m
        .apply_resources("/pod/c", &memory(None, Some(32 << 20)))
        .unwrap_err();
    assert!(err.to_string().contains("needs a memory limit"), "{err}");
}

#[test]
fn v2_cpu_max() {
    let (_tmp, m, dir) = v2_fixture();
    let cases: [(&str, Option<i64>, Option<u64>, &str); 5] = [
        (
            "quota and period",
            Some(50_000),
            Some(100_000),
            "50000 100000",
        ),
        (
            "period alone keeps the quota",
            None,
            Some(200_000),
            "50000 200000",
        ),
        ("quota alone keeps the period", Some(30_000), None, "30000"),
        ("-1 lifts the quota", Some(-1), None, "max"),
        ("-1 with a period", Some(-1), Some(100_000), "max 100000"),
    ];
    for (name, quota, period, want) in cases {
        m.apply_resources("/pod/c", &cpu(quota, period)).unwrap();
        assert_eq!(read(&dir.join("cpu.max")), want, "{name}");
    }
}

#[test]
fn v2_pids_hugetlb_unified_and_devices() {
    let (_tmp, m, dir) = v2_fixture();
    m.apply_resources("/pod/c", &pids(-1)).unwrap();
    assert_eq!(read(&dir.join("pids.max")), "max");
    m.apply_resources("/pod/c", &pids(7)).unwrap();
    assert_eq!(read(&dir.join("pids.max")), "7");

    m.apply_resources("/pod/c", &hugepages(&[("2MB", 8 << 20)]))
        .unwrap();
    assert_eq!(read(&dir.join("hugetlb.2MB.max")), (8u64 << 20).to_string());
    let err = m
        .apply_resources("/pod/c", &hugepages(&[("1GB", 1 << 30)]))
        .unwrap_err();
    assert!(err.to_string().contains("hugetlb.1GB.max"), "{err}");

    m.apply_resources("/pod/c", &unified(&[("memory.high", "50000000")]))
        .unwrap();
    assert_eq!(read(&dir.join("memory.high")), "50000000");
    let err = m
        .apply_resources("/pod/c", &unified(&[("io.nonexistent", "1")]))
        .unwrap_err();
    assert!(err.to_string().contains("io.nonexistent"), "{err}");
    assert!(!dir.join("io.nonexistent").exists(), "no file is made up");

    // No device files on v2; the eBPF filter is off for fixture directories (it is
    // tested on the real kernel in tests/devices_bpf.rs).
    m.apply_resources("/pod/c", &device_rules()).unwrap();
    assert!(!dir.join("devices.allow").exists() && !dir.join("devices.deny").exists());
}

#[test]
fn v2_features_on_fixtures() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
    let m = Cgroupfs::unified_at(tmp.path());
    let f = m.features();
    assert!(f.v2 && !f.swap && !f.hugetlb, "{f:?}");
    fs::write(
        tmp.path().join("cgroup.controllers"),
        "cpu memory hugetlb\n",
    )
    .unwrap();
    fs::create_dir(tmp.path().join("kubepods")).unwrap();
    fs::write(tmp.path().join("kubepods/memory.swap.max"), "max").unwrap();
    let f = m.features();
    assert!(f.v2 && f.swap && f.hugetlb, "{f:?}");
}

/// This host (hybrid): swap accounting as the memory controller says; hugetlb only if
/// a v1 hugetlb hierarchy is mounted (the cgroup2 mount is not used for limits).
#[test]
fn host_features_match_the_mounts() {
    let root = Path::new("/sys/fs/cgroup");
    let f = Cgroupfs::open(root).unwrap().features();
    assert_eq!(
        f.v2,
        crust_runtime::cgroup::detect_mode(root).unwrap() == CgroupMode::Unified
    );
    if !f.v2 {
        assert_eq!(
            f.swap,
            root.join("memory/memory.memsw.limit_in_bytes").exists()
        );
        assert_eq!(f.hugetlb, root.join("hugetlb").is_dir());
    }
}

/// `kill_all` of a cgroup with no processes of its own still kills those of the
/// cgroups below it (a pod's cgroup holds only its containers' cgroups).
fn kill_all_takes_the_subtree(manager: &Cgroupfs) {
    let cg = TestCgroup::new(manager);
    manager.create(&cg.path).unwrap();
    let mut sleeper = Sleeper::start();
    manager.add_process(&cg.path, sleeper.pid()).unwrap();
    assert!(manager.procs(&cg.parent()).unwrap().is_empty());
    assert_eq!(
        manager.procs_below(&cg.parent()).unwrap(),
        vec![sleeper.pid()]
    );
    manager.kill_all(&cg.parent()).unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        sleeper.0.wait().unwrap().signal(),
        Some(9),
        "the child cgroup's process was killed"
    );
    assert!(manager.procs_below(&cg.parent()).unwrap().is_empty());
}

#[test]
fn kill_all_takes_the_subtree_v1() {
    kill_all_takes_the_subtree(&Cgroupfs::open(Path::new("/sys/fs/cgroup")).unwrap());
}

#[test]
fn kill_all_takes_the_subtree_v2() {
    kill_all_takes_the_subtree(&Cgroupfs::open(Path::new("/sys/fs/cgroup/unified")).unwrap());
}

/// Creating a cgroup on v2 delegates the controllers each ancestor has (and has not
/// enabled yet) down its `cgroup.subtree_control`, root included, leaf excluded.
#[test]
fn v2_create_enables_controllers_in_every_ancestor() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let kube = root.join("kubepods");
    let pod = kube.join("pod1");
    fs::create_dir_all(&pod).unwrap();
    for (dir, controllers, enabled) in [
        (root, "cpuset cpu io memory hugetlb pids rdma misc", ""),
        (kube.as_path(), "cpu memory pids", "memory"),
        (pod.as_path(), "cpu pids", ""),
    ] {
        fs::write(dir.join("cgroup.controllers"), controllers).unwrap();
        fs::write(dir.join("cgroup.subtree_control"), enabled).unwrap();
    }
    let m = Cgroupfs::unified_at(root);
    m.create("/kubepods/pod1/ctr").unwrap();
    assert_eq!(
        read(&root.join("cgroup.subtree_control")),
        "+cpuset +cpu +io +memory +hugetlb +pids",
        "the root delegates what it has, not rdma/misc"
    );
    assert_eq!(
        read(&kube.join("cgroup.subtree_control")),
        "+cpu +pids",
        "memory was already enabled"
    );
    assert_eq!(read(&pod.join("cgroup.subtree_control")), "+cpu +pids");
    assert!(
        !pod.join("ctr/cgroup.subtree_control").exists(),
        "the leaf (it holds the container's processes) delegates nothing"
    );
}

/// A cgroup with processes (a running container) delegates nothing when a child (an
/// exec's cgroup) is made below it: the threaded controllers would make it a thread
/// root, and the child a domain no process can join (EOPNOTSUPP).
#[test]
fn v2_a_cgroup_with_processes_delegates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let ctr = tmp.path().join("pod/ctr");
    fs::create_dir_all(&ctr).unwrap();
    for (dir, procs) in [
        (tmp.path(), "1\n"),
        (ctr.parent().unwrap(), ""),
        (ctr.as_path(), "42\n"),
    ] {
        fs::write(dir.join("cgroup.controllers"), "cpu memory pids").unwrap();
        fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
        fs::write(dir.join("cgroup.procs"), procs).unwrap();
    }
    let m = Cgroupfs::unified_at(tmp.path());
    m.create("/pod/ctr/exec-1").unwrap();
    assert_eq!(
        read(&ctr.join("cgroup.subtree_control")),
        "",
        "the container's"
    );
    assert_eq!(
        read(&ctr.parent().unwrap().join("cgroup.subtree_control")),
        "+cpu +memory +pids",
        "the pod's (no processes of its own)"
    );
    assert_eq!(
        read(&tmp.path().join("cgroup.subtree_control")),
        "+cpu +memory +pids",
        "the root may mix processes and controllers"
    );
}

#[test]
fn v2_oom_group_is_set_where_the_memory_controller_is() {
    let (_tmp, m, dir) = v2_fixture();
    fs::write(dir.join("memory.oom.group"), "0").unwrap();
    assert!(m.set_oom_group("/pod/c").unwrap());
    assert_eq!(read(&dir.join("memory.oom.group")), "1");
    fs::create_dir_all(dir.parent().unwrap().join("nomem")).unwrap();
    assert!(
        !m.set_oom_group("/pod/nomem").unwrap(),
        "no file: nothing to set"
    );
}
