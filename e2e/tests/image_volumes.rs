//! Image volumes (CRI `Mount.image`, KEP-4639, GA in Kubernetes 1.36): an image kubelet
//! pulled, mounted into a container read-only, nosuid, nodev and noexec, whole or at
//! its `image_sub_path`, with both launchers. The image stays while a container mounts
//! it, and nothing is left mounted after removal or a refused create.

use std::{fs, path::Path};

use crust_e2e::{
    image_builder::{Compression, Image, LayerBuilder, host_arch},
    world::{PodOptions, World, busybox_image},
};
use crust_proto::runtime::v1::{
    ContainerStatusRequest, ImageSpec, ImageStatusRequest, Mount, PullImageRequest,
    RemoveContainerRequest, RemoveImageRequest,
};
use tonic::Code;

const APPLETS: &[&str] = &["sh", "cat", "sleep", "ls", "touch", "grep"];
const RUNC: &str = "/usr/sbin/runc";

fn runc_config() -> String {
    assert!(
        Path::new(RUNC).is_file(),
        "{RUNC} not found: install it with `apt-get install runc`"
    );
    format!("[runtime.handlers.runc]\ntype = \"oci\"\npath = \"{RUNC}\"\n")
}

/// A two-layer data image (so it is mounted as an overlay): the top layer replaces
/// `data/a.txt`, adds an absolute symlink `link -> /etc` (which must resolve to the
/// image's `/etc`, not the host's) and an executable script (which noexec must stop).
fn data_image() -> Image {
    let mut lower = LayerBuilder::new();
    for dir in ["data", "data/sub", "etc", "bin"] {
        lower.dir(dir, 0o755);
    }
    lower
        .file("data/a.txt", b"one\n", 0o644)
        .file("data/sub/b.txt", b"deep\n", 0o644)
        .file("etc/image-marker", b"from the image\n", 0o644);
    let mut upper = LayerBuilder::new();
    upper
        .dir("data", 0o755)
        .file("data/a.txt", b"two\n", 0o644)
        .file("bin/tool", b"#!/bin/sh\necho ran\n", 0o755)
        .symlink("link", "/etc");
    Image::build(
        vec![
            lower.finish(Compression::Gzip),
            upper.finish(Compression::Gzip),
        ],
        host_arch(),
        serde_json::json!({}),
    )
}

/// Pulls `reference` and returns the image_ref kubelet would put in `Mount.image`.
async fn pull(w: &World, reference: &str) -> String {
    w.d.image()
        .await
        .expect("connect")
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: reference.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("pull {reference}: {e}"))
        .into_inner()
        .image_ref
}

fn image_mount(container_path: &str, image: &str, sub_path: &str) -> Mount {
    Mount {
        container_path: container_path.into(),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        image_sub_path: sub_path.into(),
        readonly: true,
        ..Default::default()
    }
}

/// Mount points crustd left on the host under this test's root.
fn leftover_mounts(w: &World) -> Vec<String> {
    let root = w.sb.path().display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .filter(|l| l.contains(&root) && l.contains("image-mounts"))
        .map(String::from)
        .collect()
}

