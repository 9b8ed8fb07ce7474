//! The guest node itself (e2e/src/guest.rs): systemd as PID 1, pure cgroup v2 with the
//! controllers crust needs, AppArmor, and the host-built crust binaries runnable from
//! the share. Every guest suite builds on these facts.

use crust_e2e::{
    binary,
    guest::{Guest, in_guest},
};

#[test]
fn guest_is_a_systemd_cgroup_v2_node_that_runs_host_binaries() {
    let guest = Guest::boot("node").expect("boot guest");
    let crustd = in_guest(&binary("crustd")).unwrap();
    let out = guest
        .run_ok(
            &format!(
                "set -e
                 readlink /proc/1/exe
                 stat -fc %T /sys/fs/cgroup
                 cat /sys/fs/cgroup/cgroup.controllers
                 cat /sys/module/apparmor/parameters/enabled
                 {crustd} --version"
            ),
            120,
        )
        .unwrap_or_else(|e| panic!("{e}\n--- console\n{}", guest.console()));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].ends_with("/systemd"), "PID 1 is {}", lines[0]);
    assert_eq!(lines[1], "cgroup2fs", "{out}");
    for c in ["cpu", "memory", "pids", "io", "cpuset"] {
        assert!(
            lines[2].split(' ').any(|x| x == c),
            "controller {c} missing: {out}"
        );
    }
    assert_eq!(lines[3], "Y", "AppArmor enabled: {out}");
    assert!(lines[4].contains("crustd"), "{out}");
}
