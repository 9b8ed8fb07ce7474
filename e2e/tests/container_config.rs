//! Container configuration the real crustd must honour end to end: image VOLUMEs (with
//! the image's content copied up), CRI mounts of missing or symlinked host paths,
//! privileged containers in privileged pods, the device cgroup, and hugepage limits.
//! Each test starts its own registry and crustd; the harness removes what they leave.

use std::{fs, path::Path};

use crust_e2e::{
    image_builder::{Compression, Image, LayerBuilder, host_arch},
    world::{PodOptions, World, busybox_image},
};
use crust_proto::runtime::v1::{
    HugepageLimit, LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    Mount, RemoveContainerRequest,
};
use tonic::Code;

const APPLETS: &[&str] = &[
    "sh", "cat", "sleep", "echo", "mknod", "head", "grep", "ls", "touch",
];

const RUNC: &str = "/usr/sbin/runc";

/// Every world also offers the `runc` handler (type "oci"), so each behaviour is
/// checked with both launchers.
fn runc_config() -> String {
    assert!(
        Path::new(RUNC).is_file(),
        "{RUNC} not found: install it with `apt-get install runc`"
    );
    format!("[runtime.handlers.runc]\ntype = \"oci\"\npath = \"{RUNC}\"\n")
}

async fn world(repo: &str) -> World {
    World::start(&busybox_image(APPLETS, |_| {}), repo, &runc_config()).await
}

/// The container's cgroup directory in the v1 `controller` hierarchy.
fn cgroup_dir(w: &World, controller: &str, pod: &str, ctr: &str) -> std::path::PathBuf {
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(format!("{}/pods/{pod}/{ctr}", &w.sb.cgroup_prefix()[1..]))
}

/// An image with `VOLUME /data` whose layer already has `/data/seed`: the container
/// gets a writable volume at /data that starts with the seed (containerd's copy-up),
/// and the volume's directory goes away with the container.
async fn image_volume(handler: &str) {
    let mut layer = LayerBuilder::new();
    layer.busybox(APPLETS).expect("busybox-static is installed");
    for dir in ["etc", "proc", "sys", "dev", "tmp", "data"] {
        layer.dir(dir, 0o755);
    }
    layer.file("data/seed", b"from the image\n", 0o644);
    let image = Image::build(
        vec![layer.finish(Compression::Gzip)],
        host_arch(),
        serde_json::json!({"Cmd": ["sh"], "Env": ["PATH=/bin"], "Volumes": {"/data": {}}}),
    );
    let w = World::start(&image, "test/volume", &runc_config()).await;
    let pod = w.run_pod(&PodOptions::named("vol").handler(handler)).await;
    let ctr = w.run(&pod, w.config("app", &["sleep", "3600"])).await;

    let (code, out, err) = w.exec(&ctr, &["cat", "/data/seed"]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "from the image\n"),
        "the image's /data content is in the volume: {err}"
    );
    let (code, _, err) = w.exec(&ctr, &["touch", "/data/written"]).await;
    assert_eq!(code, 0, "the volume is writable: {err}");
    let (code, out, _) = w
        .exec(&ctr, &["grep", " /data ", "/proc/self/mountinfo"])
        .await;
    assert_eq!(code, 0, "/data is a mount of its own: {out}");

    let volumes = w.sb.root().join("containers").join(&ctr).join("volumes");
    assert!(
        volumes.join("0-data/written").is_file(),
        "the write landed in {}",
        volumes.display()
    );
    w.d.runtime()
        .await
        .unwrap()
        .remove_container(RemoveContainerRequest {
            container_id: ctr.clone(),
        })
        .await
        .expect("RemoveContainer");
    assert!(
        !volumes.exists(),
        "the volume is removed with the container"
    );
}

#[tokio::test]
async fn image_volume_holds_the_image_content_with_the_builtin_launcher() {
    image_volume("").await;
}

#[tokio::test]
async fn image_volume_holds_the_image_content_with_runc() {
    image_volume("runc").await;
}

