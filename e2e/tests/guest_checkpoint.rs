//! CheckpointContainer on a node where CRIU works (the guest: Debian's criu 3.17 on
//! its 6.1 kernel; on this host's newer kernels that criu cannot run, see
//! docs/features.md). A runc container keeps counting into a file of its rootfs while
//! it is checkpointed: the archive has CRIU's images, `config.dump`, `spec.dump` and
//! the writable layer with the counter file, in CRI-O's and containerd's layout, and
//! the container goes on running and counting. Then the refusals: a built-in launcher
//! container, a bad location, an unknown id, a stopped container; none leaves a file.
//! Then the restore (CreateContainer with the archive as `image.image`, then
//! StartContainer): the original pod gone, the archive restored into a new pod, the
//! counter goes on from where it was checkpointed (its shell variable, printed to the
//! new container's log), exec, stop and removal work, and nothing of it is left.

use crust_e2e::guest_crustd::{BUSYBOX, GuestCrustd};
use serde_json::Value;

const RUNC: &str = "[runtime.handlers.runc]\ntype = \"oci\"\npath = \"/usr/sbin/runc\"\n";

fn status(node: &GuestCrustd, id: &str) -> Value {
    let out = node.crustctl(&format!("inspect {id}"), 60).unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The counter the container writes, read through ExecSync.
fn counter(node: &GuestCrustd, ctr: &str) -> u64 {
    let out = node
        .crustctl(&format!("exec -s {ctr} /bin/cat /counter"), 120)
        .unwrap();
    out.trim().parse().unwrap_or(0)
}

/// Waits (bounded by tries, not by time) until the counter passes `above`.
fn counter_passes(node: &GuestCrustd, ctr: &str, above: u64) -> u64 {
    for _ in 0..60 {
        let n = counter(node, ctr);
        if n > above {
            return n;
        }
        node.run("sleep 0.5", 30).unwrap();
    }
    panic!("counter of {ctr} never passed {above}");
}

/// `crustctl ARGS` expected to fail: its stderr.
fn crustctl_fails(node: &GuestCrustd, args: &str) -> String {
    let out = node
        .guest
        .run(
            &format!(
                "{} -t 120s {args}",
                crust_e2e::guest::in_guest(&crust_e2e::binary("crustctl")).unwrap()
            ),
            150,
        )
        .unwrap();
    assert!(!out.status.success(), "crustctl {args} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn make_container(node: &GuestCrustd, name: &str, runtime: Option<&str>) -> (String, String) {
    node.write(
        &format!("/root/pod-{name}.json"),
        &serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-pod")},
            "linux": {"security_context": {"namespace_options": {"network": 2}}}
        })
        .to_string(),
    )
    .unwrap();
    node.write(
        &format!("/root/ctr-{name}.json"),
        &serde_json::json!({
            "metadata": {"name": "counter"},
            "image": {"image": BUSYBOX},
            "command": ["/bin/sh", "-c", "i=0; while true; do i=$((i+1)); echo $i; echo $i > /counter; sleep 1; done"]
        })
        .to_string(),
    )
    .unwrap();
    let runtime = runtime
        .map(|r| format!("--runtime {r} "))
        .unwrap_or_default();
    let pod = node
        .crustctl(&format!("runp {runtime}/root/pod-{name}.json"), 180)
        .unwrap()
        .trim()
        .to_string();
    let ctr = node
        .crustctl(
            &format!("create {pod} /root/ctr-{name}.json /root/pod-{name}.json"),
            180,
        )
        .unwrap()
        .trim()
        .to_string();
    node.crustctl(&format!("start {ctr}"), 180).unwrap();
    (pod, ctr)
}

