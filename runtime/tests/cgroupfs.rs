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