/// A CRI mount whose host path does not exist yet is created as a directory (what
/// kubelet's hostPath volumes rely on with containerd); one whose host path is a
/// symlink binds the directory it points to.
async fn mount_host_paths(handler: &str) {
    let w = world("test/mounts").await;
    let missing = w.sb.path().join("host/not-yet");
    let real = w.sb.path().join("host/real");
    fs::create_dir_all(&real).unwrap();
    fs::write(real.join("file"), "through the link\n").unwrap();
    let link = w.sb.path().join("host/link");
    std::os::unix::fs::symlink(&real, &link).unwrap();

    let pod = w
        .run_pod(&PodOptions::named("mounts").handler(handler))
        .await;
    let mut config = w.config("app", &["sleep", "3600"]);
    config.mounts = vec![
        Mount {
            container_path: "/mnt/new".into(),
            host_path: missing.display().to_string(),
            ..Default::default()
        },
        Mount {
            container_path: "/mnt/link".into(),
            host_path: link.display().to_string(),
            ..Default::default()
        },
    ];
    let ctr = w.run(&pod, config).await;
    assert!(missing.is_dir(), "the missing host path was created");
    let (code, _, err) = w.exec(&ctr, &["touch", "/mnt/new/from-container"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        missing.join("from-container").is_file(),
        "the container's write appears on the host"
    );
    let (code, out, err) = w.exec(&ctr, &["cat", "/mnt/link/file"]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "through the link\n"),
        "the symlink's target is mounted: {err}"
    );
}

#[tokio::test]
async fn mount_host_paths_are_created_and_symlinks_resolved_with_the_builtin_launcher() {
    mount_host_paths("").await;
}

#[tokio::test]
async fn mount_host_paths_are_created_and_symlinks_resolved_with_runc() {
    mount_host_paths("runc").await;
}

fn privileged(
    mut c: crust_proto::runtime::v1::ContainerConfig,
) -> crust_proto::runtime::v1::ContainerConfig {
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("{key} missing from {status}"))
}

/// A privileged pod runs a privileged container with every capability the host has
/// (its bounding set) and no seccomp filter; a non-privileged pod refuses one with
/// INVALID_ARGUMENT naming the field.
async fn privileged_pod(handler: &str) {
    let w = world("test/privileged").await;
    let pod = w
        .run_pod(&PodOptions::named("priv").handler(handler).privileged())
        .await;
    let ctr = w
        .run(&pod, privileged(w.config("priv", &["sleep", "3600"])))
        .await;
    let (code, status, err) = w.exec(&ctr, &["cat", "/proc/self/status"]).await;
    assert_eq!(code, 0, "{err}");
    let host = fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(
        status_field(&status, "CapEff:"),
        status_field(&host, "CapBnd:"),
        "{handler}: all of the host's capabilities"
    );
    assert_eq!(
        status_field(&status, "Seccomp:"),
        "0",
        "{handler}: no seccomp filter"
    );

    let plain = w
        .run_pod(&PodOptions::named("plain").handler(handler))
        .await;
    let err = w
        .create(&plain, privileged(w.config("priv", &["sleep", "3600"])))
        .await
        .expect_err("a privileged container in a non-privileged pod");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(
        err.message().contains("security_context.privileged"),
        "names the field: {}",
        err.message()
    );
}

#[tokio::test]
async fn privileged_containers_need_a_privileged_pod_with_the_builtin_launcher() {
    privileged_pod("").await;
}

#[tokio::test]
async fn privileged_containers_need_a_privileged_pod_with_runc() {
    privileged_pod("runc").await;
}