#[tokio::test]
async fn runc_container_checkpoints_and_keeps_running() {
    let node = GuestCrustd::start("checkpoint", RUNC)
        .await
        .expect("guest node with crustd");
    node.run("criu check", 120)
        .expect("criu works in the guest");
    let (pod, ctr) = make_container(&node, "ckpt", Some("runc"));
    // Past 2, so a restore that started the command afresh (from 1) cannot pass.
    let before = counter_passes(&node, &ctr, 2);

    node.run("mkdir -p /root/ckpt", 30).unwrap();
    node.crustctl(&format!("checkpoint --export /root/ckpt/c.tar {ctr}"), 300)
        .unwrap();
    let listing = node.run("tar -tf /root/ckpt/c.tar", 60).unwrap();
    for want in [
        "checkpoint/inventory.img",
        "checkpoint/pstree.img",
        "config.dump",
        "spec.dump",
        "rootfs-diff.tar",
    ] {
        assert!(
            listing.lines().any(|l| l.trim_start_matches("./") == want),
            "{want} not in the archive:\n{listing}"
        );
    }
    let config = node
        .run("tar -xOf /root/ckpt/c.tar config.dump", 60)
        .unwrap();
    let config: Value = serde_json::from_str(&config).unwrap_or_else(|e| panic!("{e}: {config}"));
    assert_eq!(config["id"], ctr.as_str(), "{config}");
    assert_eq!(config["name"], "counter", "{config}");
    assert!(
        config["rootfsImageName"]
            .as_str()
            .unwrap_or_default()
            .contains("busybox"),
        "{config}"
    );
    assert!(config["checkpointedTime"].is_string(), "{config}");
    let spec = node.run("tar -xOf /root/ckpt/c.tar spec.dump", 60).unwrap();
    let spec: Value = serde_json::from_str(&spec).unwrap_or_else(|e| panic!("{e}: {spec}"));
    assert!(
        spec["process"]["args"].to_string().contains("/counter"),
        "{spec}"
    );
    let diff = node
        .run("tar -xOf /root/ckpt/c.tar rootfs-diff.tar | tar -t", 60)
        .unwrap();
    assert!(
        diff.lines()
            .any(|l| l.trim_start_matches("./") == "counter"),
        "counter not in the writable layer's tar:\n{diff}"
    );
    // Nothing but the archive in the directory: no scratch or temp files.
    let left = node.run("ls -A /root/ckpt", 30).unwrap();
    assert_eq!(left.trim(), "c.tar", "{left}");

    // The container went on.
    let inspect = status(&node, &ctr);
    assert_eq!(inspect["status"]["state"], "CONTAINER_RUNNING", "{inspect}");
    counter_passes(&node, &ctr, before.max(counter(&node, &ctr)));

    // A built-in launcher container is refused, naming what checkpoint needs.
    let (builtin_pod, builtin) = make_container(&node, "builtin", None);
    let err = crustctl_fails(&node, &format!("checkpoint -e /root/ckpt/b.tar {builtin}"));
    assert!(
        err.contains("FailedPrecondition") && err.contains("oci"),
        "{err}"
    );
    // Bad locations name the field.
    for loc in ["relative.tar", "/root/no-such-dir/c.tar"] {
        let err = crustctl_fails(&node, &format!("checkpoint -e {loc} {ctr}"));
        assert!(
            err.contains("InvalidArgument") && err.contains("location"),
            "{loc}: {err}"
        );
    }
    let err = crustctl_fails(&node, "checkpoint -e /root/ckpt/n.tar no-such-container");
    assert!(err.contains("NotFound"), "{err}");
    // A stopped container has nothing to dump.
    node.crustctl(&format!("stop -t 5 {ctr}"), 180).unwrap();
    let err = crustctl_fails(&node, &format!("checkpoint -e /root/ckpt/s.tar {ctr}"));
    assert!(err.contains("FailedPrecondition"), "{err}");
    let left = node.run("ls -A /root/ckpt", 30).unwrap();
    assert_eq!(left.trim(), "c.tar", "refusals left files: {left}");

    for (p, c) in [(&pod, &ctr), (&builtin_pod, &builtin)] {
        node.crustctl(&format!("rm -f {c}"), 120).unwrap();
        node.crustctl(&format!("stopp {p}"), 120).unwrap();
        node.crustctl(&format!("rmp {p}"), 120).unwrap();
    }

    restore_into_a_new_pod(&node, before);
}

