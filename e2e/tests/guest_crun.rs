//! The `oci` runtime handler with crun on a pure cgroup v2 node (the guest: crun is
//! Debian's, and runs only where cgroup v2 is): a pod and a container under crun, its
//! output in the CRI log, its memory limit in its cgroup, ExecSync, stop with the exit
//! code, and nothing of crun's state left after removal. Then both OCI runtimes (crun
//! and runc) under the systemd cgroup driver, as on a kubeadm node.

use crust_e2e::guest_crustd::{BUSYBOX, GuestCrustd};
use serde_json::Value;

const CRUN: &str = "[runtime.handlers.crun]\ntype = \"oci\"\npath = \"/usr/bin/crun\"\n";
const RUNC: &str = "[runtime.handlers.runc]\ntype = \"oci\"\npath = \"/usr/sbin/runc\"\n";

/// One guest at a time (each costs 2 GiB and both cores under TCG).
static ONE_GUEST: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn status(node: &GuestCrustd, id: &str) -> Value {
    let out = node.crustctl(&format!("inspect {id}"), 60).unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test]
async fn crun_runs_pods_and_containers_on_cgroup_v2() {
    let _one = ONE_GUEST.lock().await;
    let node = GuestCrustd::start("crun", CRUN)
        .await
        .expect("guest node with crustd");
    node.write(
        "/root/pod.json",
        &serde_json::json!({
            "metadata": {"name": "crun", "namespace": "default", "uid": "crun-pod"},
            // The host's network: the guest has no CNI config, and this is not about it.
            "linux": {"security_context": {"namespace_options": {"network": 2}}}
        })
        .to_string(),
    )
    .unwrap();
    node.write(
        "/root/ctr.json",
        &serde_json::json!({
            "metadata": {"name": "hello"},
            "image": {"image": BUSYBOX},
            "command": ["/bin/sh", "-c", "echo hello-from-crun; trap 'exit 3' TERM; while true; do sleep 1; done"],
            "linux": {"resources": {"memory_limit_in_bytes": 64 << 20}}
        })
        .to_string(),
    )
    .unwrap();
    let pod = node
        .crustctl("runp --runtime crun /root/pod.json", 180)
        .unwrap();
    let pod = pod.trim();
    let ctr = node
        .crustctl(&format!("create {pod} /root/ctr.json /root/pod.json"), 180)
        .unwrap();
    let ctr = ctr.trim().to_string();
    node.crustctl(&format!("start {ctr}"), 180).unwrap();
    let inspect = status(&node, &ctr);
    assert_eq!(inspect["status"]["state"], "CONTAINER_RUNNING", "{inspect}");

    // crun made it: its state directory under crustd's lists the container.
    let listed = node.run("crun --root /run/crust/runc list", 60).unwrap();
    assert!(listed.contains(&ctr), "crun list: {listed}");

    let cgroup = inspect["info"]["cgroup"]
        .as_str()
        .expect("verbose cgroup")
        .to_string();
    let max = node
        .run(
            &format!(
                "cat /sys/fs/cgroup/{}/memory.max",
                cgroup.trim_start_matches('/')
            ),
            60,
        )
        .unwrap();
    assert_eq!(max.trim(), (64u64 << 20).to_string(), "cgroup {cgroup}");

    let out = node
        .crustctl(&format!("exec -s {ctr} /bin/cat /proc/self/cgroup"), 120)
        .unwrap();
    assert!(out.trim().starts_with("0::/"), "{out}");
    let mut logged = String::new();
    for _ in 0..60 {
        logged = node.crustctl(&format!("logs {ctr}"), 60).unwrap();
        if logged.contains("hello-from-crun") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(logged.contains("hello-from-crun"), "{logged}");

    node.crustctl(&format!("stop -t 20 {ctr}"), 180).unwrap();
    let stopped = status(&node, &ctr);
    assert_eq!(stopped["status"]["state"], "CONTAINER_EXITED", "{stopped}");
    assert_eq!(
        stopped["status"]["exitCode"], 3,
        "SIGTERM reached the trap: {stopped}"
    );

    node.crustctl(&format!("rm {ctr}"), 120).unwrap();
    node.crustctl(&format!("stopp {pod}"), 120).unwrap();
    node.crustctl(&format!("rmp {pod}"), 120).unwrap();
    let listed = node.run("crun --root /run/crust/runc list", 60).unwrap();
    assert!(!listed.contains(&ctr), "crun still lists it: {listed}");

    // On the same node (a boot costs a minute): a pod with its own user namespace.
    userns_pod_under_crun(&node);
}

/// What kubelet sends for `hostUsers: false`: container ids 0-65535 as host 100000 on.
fn userns_options() -> Value {
    let m = serde_json::json!([{"host_id": 100000, "container_id": 0, "length": 65536}]);
    serde_json::json!({"mode": 0, "uids": m, "gids": m})
}

/// A POD-mode user namespace under crun, with the pod's PID namespace shared: root
/// inside is host 100000, a file written into a host-path volume is host 100000's,
/// and after removal no mount of the container and no userns-rootfs directory is left.
fn userns_pod_under_crun(node: &GuestCrustd) {
    let ns = userns_options();
    node.run(
        "mkdir -p /root/vol-userns && chmod 0777 /root/vol-userns && rm -f /root/vol-userns/*",
        60,
    )
    .unwrap();
    // A pod in its own user namespace cannot have the host's network (its root would
    // not own it): its own network namespace, with only a loopback from the guest's
    // CNI plugins (the guest has no network to attach to).
    node.run("mkdir -p /etc/cni/net.d", 60).unwrap();
    node.write(
        "/etc/cni/net.d/10-lo.conflist",
        r#"{"cniVersion": "1.0.0", "name": "lo-only", "plugins": [{"type": "loopback"}]}"#,
    )
    .unwrap();
    node.write(
        "/root/pod-userns.json",
        &serde_json::json!({
            "metadata": {"name": "crun-userns", "namespace": "default", "uid": "crun-userns-pod"},
            "linux": {"security_context": {"namespace_options": {
                "network": 0, "pid": 0, "userns_options": ns
            }}}
        })
        .to_string(),
    )
    .unwrap();
    node.write(
        "/root/ctr-userns.json",
        &serde_json::json!({
            "metadata": {"name": "mapped"},
            "image": {"image": BUSYBOX},
            "command": ["/bin/sh", "-c", "id -u; cat /proc/self/uid_map; touch /vol/made-inside; trap 'exit 0' TERM; while true; do sleep 1; done"],
            "mounts": [{"container_path": "/vol", "host_path": "/root/vol-userns"}],
            "linux": {"security_context": {"namespace_options": {"pid": 0, "userns_options": ns}}}
        })
        .to_string(),
    )
    .unwrap();
    let pod = node
        .crustctl("runp --runtime crun /root/pod-userns.json", 180)
        .unwrap();
    let pod = pod.trim().to_string();
    let ctr = node
        .crustctl(
            &format!("create {pod} /root/ctr-userns.json /root/pod-userns.json"),
            180,
        )
        .unwrap();
    let ctr = ctr.trim().to_string();
    node.crustctl(&format!("start {ctr}"), 180).unwrap();
    let inspect = status(node, &ctr);
    assert_eq!(inspect["status"]["state"], "CONTAINER_RUNNING", "{inspect}");

    let mut logged = String::new();
    for _ in 0..60 {
        logged = node.crustctl(&format!("logs {ctr}"), 60).unwrap();
        if logged.lines().count() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let lines: Vec<Vec<&str>> = logged
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.first(), Some(&vec!["0"]), "id -u: {logged}");
    assert_eq!(
        lines.get(1),
        Some(&vec!["0", "100000", "65536"]),
        "uid_map: {logged}"
    );
    let exec = node
        .crustctl(&format!("exec -s {ctr} /bin/cat /proc/self/uid_map"), 120)
        .unwrap();
    assert_eq!(
        exec.split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"],
        "exec's uid_map"
    );
    let mut owner = String::new();
    for _ in 0..60 {
        owner = node
            .run(
                "stat -c %u:%g /root/vol-userns/made-inside 2>/dev/null || true",
                60,
            )
            .unwrap();
        if !owner.trim().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(owner.trim(), "100000:100000", "owner on the guest");
    // The container's init is in a user namespace other than the guest's.
    let pid = inspect["info"]["pid"].as_u64().expect("verbose pid");
    let map = node.run(&format!("cat /proc/{pid}/uid_map"), 60).unwrap();
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"],
        "init's uid_map seen from the guest"
    );

    node.crustctl(&format!("stop -t 20 {ctr}"), 180).unwrap();
    node.crustctl(&format!("rm {ctr}"), 120).unwrap();
    node.crustctl(&format!("stopp {pod}"), 120).unwrap();
    node.crustctl(&format!("rmp {pod}"), 120).unwrap();
    let left = node
        .run(
            &format!(
                "grep -c -e {ctr} -e {pod} /proc/self/mountinfo || true; \
                 ls /run/crust/userns-rootfs/ 2>/dev/null || true"
            ),
            60,
        )
        .unwrap();
    assert_eq!(left.trim(), "0", "mounts or userns-rootfs left: {left}");
    let listed = node.run("crun --root /run/crust/runc list", 60).unwrap();
    assert!(!listed.contains(&ctr), "crun still lists it: {listed}");
}

/// `systemctl show UNIT -p P` values, in the order asked.
fn show(node: &GuestCrustd, unit: &str, props: &[&str]) -> Vec<String> {
    let ps: Vec<String> = props.iter().map(|p| format!("-p {p}")).collect();
    node.run(&format!("systemctl show {unit} {}", ps.join(" ")), 60)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Under the systemd driver crust starts each container's `crust-<id>.scope` in the
/// pod's slice and hands the OCI runtime that scope's cgroup (Delegate=yes: the
/// runtime writes the same limits into a cgroup that is its to manage), so a runc or
/// crun container is one unit like a built-in one: limits in systemd and the files,
/// the process inside, resize through the unit, and no unit or runtime state left.
#[tokio::test]
async fn oci_runtimes_under_the_systemd_driver() {
    let _one = ONE_GUEST.lock().await;
    let uid = "7c1d2e3f_4a5b_4c6d_8e9f_0a1b2c3d4e5f";
    let slice = format!("kubepods-burstable-pod{uid}.slice");
    let slice_dir = format!("/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/{slice}");
    let node = GuestCrustd::start(
        "oci-systemd",
        &format!("[cgroup]\ndriver = \"systemd\"\n{CRUN}{RUNC}"),
    )
    .await
    .expect("guest node with crustd");
    for handler in ["crun", "runc"] {
        eprintln!("guest_crun: {handler} under systemd");
        node.write(
            &format!("/root/pod-{handler}.json"),
            &serde_json::json!({
                "metadata": {"name": handler, "namespace": "default", "uid": format!("{handler}-{uid}")},
                "linux": {
                    "cgroup_parent": slice,
                    "security_context": {"namespace_options": {"network": 2}}
                }
            })
            .to_string(),
        )
        .unwrap();
        node.write(
            &format!("/root/ctr-{handler}.json"),
            &serde_json::json!({
                "metadata": {"name": "sleeper"},
                "image": {"image": BUSYBOX},
                "command": ["/bin/sh", "-c", "trap 'exit 7' TERM; while true; do sleep 1; done"],
                "linux": {"resources": {
                    "memory_limit_in_bytes": 48 << 20,
                    "memory_swap_limit_in_bytes": 48 << 20,
                    "cpu_quota": 25_000,
                    "cpu_period": 100_000
                }}
            })
            .to_string(),
        )
        .unwrap();
        let pod = node
            .crustctl(
                &format!("runp --runtime {handler} /root/pod-{handler}.json"),
                180,
            )
            .unwrap();
        let pod = pod.trim().to_string();
        let ctr = node
            .crustctl(
                &format!("create {pod} /root/ctr-{handler}.json /root/pod-{handler}.json"),
                180,
            )
            .unwrap();
        let ctr = ctr.trim().to_string();
        node.crustctl(&format!("start {ctr}"), 180).unwrap();
        let listed = node
            .run(&format!("{handler} --root /run/crust/runc list"), 60)
            .unwrap();
        assert!(listed.contains(&ctr), "{handler} list: {listed}");

        let scope = format!("crust-{ctr}.scope");
        let props = show(
            &node,
            &scope,
            &[
                "MemoryMax",
                "CPUQuotaPerSecUSec",
                "Slice",
                "Delegate",
                "ActiveState",
            ],
        );
        for want in [
            format!("MemoryMax={}", 48 << 20),
            "CPUQuotaPerSecUSec=250ms".to_string(),
            format!("Slice={slice}"),
            "Delegate=yes".to_string(),
            "ActiveState=active".to_string(),
        ] {
            assert!(props.contains(&want), "{handler}: {want} not in {props:?}");
        }
        let dir = format!("{slice_dir}/{scope}");
        let files = node
            .run(&format!("cat {dir}/memory.max {dir}/cpu.max"), 60)
            .unwrap();
        assert_eq!(
            files.lines().collect::<Vec<_>>(),
            [(48u64 << 20).to_string().as_str(), "25000 100000"],
            "{handler}: {files}"
        );
        // The container's init (the shell) is in the scope the runtime was given.
        let inspect = status(&node, &ctr);
        let pid = inspect["info"]["pid"].as_u64().expect("verbose pid");
        let cgroup = node.run(&format!("cat /proc/{pid}/cgroup"), 60).unwrap();
        assert!(
            cgroup.trim().ends_with(&format!("/{slice}/{scope}")),
            "{handler}: {cgroup}"
        );
        let exec = node
            .crustctl(&format!("exec -s {ctr} /bin/cat /proc/self/cgroup"), 120)
            .unwrap();
        assert!(exec.trim().starts_with("0::/"), "{handler}: {exec}");

        // Resize: the unit's property and the file.
        node.crustctl(&format!("update {ctr} --memory {}", 80 << 20), 120)
            .unwrap();
        assert_eq!(
            show(&node, &scope, &["MemoryMax"]),
            [format!("MemoryMax={}", 80 << 20)],
            "{handler}"
        );
        let max = node.run(&format!("cat {dir}/memory.max"), 60).unwrap();
        assert_eq!(max.trim(), (80u64 << 20).to_string(), "{handler}");

        node.crustctl(&format!("stop -t 20 {ctr}"), 180).unwrap();
        let stopped = status(&node, &ctr);
        assert_eq!(stopped["status"]["state"], "CONTAINER_EXITED", "{stopped}");
        assert_eq!(stopped["status"]["exitCode"], 7, "{handler}: {stopped}");
        node.crustctl(&format!("rm {ctr}"), 120).unwrap();
        node.crustctl(&format!("stopp {pod}"), 120).unwrap();
        node.crustctl(&format!("rmp {pod}"), 120).unwrap();
        let listed = node
            .run(&format!("{handler} --root /run/crust/runc list"), 60)
            .unwrap();
        assert!(!listed.contains(&ctr), "{handler} still lists it: {listed}");
        let left = node
            .run(
                "systemctl list-units --all --plain --no-legend 'crust-*.scope'",
                60,
            )
            .unwrap();
        assert_eq!(left.trim(), "", "{handler}: units left: {left}");
    }
}
