//! The cgroup v2 eBPF device filter on the real kernel (run as root): attached to a
//! cgroup under this host's cgroup2 mount (`/sys/fs/cgroup/unified` here, where no
//! controller is enabled; device programs need none), a shell placed in that cgroup
//! opens what the rules allow and gets EPERM for the rest, mknod included.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crust_runtime::cgroup::{Cgroupfs, devices_bpf};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType};

fn rule(
    typ: LinuxDeviceType,
    major: i64,
    minor: i64,
    access: &str,
    allow: bool,
) -> LinuxDeviceCgroup {
    LinuxDeviceCgroupBuilder::default()
        .typ(typ)
        .major(major)
        .minor(minor)
        .access(access)
        .allow(allow)
        .build()
        .unwrap()
}

/// Deny all, then /dev/null rwm and mknod of char devices only (crust's defaults have
/// `c *:* m` and `b *:* m`; leaving out `b` shows mknod being filtered).
fn rules() -> Vec<LinuxDeviceCgroup> {
    vec![
        rule(LinuxDeviceType::A, -1, -1, "rwm", false),
        rule(LinuxDeviceType::C, -1, -1, "m", true),
        rule(LinuxDeviceType::C, 1, 3, "rwm", true),
    ]
}

/// The host's cgroup2 mount: the root on a v2 host, `<root>/unified` on a hybrid one.
fn cgroup2_root() -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        root.to_path_buf()
    } else {
        root.join("unified")
    }
}

/// A cgroup of our own below the cgroup2 root, removed on drop.
struct Cg {
    manager: Cgroupfs,
    path: String,
    dir: PathBuf,
}

impl Cg {
    fn new(name: &str) -> Cg {
        let root = cgroup2_root();
        assert!(
            root.join("cgroup.procs").exists(),
            "no cgroup2 mount at {}",
            root.display()
        );
        let manager = Cgroupfs::unified_at(&root).with_device_filter(true);
        let path = format!("/crust-devbpf-{}-{name}", std::process::id());
        manager.create(&path).unwrap();
        let dir = root.join(&path[1..]);
        Cg { manager, path, dir }
    }

    /// Runs `script` in `sh` moved into the cgroup first; returns its stdout.
    fn sh(&self, script: &str) -> String {
        let tmp = tempfile::tempdir().unwrap();
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs || exit 99\n{script}",
                self.dir.display()
            ))
            .current_dir(tmp.path())
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(99), "could not join the cgroup");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
}

impl Drop for Cg {
    fn drop(&mut self) {
        let _ = self.manager.remove(&self.path);
    }
}

#[test]
fn filter_allows_listed_devices_and_refuses_the_rest() {
    assert!(
        devices_bpf::supported(),
        "this kernel refuses device programs"
    );
    let cg = Cg::new("open");
    let before = cg.sh("head -c 1 /dev/zero >/dev/null 2>&1 && echo zero-opened");
    assert!(before.contains("zero-opened"), "no filter yet: {before}");

    cg.manager.apply_device_rules(&cg.path, &rules()).unwrap();
    assert_eq!(devices_bpf::attached_ids(&cg.dir).unwrap().len(), 1);
    let out = cg.sh("cat /dev/null && echo null-ok\n\
         head -c 1 /dev/zero >/dev/null && echo zero-opened\n\
         mknod charnode c 1 5 && echo char-mknod-ok\n\
         mknod blocknode b 7 0 && echo block-mknod-ok\n\
         cat charnode >/dev/null 2>&1 && echo charnode-opened\n\
         true");
    assert!(out.contains("null-ok"), "/dev/null is allowed: {out}");
    assert!(
        !out.contains("zero-opened"),
        "/dev/zero is not listed: {out}"
    );
    assert!(
        out.contains("Operation not permitted"),
        "refusals are EPERM: {out}"
    );
    assert!(out.contains("char-mknod-ok"), "c *:* m allows mknod: {out}");
    assert!(!out.contains("block-mknod-ok"), "no b m rule: {out}");
    assert!(
        !out.contains("charnode-opened"),
        "a node made for 1:5 still cannot be opened: {out}"
    );
}

#[test]
fn applying_again_replaces_the_filter() {
    let cg = Cg::new("replace");
    cg.manager.apply_device_rules(&cg.path, &rules()).unwrap();
    let first = devices_bpf::attached_ids(&cg.dir).unwrap();
    let mut wider = rules();
    wider.push(rule(LinuxDeviceType::C, 1, 5, "rw", true));
    cg.manager.apply_device_rules(&cg.path, &wider).unwrap();
    let second = devices_bpf::attached_ids(&cg.dir).unwrap();
    assert_eq!(second.len(), 1, "one program, not a stack: {second:?}");
    assert_ne!(first, second, "the new program replaced the old one");
    let out = cg.sh("head -c 1 /dev/zero >/dev/null && echo zero-opened");
    assert!(
        out.contains("zero-opened"),
        "the wider rules are in force: {out}"
    );
}

/// A child cgroup (an exec's, below its container) inherits the parent's filter.
#[test]
fn child_cgroups_inherit_the_filter() {
    let cg = Cg::new("inherit");
    cg.manager.apply_device_rules(&cg.path, &rules()).unwrap();
    let child = format!("{}/exec", cg.path);
    cg.manager.create(&child).unwrap();
    let dir = cg.dir.join("exec");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs || exit 99\nhead -c 1 /dev/zero >/dev/null && echo zero-opened; cat /dev/null && echo null-ok",
            dir.display()
        ))
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(99));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("null-ok") && !text.contains("zero-opened"),
        "{text}"
    );
    assert!(fs::metadata(&dir).is_ok());
}
