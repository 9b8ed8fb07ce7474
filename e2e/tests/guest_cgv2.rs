//! cgroup v2 for real, in the guest node (pure v2, every controller; e2e/src/guest.rs):
//! crustd with the cgroupfs driver runs a container whose cgroup carries the eBPF
//! device filter (a block node of the guest's own disk, mknod'ed in the container's
//! /dev, cannot be opened: EPERM; /dev/null and a node made for 1:3 work, with
//! CAP_MKNOD in the default set), `memory.oom.group` = 1, the controllers delegated
//! down to the container's cgroup, and PSI and swap in ContainerStats.
//!
//! The image comes from a docker-registry started inside the guest (no network there)
//! over a storage directory the host fills with its own registry and shares in.

use std::{fs, path::Path};

use crust_e2e::{
    binary,
    guest::{Guest, in_guest, workspace_root},
    registry::Registry,
    world::busybox_image,
};

const APPLETS: &[&str] = &["sh", "sleep", "cat", "head", "mknod", "grep", "ls", "echo"];

/// Fills a registry storage directory with the busybox test image (as
/// `busybox:v1`) under the workspace, where the guest sees it.
async fn registry_storage(dest: &Path) {
    let registry = Registry::start().await.expect("start the host registry");
    registry
        .push_image("busybox", &["v1"], &busybox_image(APPLETS, |_| {}))
        .await
        .expect("push busybox");
    let _ = fs::remove_dir_all(dest);
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(registry.storage())
        .arg(dest)
        .status()
        .unwrap();
    assert!(status.success(), "copy the registry storage");
}

/// Removes the shared copy of the registry storage on drop.
struct SharedDir(std::path::PathBuf);
impl Drop for SharedDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The guest side: registry, crustd (cgroupfs driver, cgroups under /crust-test),
/// a host-network pod with one `sleep` container, then the checks, as `KEY=value`
/// lines (and the stats JSON between markers).
fn script(storage: &str) -> String {
    let bin = in_guest(&binary("crustd"))
        .unwrap()
        .trim_end_matches("/crustd")
        .to_string();
    format!(
        r#"set -e
B={bin}
S=/run/crust-test
mkdir -p /var/tmp/crust/root /var/tmp/crust/net.d $S
cp -a {storage} /var/tmp/reg-storage
cat > /var/tmp/reg.yml <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/tmp/reg-storage
http:
  addr: 127.0.0.1:5123
EOF
systemd-run --quiet --unit=reg-test docker-registry serve /var/tmp/reg.yml
cat > /var/tmp/crust/crust.toml <<EOF
[network]
cni_conf_dir = "/var/tmp/crust/net.d"
[cgroup]
driver = "cgroupfs"
monitor_cgroup = "/crust-test/monitors"
pod_parent = "/crust-test/pods"
EOF
systemd-run --quiet --unit=crustd-test $B/crustd --config /var/tmp/crust/crust.toml \
  --root /var/tmp/crust/root --state $S --socket $S/crust.sock
export CONTAINER_RUNTIME_ENDPOINT=unix://$S/crust.sock
ctl() {{ $B/crustctl --timeout 60s "$@"; }}
# Port 5123: Debian's own docker-registry service (with auth) holds 5000.
for i in $(seq 300); do
  [ -S $S/crust.sock ] && busybox wget -q -O /dev/null http://127.0.0.1:5123/v2/ 2>/dev/null && break
  [ $i = 300 ] && {{ echo "registry or crustd not ready" >&2; exit 1; }}
  sleep 0.2
done
ctl pull 127.0.0.1:5123/busybox:v1 >/dev/null
cat > /var/tmp/pod.json <<EOF
{{"metadata": {{"name": "cgv2", "namespace": "default", "uid": "cgv2-uid"}},
 "linux": {{"security_context": {{"namespace_options": {{"network": "NODE"}}}}}}}}
EOF
cat > /var/tmp/ctr.json <<EOF
{{"metadata": {{"name": "c"}}, "image": {{"image": "127.0.0.1:5123/busybox:v1"}},
 "command": ["sleep", "100000"]}}
EOF
POD=$(ctl runp /var/tmp/pod.json)
CID=$(ctl create $POD /var/tmp/ctr.json /var/tmp/pod.json)
ctl start $CID >/dev/null
CG=$(find /sys/fs/cgroup/crust-test -maxdepth 4 -type d -name "$CID" | head -1)
PODCG=$(dirname $CG)
echo "CG=$CG"
echo "OOM_GROUP=$(cat $CG/memory.oom.group)"
echo "POD_SUBTREE=$(cat $PODCG/cgroup.subtree_control)"
echo "ROOT_SUBTREE=$(cat /sys/fs/cgroup/cgroup.subtree_control)"
echo "CTR_CONTROLLERS=$(cat $CG/cgroup.controllers)"
echo "CTR_SUBTREE=$(cat $CG/cgroup.subtree_control)"
set -- $(stat -c '%t %T' /dev/vda)
MAJ=$((0x$1)); MIN=$((0x$2))
echo "DISK=$MAJ:$MIN"
# Host side, the same node works for root: the filter is the container's alone.
head -c 512 /dev/vda >/dev/null && echo "HOST_DISK=readable"
ctl exec --sync $CID sh -c "
  grep CapBnd /proc/self/status
  mknod /dev/disk b $MAJ $MIN && echo MKNOD_DISK=ok
  head -c 512 /dev/disk >/dev/null 2>/tmp/err; echo DISK_READ=\$?; cat /tmp/err
  head -c 1 /dev/null; echo DEVNULL=\$?
  mknod /dev/null2 c 1 3 && echo MKNOD_NULL=ok
  echo hi > /dev/null2; echo NULL2_WRITE=\$?
" 2>&1 || true
echo STATS-BEGIN
ctl stats -o json $CID
echo STATS-END
ctl stop $CID >/dev/null; ctl rm $CID >/dev/null; ctl stopp $POD >/dev/null; ctl rmp $POD >/dev/null
echo "LEFT=$(find /sys/fs/cgroup/crust-test/pods -mindepth 1 -type d | wc -l)"
systemctl stop crustd-test reg-test
"#
    )
}