/// The device cgroup allows mknod of any device but opening only the listed ones: a
/// block device node made in the container's /dev cannot be read (EPERM from the
/// cgroup, not ENXIO from a missing device). And no device node in the rootfs opens
/// at all, not even an allowed one (the overlay is mounted nodev: EACCES).
async fn device_cgroup(handler: &str) {
    let w = world("test/devices").await;
    let pod = w
        .run_pod(&PodOptions::named("devices").handler(handler))
        .await;
    let ctr = w.run(&pod, w.config("app", &["sleep", "3600"])).await;
    let list = fs::read_to_string(cgroup_dir(&w, "devices", &pod, &ctr).join("devices.list"))
        .expect("the container's v1 devices cgroup");
    assert!(
        !list.contains("a *:* rwm"),
        "the default allow-all is replaced: {list}"
    );
    assert!(
        list.contains("c 1:3 rwm"),
        "/dev/null stays allowed: {list}"
    );

    let (code, _, err) = w.exec(&ctr, &["mknod", "/dev/sda", "b", "8", "0"]).await;
    assert_eq!(code, 0, "mknod is allowed (CAP_MKNOD, 'b *:* m'): {err}");
    let (code, _, err) = w.exec(&ctr, &["head", "-c1", "/dev/sda"]).await;
    assert_ne!(code, 0, "reading 8:0 must fail");
    assert!(
        err.contains("Operation not permitted"),
        "refused by the device cgroup: {err}"
    );
    let (code, _, err) = w.exec(&ctr, &["mknod", "/tmp/null", "c", "1", "3"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = w.exec(&ctr, &["head", "-c1", "/tmp/null"]).await;
    assert_ne!(code, 0, "a device node in the rootfs must not open");
    assert!(
        err.contains("Permission denied"),
        "refused by the rootfs's nodev, though the cgroup allows 1:3: {err}"
    );
    let (code, _, err) = w.exec(&ctr, &["head", "-c1", "/dev/zero"]).await;
    assert_eq!(code, 0, "an allowed device still reads: {err}");
}

#[tokio::test]
async fn device_cgroup_denies_unlisted_devices_with_the_builtin_launcher() {
    device_cgroup("").await;
}

#[tokio::test]
async fn device_cgroup_denies_unlisted_devices_with_runc() {
    device_cgroup("runc").await;
}

/// A 2MB hugepage limit lands in the container's hugetlb cgroup where the host has a
/// hugetlb controller crust limits through; elsewhere CreateContainer refuses it,
/// naming the field, rather than dropping it.
#[tokio::test]
async fn hugepage_limits_are_written_or_refused() {
    let w = world("test/hugepages").await;
    let pod = w.run_pod(&PodOptions::named("huge")).await;
    let mut config = w.config("app", &["sleep", "3600"]);
    config.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            ..Default::default()
        }),
        ..Default::default()
    });
    let features = crust_runtime::cgroup::Cgroupfs::open(Path::new("/sys/fs/cgroup"))
        .unwrap()
        .features();
    if features.hugetlb && !features.v2 {
        println!("host has a v1 hugetlb controller: checking hugetlb.2MB.limit_in_bytes");
        let ctr = w.run(&pod, config).await;
        let file = cgroup_dir(&w, "hugetlb", &pod, &ctr).join("hugetlb.2MB.limit_in_bytes");
        assert_eq!(fs::read_to_string(&file).unwrap().trim(), "4194304");
    } else if features.hugetlb {
        println!("host has a v2 hugetlb controller: checking hugetlb.2MB.max");
        let ctr = w.run(&pod, config).await;
        let file = Path::new("/sys/fs/cgroup")
            .join(format!("{}/pods/{pod}/{ctr}", &w.sb.cgroup_prefix()[1..]))
            .join("hugetlb.2MB.max");
        assert_eq!(fs::read_to_string(&file).unwrap().trim(), "4194304");
    } else {
        println!(
            "host has no hugetlb controller crust limits through (no v1 hugetlb mount; \
             a hybrid host's cgroup2 is not used for limits): checking the refusal"
        );
        let err = w
            .create(&pod, config)
            .await
            .expect_err("a hugepage limit the host cannot hold");
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(
            err.message().contains("hugepage_limits"),
            "names the field: {}",
            err.message()
        );
    }
}
