//! The `oci` runtime handler with crun on a pure cgroup v2 node (the guest: crun is
//! Debian's, and runs only where cgroup v2 is): a pod and a container under crun, its
//! output in the CRI log, its memory limit in its cgroup, ExecSync, stop with the exit
//! code, and nothing of crun's state left after removal.

use crust_e2e::guest_crustd::{BUSYBOX, GuestCrustd};
use serde_json::Value;

const CRUN: &str = "[runtime.handlers.crun]\ntype = \"oci\"\npath = \"/usr/bin/crun\"\n";

fn status(node: &GuestCrustd, id: &str) -> Value {
    let out = node.crustctl(&format!("inspect {id}"), 60).unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test]
async fn crun_runs_pods_and_containers_on_cgroup_v2() {
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
}