/// The archive restored into a new pod (the checkpointed one is gone): as crictl
/// does it, `create` with the archive's path as the image.
fn restore_into_a_new_pod(node: &GuestCrustd, before: u64) {
    node.write(
        "/root/pod-restored.json",
        &serde_json::json!({
            "metadata": {"name": "restored", "namespace": "default", "uid": "restored-pod"},
            "linux": {"security_context": {"namespace_options": {"network": 2}}}
        })
        .to_string(),
    )
    .unwrap();
    node.write(
        "/root/ctr-restored.json",
        &serde_json::json!({
            "metadata": {"name": "counter-restored"},
            "image": {"image": "/root/ckpt/c.tar"},
            "labels": {"restored": "yes"}
        })
        .to_string(),
    )
    .unwrap();
    let pod = node
        .crustctl("runp --runtime runc /root/pod-restored.json", 180)
        .unwrap()
        .trim()
        .to_string();
    let ctr = node
        .crustctl(
            &format!("create {pod} /root/ctr-restored.json /root/pod-restored.json"),
            300,
        )
        .unwrap()
        .trim()
        .to_string();
    let created = status(node, &ctr);
    assert_eq!(created["status"]["state"], "CONTAINER_CREATED", "{created}");
    assert!(
        created["status"]["image"]["image"]
            .as_str()
            .unwrap_or_default()
            .contains("busybox"),
        "the checkpoint's image: {created}"
    );
    assert_eq!(
        created["status"]["annotations"]["io.crust.checkpoint.restored-from"], "/root/ckpt/c.tar",
        "{created}"
    );
    assert_eq!(created["status"]["labels"]["restored"], "yes", "{created}");
    node.crustctl(&format!("start {ctr}"), 300)
        .unwrap_or_else(|e| panic!("restore: {e:#}"));
    let running = status(node, &ctr);
    assert_eq!(running["status"]["state"], "CONTAINER_RUNNING", "{running}");

    // Its log is the new container's, and the first value it printed continues the
    // checkpointed loop: at least one past what was seen before the checkpoint.
    let mut first = None;
    for _ in 0..60 {
        let log = node.crustctl(&format!("logs {ctr}"), 60).unwrap();
        first = log.lines().find_map(|l| l.trim().parse::<u64>().ok());
        if first.is_some() {
            break;
        }
        node.run("sleep 0.5", 30).unwrap();
    }
    let first = first.expect("the restored container prints its counter to its log");
    eprintln!(
        "counter past {before} before the checkpoint; the restored loop printed {first} first"
    );
    assert!(
        first > before,
        "the restored loop printed {first} first; it had passed {before} before the checkpoint"
    );
    // It goes on counting, and exec reaches it (runc exec into the restored one).
    counter_passes(node, &ctr, first);
    let out = node
        .crustctl(&format!("exec -s {ctr} /bin/echo alive"), 120)
        .unwrap();
    assert_eq!(out.trim(), "alive");

    node.crustctl(&format!("stop -t 5 {ctr}"), 180).unwrap();
    let stopped = status(node, &ctr);
    assert_eq!(stopped["status"]["state"], "CONTAINER_EXITED", "{stopped}");
    node.crustctl(&format!("rm {ctr}"), 120).unwrap();
    node.crustctl(&format!("stopp {pod}"), 120).unwrap();
    node.crustctl(&format!("rmp {pod}"), 120).unwrap();
    // Nothing of the restored container: no mount, no runc state, no directory.
    let left = node
        .run(
            &format!(
                "grep -c {ctr} /proc/self/mountinfo; find /var/lib/crust /run/crust -name '{ctr}*'; true"
            ),
            120,
        )
        .unwrap();
    assert_eq!(left.trim(), "0", "left of {ctr}: {left}");
}