fn value<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the guest's output:\n{out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn cgroup_v2_device_filter_oom_group_controllers_and_stats() {
    let shared = SharedDir(
        workspace_root()
            .join("target/guest-share")
            .join(format!("cgv2-{}", std::process::id())),
    );
    let storage = shared.0.join("storage");
    registry_storage(&storage).await;
    let script = script(&in_guest(&storage).unwrap());
    let out = tokio::task::spawn_blocking(move || {
        let guest = Guest::boot("cgv2").expect("boot guest");
        let out = guest.run(&script, 900).expect("run in the guest");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + "\n--- stderr\n"
            + &String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let log = guest
                .run("journalctl -u crustd-test --no-pager | tail -50", 60)
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            panic!(
                "guest script failed ({}):\n{text}\n--- crustd\n{log}",
                out.status
            );
        }
        text
    })
    .await
    .unwrap();
    println!("{out}");

    // Device filter: the guest's disk node, made in the container, is refused by the
    // cgroup (EPERM), though root on the host side reads it and mknod itself works.
    assert_eq!(value(&out, "HOST_DISK"), "readable");
    assert_eq!(value(&out, "MKNOD_DISK"), "ok", "b *:* m allows mknod");
    assert_ne!(value(&out, "DISK_READ"), "0", "the disk node must not open");
    assert!(
        out.contains("/dev/disk: Operation not permitted"),
        "refused with EPERM (the device filter), not another error:\n{out}"
    );
    assert_eq!(value(&out, "DEVNULL"), "0", "/dev/null works");
    assert_eq!(value(&out, "MKNOD_NULL"), "ok", "mknod with CAP_MKNOD");
    assert_eq!(
        value(&out, "NULL2_WRITE"),
        "0",
        "a node made for 1:3 is allowed"
    );
    let bounding = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap_or_else(|| panic!("no CapBnd line:\n{out}"));
    assert_ne!(
        bounding & (1 << 27),
        0,
        "CAP_MKNOD is in the default set on v2"
    );

    // memory.oom.group and delegated controllers.
    assert_eq!(value(&out, "OOM_GROUP"), "1");
    for c in ["cpu", "memory", "pids", "io"] {
        for key in ["ROOT_SUBTREE", "POD_SUBTREE", "CTR_CONTROLLERS"] {
            assert!(
                value(&out, key).split_whitespace().any(|x| x == c),
                "{c} in {key}: {out}"
            );
        }
    }

    assert_eq!(
        value(&out, "CTR_SUBTREE"),
        "",
        "a container's cgroup holds its processes: it delegates nothing (execs join a child)"
    );

    // Stats: PSI for cpu, memory and io, and swap.
    let json = out
        .split_once("STATS-BEGIN")
        .and_then(|(_, rest)| rest.split_once("STATS-END"))
        .map(|(j, _)| j.trim())
        .unwrap();
    let all: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    // `stats -o json` prints ListContainerStats' answer: the container's is the one.
    let stats = all["stats"][0].clone();
    for path in [
        "/cpu/psi/Some",
        "/memory/psi/Some",
        "/memory/psi/Full",
        "/io/psi/Some",
    ] {
        assert!(stats.pointer(path).is_some(), "{path} in {stats}");
    }
    assert!(
        stats.pointer("/swap/swapUsageBytes").is_some(),
        "swap usage in {stats}"
    );
    assert_eq!(value(&out, "LEFT"), "0", "pod cgroups removed");
}