async fn image_volumes_with(handler: &str) {
    let w = World::start(
        &busybox_image(APPLETS, |_| {}),
        "test/busybox",
        &runc_config(),
    )
    .await;
    w.registry
        .push_image("test/data", &["v1"], &data_image())
        .await
        .expect("push the data image");
    let data = pull(&w, &format!("{}/test/data:v1", w.registry.host())).await;
    // The container's own image, also mounted as a volume: one layer, a bind mount.
    let own = pull(&w, &w.image).await;
    let pod = w
        .run_pod(&PodOptions::named(&format!("imgvol{handler}")).handler(handler))
        .await;

    let mut config = w.config("reader", &["sleep", "1000"]);
    config.mounts = vec![
        image_mount("/vol", &data, ""),
        image_mount("/sub", &data, "data"),
        image_mount("/linked", &data, "link"),
        image_mount("/own", &own, ""),
    ];
    let ctr = w.run(&pod, config).await;
    let out = |cmd: &'static str| {
        let w = &w;
        let ctr = ctr.clone();
        async move { w.exec(&ctr, &["sh", "-c", cmd]).await }
    };

    let (code, stdout, _) = out("cat /vol/data/a.txt /sub/a.txt /sub/sub/b.txt").await;
    assert_eq!(
        (code, stdout.as_str()),
        (0, "two\ntwo\ndeep\n"),
        "[{handler}] the layers merged as in the image, the sub path at /sub"
    );
    let (code, stdout, _) = out("cat /linked/image-marker").await;
    assert_eq!(
        (code, stdout.as_str()),
        (0, "from the image\n"),
        "[{handler}] a symlink sub path resolves inside the image, not on the host"
    );
    let (code, _, stderr) = out("touch /vol/new").await;
    assert_ne!(code, 0, "[{handler}] the volume is read-only");
    assert!(stderr.contains("Read-only"), "[{handler}] {stderr}");
    let (code, stdout, stderr) = out("/vol/bin/tool").await;
    assert_ne!(
        code, 0,
        "[{handler}] noexec: the image's script must not run (printed {stdout:?})"
    );
    assert!(stderr.contains("denied"), "[{handler}] {stderr}");
    let (code, _, _) = out("/own/bin/busybox true").await;
    assert_ne!(
        code, 0,
        "[{handler}] noexec on a one-layer image's volume too"
    );
    let (code, stdout, _) = out("ls /own/bin/busybox").await;
    assert_eq!(
        code, 0,
        "[{handler}] the one-layer image is mounted: {stdout}"
    );
    let (_, mounts, _) = out("cat /proc/self/mounts").await;
    for target in ["/vol", "/sub", "/linked", "/own"] {
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(target))
            .unwrap_or_else(|| panic!("[{handler}] {target} not mounted:\n{mounts}"));
        let options: Vec<&str> = line.split(' ').nth(3).unwrap().split(',').collect();
        for flag in ["ro", "nosuid", "nodev", "noexec"] {
            assert!(
                options.contains(&flag),
                "[{handler}] {target} lacks {flag}: {line}"
            );
        }
    }

    // ContainerStatus reports the mounts as asked: the image and its sub path.
    let status =
        w.d.runtime()
            .await
            .expect("connect")
            .container_status(ContainerStatusRequest {
                container_id: ctr.clone(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("status");
    let sub = status
        .mounts
        .iter()
        .find(|m| m.container_path == "/sub")
        .expect("/sub reported");
    assert_eq!(
        sub.image.as_ref().map(|i| i.image.as_str()),
        Some(data.as_str())
    );
    assert_eq!(sub.image_sub_path, "data");
    assert!(sub.readonly && sub.host_path.is_empty(), "{sub:?}");

    // Removing the image while a container mounts it hides it; its layers stay.
    let mut images = w.d.image().await.expect("connect");
    images
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: data.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("RemoveImage of a mounted image");
    let (code, stdout, _) = out("cat /vol/data/a.txt").await;
    assert_eq!(
        (code, stdout.as_str()),
        (0, "two\n"),
        "[{handler}] the mounted image's layers stay while the container lives"
    );
    w.d.runtime()
        .await
        .expect("connect")
        .remove_container(RemoveContainerRequest {
            container_id: ctr.clone(),
        })
        .await
        .expect("RemoveContainer");
    assert_eq!(leftover_mounts(&w), Vec::<String>::new(), "[{handler}]");
    let gone = images
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: data.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
        .image;
    assert!(gone.is_none(), "[{handler}] the removed image is gone");
    let layers = w.sb.path().join("root/image/layers");
    let left: Vec<_> = fs::read_dir(&layers)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(
        left.len(),
        1,
        "[{handler}] only the busybox image's layer is left: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn image_volumes_builtin_launcher() {
    image_volumes_with("").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn image_volumes_runc() {
    image_volumes_with("runc").await;
}

/// Bad image volumes are refused with the field named, and a refused create leaves no
/// mount behind.
#[tokio::test(flavor = "multi_thread")]
async fn bad_image_volumes_are_refused() {
    let w = World::start(&busybox_image(APPLETS, |_| {}), "test/busybox", "").await;
    let own = pull(&w, &w.image).await;
    let pod = w.run_pod(&PodOptions::named("imgvolbad")).await;
    let cases = [
        (
            image_mount("/v", &own, "no/such/dir"),
            Code::InvalidArgument,
            "does not exist in image",
        ),
        (
            image_mount("/v", &own, "../etc"),
            Code::InvalidArgument,
            "image_sub_path",
        ),
        (
            image_mount("/v", &own, "/etc"),
            Code::InvalidArgument,
            "image_sub_path",
        ),
        (
            Mount {
                host_path: "/tmp".into(),
                ..image_mount("/v", &own, "")
            },
            Code::InvalidArgument,
            "host_path",
        ),
        (
            Mount {
                container_path: "/v".into(),
                host_path: "/tmp".into(),
                image_sub_path: "etc".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "image_sub_path",
        ),
        (
            image_mount("/v", "127.0.0.1:1/never/pulled:v1", ""),
            Code::NotFound,
            "never/pulled",
        ),
    ];
    for (i, (mount, code, text)) in cases.into_iter().enumerate() {
        let mut config = w.config(&format!("bad{i}"), &["sleep", "1000"]);
        config.mounts = vec![mount];
        let err = w
            .create(&pod, config)
            .await
            .expect_err(&format!("case {i} must be refused"));
        assert_eq!(err.code(), code, "case {i}: {err:?}");
        assert!(err.message().contains(text), "case {i}: {}", err.message());
        assert_eq!(leftover_mounts(&w), Vec::<String>::new(), "case {i}");
    }
}
