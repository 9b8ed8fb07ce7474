//! The ImageService end to end: crustd as a process pulling from a real registry
//! (Debian `docker-registry` on loopback) images built here from busybox-static.

use std::{
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
    time::Duration,
};

use base64::Engine;
use crust_e2e::{
    Crustd, Sandbox, crustctl,
    image_builder::{Compression, Image, LayerBuilder, host_arch, index, sha256},
    registry::{ACCESS_TOKEN, BearerAuth, FakeRegistry, Registry, free_port},
};
use crust_proto::runtime::v1::{
    AuthConfig, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest,
    PullImageRequest, RemoveImageRequest, StreamImagesRequest,
};
use serde_json::json;
use tonic::{Code, Status};

const APPLETS: &[&str] = &["sh", "ls", "cat", "echo", "sleep", "true"];

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

/// busybox with hard-linked applets and a passwd naming uid 1000, single gzip layer.
fn busybox_image(user: &str) -> Image {
    let mut layer = LayerBuilder::new();
    layer.busybox(APPLETS).unwrap();
    layer.dir("etc", 0o755).file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        0o644,
    );
    Image::build(
        vec![layer.finish(Compression::Gzip)],
        host_arch(),
        json!({"User": user, "Cmd": ["sh"], "Env": ["PATH=/bin"]}),
    )
}

async fn pull(d: &Crustd, image: &str, auth: Option<AuthConfig>) -> Result<String, Status> {
    let mut client = d.image().await.unwrap();
    client
        .pull_image(PullImageRequest {
            image: spec(image),
            auth,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn status(
    d: &Crustd,
    image: &str,
    verbose: bool,
) -> crust_proto::runtime::v1::ImageStatusResponse {
    let mut client = d.image().await.unwrap();
    client
        .image_status(ImageStatusRequest {
            image: spec(image),
            verbose,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn list(d: &Crustd, filter: Option<&str>) -> Vec<crust_proto::runtime::v1::Image> {
    let mut client = d.image().await.unwrap();
    let filter = filter.map(|f| ImageFilter { image: spec(f) });
    client
        .list_images(ListImagesRequest { filter })
        .await
        .unwrap()
        .into_inner()
        .images
}

async fn remove(d: &Crustd, image: &str) -> Result<(), Status> {
    let mut client = d.image().await.unwrap();
    client
        .remove_image(RemoveImageRequest { image: spec(image) })
        .await
        .map(|_| ())
}

fn layer_dir(sb: &Sandbox, chain_id: &str) -> PathBuf {
    sb.root()
        .join("image/layers")
        .join(chain_id.trim_start_matches("sha256:"))
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Asserts the store holds nothing: no layers, no blobs, no temp leftovers.
fn assert_store_empty(sb: &Sandbox, context: &str) {
    for sub in ["layers", "blobs/sha256", "tmp"] {
        let dir = sb.root().join("image").join(sub);
        assert_eq!(
            entries(&dir),
            Vec::<String>::new(),
            "{context}: {} must be empty",
            dir.display()
        );
    }
    assert_eq!(
        entries(&sb.root().join("records/image")),
        Vec::<String>::new(),
        "{context}: no image records"
    );
}

fn chain_id(prev: &str, diff: &str) -> String {
    sha256(format!("{prev} {diff}").as_bytes())
}

async fn started(sb: &Sandbox, extra: &str) -> Crustd {
    sb.write_config(extra).unwrap();
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    d
}

#[tokio::test]
async fn pull_status_list_fsinfo_remove_single_layer() {
    let registry = Registry::start().await.unwrap();
    let image = busybox_image("1000");
    registry
        .push_image("test/busybox", &["v1"], &image)
        .await
        .unwrap();
    let sb = Sandbox::new().unwrap();
    let mut d = started(&sb, "").await;
    let name = format!("{}/test/busybox:v1", registry.host());

    assert!(
        status(&d, &name, false).await.image.is_none(),
        "not pulled yet: image is nil, not an error"
    );
    let id = pull(&d, &name, None).await.unwrap();
    assert_eq!(id, image.id(), "image_ref is the config digest");

    let repo_digest = format!(
        "{}/test/busybox@{}",
        registry.host(),
        image.manifest_digest()
    );
    for query in [
        name.as_str(),
        id.as_str(),
        id.trim_start_matches("sha256:"),
        repo_digest.as_str(),
    ] {
        let got = status(&d, query, false)
            .await
            .image
            .unwrap_or_else(|| panic!("ImageStatus {query}"));
        assert_eq!(got.id, id, "{query}");
        assert_eq!(got.repo_tags, vec![name.clone()], "{query}");
        assert_eq!(got.repo_digests, vec![repo_digest.clone()], "{query}");
        assert_eq!(
            got.size,
            image.size(),
            "{query}: compressed layers + config"
        );
        assert_eq!(
            got.uid.map(|u| u.value),
            Some(1000),
            "{query}: uid from the config's User"
        );
        assert!(!got.pinned);
    }
    let verbose = status(&d, &name, true).await;
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    assert_eq!(
        info["imageSpec"]["config"]["Cmd"],
        json!(["sh"]),
        "verbose info carries the image config"
    );

    assert_eq!(list(&d, None).await.len(), 1);
    assert_eq!(list(&d, Some(&name)).await.len(), 1);
    assert_eq!(
        list(&d, Some("docker.io/library/other:1")).await.len(),
        0,
        "filter excludes others"
    );
    let mut client = d.image().await.unwrap();
    let mut stream = client
        .stream_images(StreamImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(batch) = stream.message().await.unwrap() {
        streamed.extend(batch.images);
    }
    assert_eq!(
        streamed.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        vec![id.clone()]
    );

    // The unpacked layer: busybox and its hard-linked applets share one inode.
    let layer = layer_dir(&sb, &image.layers[0].diff_id());
    let bb = std::fs::metadata(layer.join("bin/busybox")).unwrap();
    assert_eq!(bb.len(), std::fs::metadata("/bin/busybox").unwrap().len());
    assert_eq!(bb.nlink(), 1 + APPLETS.len() as u64);
    assert_eq!(
        std::fs::metadata(layer.join("bin/sh")).unwrap().ino(),
        bb.ino()
    );

    let fs = client
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let usage = &fs.image_filesystems[0];
    let used = usage.used_bytes.unwrap().value;
    assert!(
        used >= bb.len(),
        "used bytes {used} must count the busybox binary"
    );
    assert!(
        usage.inodes_used.unwrap().value >= 5,
        "inodes: dirs, busybox, passwd, blobs"
    );
    assert_eq!(
        usage.fs_id.as_ref().unwrap().mountpoint,
        sb.root().join("image").display().to_string()
    );

    // Survives a restart.
    d.terminate().await.unwrap();
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    assert_eq!(
        status(&d, &name, false).await.image.map(|i| i.id),
        Some(id.clone()),
        "image survives restart"
    );

    remove(&d, &name).await.unwrap();
    assert!(status(&d, &id, false).await.image.is_none());
    assert_store_empty(&sb, "after removing the only image");
    remove(&d, &name)
        .await
        .expect("removing a missing image succeeds");
    remove(&d, &id)
        .await
        .expect("removing a missing id succeeds");
    let fs = client_fs(&d).await;
    assert!(fs < used, "usage shrinks after removal ({fs} < {used})");
}

async fn client_fs(d: &Crustd) -> u64 {
    let mut client = d.image().await.unwrap();
    client
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner()
        .image_filesystems[0]
        .used_bytes
        .unwrap()
        .value
}

#[tokio::test]
async fn multi_layer_whiteouts_opaque_and_zstd() {
    let registry = Registry::start().await.unwrap();
    let mut base = LayerBuilder::new();
    base.busybox(APPLETS).unwrap();
    base.dir("etc", 0o755)
        .file("etc/motd", b"hello\n", 0o644)
        .dir("var", 0o755)
        .dir("var/cache", 0o755);
    base.file("var/cache/old", b"stale", 0o644);
    let base = base.finish(Compression::Gzip);
    let mut top = LayerBuilder::new();
    top.dir("etc", 0o755)
        .whiteout("etc/motd")
        .dir("var", 0o755)
        .dir("var/cache", 0o700)
        .opaque("var/cache");
    top.file("var/cache/new", b"fresh", 0o600);
    let top = top.finish(Compression::Zstd);
    let mut plain = LayerBuilder::new();
    plain
        .dir("srv", 0o755)
        .file("srv/index.html", b"<h1>crust</h1>", 0o644)
        .symlink("srv/link", "/etc/passwd");
    let plain = plain.finish(Compression::None);
    let image = Image::build(
        vec![base.clone(), top.clone(), plain.clone()],
        host_arch(),
        json!({"Cmd": ["sh"]}),
    );
    registry
        .push_image("test/layered", &["v1"], &image)
        .await
        .unwrap();

    let sb = Sandbox::new().unwrap();
    let d = started(&sb, "").await;
    let name = format!("{}/test/layered:v1", registry.host());
    assert_eq!(pull(&d, &name, None).await.unwrap(), image.id());

    let c0 = base.diff_id();
    let c1 = chain_id(&c0, &top.diff_id());
    let c2 = chain_id(&c1, &plain.diff_id());
    assert_eq!(entries(&sb.root().join("image/layers")).len(), 3);
    let l1 = layer_dir(&sb, &c1);
    let wh = std::fs::symlink_metadata(l1.join("etc/motd")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout is a 0/0 char device"
    );
    assert_eq!(
        getxattr(&l1.join("var/cache"), "trusted.overlay.opaque"),
        b"y",
        "opaque dir carries trusted.overlay.opaque=y"
    );
    assert!(!l1.join("var/cache/.wh..wh..opq").exists());
    assert_eq!(std::fs::read(l1.join("var/cache/new")).unwrap(), b"fresh");
    let l2 = layer_dir(&sb, &c2);
    assert_eq!(
        std::fs::read(l2.join("srv/index.html")).unwrap(),
        b"<h1>crust</h1>",
        "uncompressed layer"
    );
    assert_eq!(
        std::fs::read_link(l2.join("srv/link")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        std::fs::read(layer_dir(&sb, &c0).join("etc/motd")).unwrap(),
        b"hello\n"
    );
}

fn getxattr(path: &Path, name: &str) -> Vec<u8> {
    let mut buf = vec![0u8; 64];
    let n = rustix::fs::getxattr(path, name, &mut buf[..])
        .unwrap_or_else(|e| panic!("getxattr {name} {}: {e}", path.display()));
    buf.truncate(n);
    buf
}

#[tokio::test]
async fn multi_arch_index_resolves_host_platform() {
    let registry = Registry::start().await.unwrap();
    let mine = busybox_image("0");
    let mut other_layer = LayerBuilder::new();
    other_layer.file("not-for-this-node", b"s390x", 0o644);
    let other = Image::build(
        vec![other_layer.finish(Compression::Gzip)],
        "s390x",
        json!({}),
    );
    for img in [&mine, &other] {
        registry.push_image("test/multi", &[], img).await.unwrap();
    }
    let idx = index(&[(&other, "s390x", None), (&mine, host_arch(), None)]);
    registry
        .push_manifest(
            "test/multi",
            "v1",
            "application/vnd.oci.image.index.v1+json",
            &idx,
        )
        .await
        .unwrap();
    let foreign = index(&[(&other, "s390x", None)]);
    registry
        .push_manifest(
            "test/multi",
            "foreign",
            "application/vnd.oci.image.index.v1+json",
            &foreign,
        )
        .await
        .unwrap();

    let sb = Sandbox::new().unwrap();
    let d = started(&sb, "").await;
    let name = format!("{}/test/multi:v1", registry.host());
    assert_eq!(
        pull(&d, &name, None).await.unwrap(),
        mine.id(),
        "the index entry for this node's platform"
    );
    let got = status(&d, &name, false).await.image.unwrap();
    assert_eq!(
        got.repo_digests,
        vec![format!("{}/test/multi@{}", registry.host(), sha256(&idx))],
        "repo digest is the index's"
    );
    // By digest, too.
    let by_digest = format!("{}/test/multi@{}", registry.host(), sha256(&idx));
    assert_eq!(pull(&d, &by_digest, None).await.unwrap(), mine.id());

    let foreign_name = format!("{}/test/multi:foreign", registry.host());
    let err = pull(&d, &foreign_name, None).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains(&foreign_name) && err.message().contains("platform"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn several_tags_untag_then_delete() {
    let registry = Registry::start().await.unwrap();
    let image = busybox_image("app");
    registry
        .push_image("test/tags", &["v1", "v2", "latest"], &image)
        .await
        .unwrap();
    let sb = Sandbox::new().unwrap();
    let d = started(
        &sb,
        "[image]\npinned_images = [\"PLACEHOLDER\"]\n"
            .replace("PLACEHOLDER", &format!("{}/test/tags:v2", registry.host()))
            .as_str(),
    )
    .await;
    let host = registry.host();
    let (v1, v2, latest) = (
        format!("{host}/test/tags:v1"),
        format!("{host}/test/tags:v2"),
        format!("{host}/test/tags"),
    );
    for name in [&v1, &v2, &latest] {
        assert_eq!(pull(&d, name, None).await.unwrap(), image.id());
    }
    let got = status(&d, &v1, false).await.image.unwrap();
    let mut tags = got.repo_tags.clone();
    tags.sort();
    let mut want = vec![v1.clone(), v2.clone(), format!("{latest}:latest")];
    want.sort();
    assert_eq!(tags, want, "one image, three tags");
    assert_eq!(got.username, "app", "non-numeric User is a username");
    assert!(got.uid.is_none());
    assert!(got.pinned, "pinned_images names one of its tags");
    assert_eq!(list(&d, None).await.len(), 1);

    remove(&d, &v1).await.unwrap();
    let got = status(&d, &v2, false)
        .await
        .image
        .expect("still there under v2");
    assert!(!got.repo_tags.contains(&v1), "v1 untagged");
    assert!(
        status(&d, &v1, false).await.image.is_none(),
        "v1 no longer resolves"
    );
    remove(&d, &latest).await.unwrap();
    assert_eq!(
        entries(&sb.root().join("image/layers")).len(),
        1,
        "layers stay while a tag is left"
    );
    remove(&d, &v2).await.unwrap();
    assert!(list(&d, None).await.is_empty());
    assert_store_empty(&sb, "after removing the last tag");
}

#[tokio::test]
async fn pull_errors_have_cri_codes_and_name_the_image() {
    let registry = Registry::start().await.unwrap();
    registry
        .push_image("test/present", &["v1"], &busybox_image("0"))
        .await
        .unwrap();
    let closed = free_port().unwrap();
    let sb = Sandbox::new().unwrap();
    let d = started(&sb, "").await;
    let host = registry.host();
    let cases = [
        ("Upper/Case:tag".to_string(), Code::InvalidArgument),
        (format!("{host}/test/present:"), Code::InvalidArgument),
        (format!("{host}/test/present:missing"), Code::NotFound),
        (format!("{host}/test/absent:v1"), Code::NotFound),
        (
            format!("{host}/test/present@sha256:{}", "0".repeat(64)),
            Code::NotFound,
        ),
        (format!("127.0.0.1:{closed}/test/x:v1"), Code::Unavailable),
    ];
    for (image, code) in cases {
        let err = pull(&d, &image, None).await.unwrap_err();
        assert_eq!(err.code(), code, "{image}: {err:?}");
        assert!(
            err.message().contains(&image),
            "{image}: message {:?} must name the image",
            err.message()
        );
    }
    let mut client = d.image().await.unwrap();
    let err = client
        .pull_image(PullImageRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "empty image");
    assert!(
        list(&d, None).await.is_empty(),
        "failed pulls leave no image"
    );
    assert_store_empty(&sb, "after failed pulls");
}

#[tokio::test]
async fn htpasswd_auth() {
    let registry = Registry::start_with_auth("alice", "s3cret-pw")
        .await
        .unwrap();
    let image = busybox_image("0");
    registry
        .push_image("private/app", &["v1"], &image)
        .await
        .unwrap();
    let sb = Sandbox::new().unwrap();
    let d = started(&sb, "").await;
    let name = format!("{}/private/app:v1", registry.host());

    let err = pull(&d, &name, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "anonymous: {err:?}");
    assert!(err.message().contains(&name), "{}", err.message());
    let wrong = AuthConfig {
        username: "alice".into(),
        password: "wrong-pw".into(),
        ..Default::default()
    };
    let err = pull(&d, &name, Some(wrong)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "wrong password: {err:?}");
    assert!(
        !err.message().contains("wrong-pw"),
        "no credential in errors: {}",
        err.message()
    );

    let right = AuthConfig {
        username: "alice".into(),
        password: "s3cret-pw".into(),
        ..Default::default()
    };
    assert_eq!(pull(&d, &name, Some(right)).await.unwrap(), image.id());
    remove(&d, &name).await.unwrap();
    let blob = AuthConfig {
        auth: base64::engine::general_purpose::STANDARD.encode("alice:s3cret-pw"),
        ..Default::default()
    };
    assert_eq!(
        pull(&d, &name, Some(blob)).await.unwrap(),
        image.id(),
        "auth (base64 user:pass) works too"
    );
    let logs = d.logs();
    assert!(
        !logs.contains("s3cret-pw") && !logs.contains("wrong-pw"),
        "credentials never logged"
    );
}

#[tokio::test]
async fn progress_timeout_is_deadline_exceeded() {
    let image = busybox_image("0");
    let blob_len = image.layers[0].blob.len();
    let fake = FakeRegistry::start(FakeRegistry::routes_for(
        "slow/app",
        "v1",
        &image,
        Some((0, blob_len / 2)),
    ))
    .await
    .unwrap();
    let sb = Sandbox::new().unwrap();
    let d = started(&sb, "[image]\npull_progress_timeout = \"1s\"\n").await;
    let name = format!("{}/slow/app:v1", fake.host());
    let started_at = std::time::Instant::now();
    let err = pull(&d, &name, None).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains(&name), "{}", err.message());
    assert!(
        started_at.elapsed() < Duration::from_secs(20),
        "gave up after the progress timeout"
    );
    // The unpacker may still be draining on its thread for a moment.
    for _ in 0..100 {
        if entries(&sb.root().join("image/tmp")).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_store_empty(&sb, "after a timed-out pull");
}

#[tokio::test]
async fn concurrent_identical_pulls_fetch_each_layer_once() {
    let registry = Registry::start().await.unwrap();
    let mut extra = LayerBuilder::new();
    extra
        .dir("data", 0o755)
        .file("data/blob", &vec![42u8; 4 << 20], 0o644);
    let mut base = LayerBuilder::new();
    base.busybox(APPLETS).unwrap();
    let image = Image::build(
        vec![
            base.finish(Compression::Gzip),
            extra.finish(Compression::Zstd),
        ],
        host_arch(),
        json!({}),
    );
    registry
        .push_image("test/shared", &["v1", "v2"], &image)
        .await
        .unwrap();
    let sb = Sandbox::new().unwrap();
    let d = started(&sb, "").await;
    let host = registry.host();
    let names: Vec<String> = (0..6)
        .map(|i| {
            format!(
                "{host}/test/shared:{}",
                if i % 2 == 0 { "v1" } else { "v2" }
            )
        })
        .collect();
    let pulls = names.iter().map(|n| pull(&d, n, None));
    let ids = futures::future::join_all(pulls).await;
    for id in ids {
        assert_eq!(id.unwrap(), image.id());
    }
    let unpacked = d.logs().matches("layer unpacked").count();
    assert_eq!(
        unpacked,
        2,
        "each of the 2 layers is fetched once across 6 concurrent pulls:\n{}",
        d.logs()
    );
    let got = status(&d, &names[0], false).await.image.unwrap();
    assert_eq!(got.repo_tags.len(), 2);
}

#[tokio::test]
async fn crash_mid_pull_leaves_no_image_and_no_garbage() {
    let mut first = LayerBuilder::new();
    first.busybox(APPLETS).unwrap();
    let mut second = LayerBuilder::new();
    second
        .dir("data", 0o755)
        .file("data/big", &vec![7u8; 2 << 20], 0o644);
    let image = Image::build(
        vec![
            first.finish(Compression::Gzip),
            second.finish(Compression::None),
        ],
        host_arch(),
        json!({}),
    );
    let stall_at = image.layers[1].blob.len() / 2;
    let fake = FakeRegistry::start(FakeRegistry::routes_for(
        "crash/app",
        "v1",
        &image,
        Some((1, stall_at)),
    ))
    .await
    .unwrap();
    let sb = Sandbox::new().unwrap();
    let mut d = started(&sb, "").await;
    let name = format!("{}/crash/app:v1", fake.host());

    let endpoint = sb.endpoint();
    let pulling = tokio::spawn({
        let name = name.clone();
        async move {
            let channel = crust_ctl::connect(&endpoint, Duration::from_secs(10))
                .await
                .unwrap();
            let mut client = crust_ctl::image_client(channel);
            client
                .pull_image(PullImageRequest {
                    image: spec(&name),
                    ..Default::default()
                })
                .await
        }
    });
    // Wait until the stalled layer is half unpacked in tmp/ and the first is done.
    let tmp = sb.root().join("image/tmp");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let partial = entries(&tmp)
            .iter()
            .any(|e| tmp.join(e).join("data/big").exists());
        if partial && d.logs().contains("layer unpacked") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pull never got mid-way:\n{}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !entries(&sb.root().join("image/layers")).is_empty(),
        "the first layer completed before the crash"
    );
    d.crash().await.unwrap();
    let err = pulling.await.unwrap().unwrap_err();
    assert_ne!(err.code(), Code::Ok);

    let d = sb.start().map(|mut d| async move {
        d.wait_ready().await.unwrap();
        d
    });
    let d = d.unwrap().await;
    assert!(
        status(&d, &name, false).await.image.is_none(),
        "no visible image after the crash"
    );
    assert!(list(&d, None).await.is_empty());
    assert_store_empty(&sb, "after restart following a crash mid-pull");
}

#[tokio::test]
async fn crustctl_image_verbs() {
    let registry = Registry::start_with_auth("bob", "pw-bob").await.unwrap();
    let image = busybox_image("1000");
    registry
        .push_image("ctl/busybox", &["v1"], &image)
        .await
        .unwrap();
    let sb = Sandbox::new().unwrap();
    let _d = started(&sb, "").await;
    let ep = sb.endpoint();
    let name = format!("{}/ctl/busybox:v1", registry.host());
    let run = |args: &[&str]| {
        let out = crustctl(&ep, args).unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, _, stderr) = run(&["pull", &name]);
    assert!(!ok, "pull without creds fails");
    assert!(
        stderr.contains("Unauthenticated") || stderr.contains("authentication"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = run(&["pull", "--creds", "bob:pw-bob", &name]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("Image is up to date for {}", image.id())),
        "{stdout}"
    );
    let auth = base64::engine::general_purpose::STANDARD.encode("bob:pw-bob");
    let (ok, _, stderr) = run(&["pull", "--auth", &auth, &name]);
    assert!(ok, "--auth: {stderr}");

    let (ok, stdout, _) = run(&["images"]);
    assert!(ok);
    let short_id = &image.id()["sha256:".len()..][..13];
    assert!(
        stdout.contains("IMAGE") && stdout.contains("TAG") && stdout.contains("IMAGE ID"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{}/ctl/busybox", registry.host()))
            && stdout.contains("v1")
            && stdout.contains(short_id),
        "{stdout}"
    );
    let (_, stdout, _) = run(&["images", "-q"]);
    assert_eq!(stdout.trim(), image.id());
    let (_, stdout, _) = run(&["images", "--digests"]);
    assert!(
        stdout.contains("DIGEST")
            && stdout.contains(&image.manifest_digest()["sha256:".len()..][..13]),
        "{stdout}"
    );
    let (_, stdout, _) = run(&["images", "-v"]);
    assert!(
        stdout.contains(&format!("ID: {}", image.id())) && stdout.contains("RepoTags:"),
        "{stdout}"
    );

    let (ok, stdout, _) = run(&["inspecti", &name]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["status"]["id"], json!(image.id()));
    assert_eq!(v["info"]["imageSpec"]["config"]["User"], json!("1000"));

    let (ok, stdout, _) = run(&["imagefsinfo"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        v["status"]["imageFilesystems"][0]["usedBytes"]["value"]
            .as_str()
            .is_some_and(|s| s.parse::<u64>().unwrap() > 0),
        "{stdout}"
    );

    let (ok, stdout, stderr) = run(&["rmi", &name]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("Deleted: {name}")), "{stdout}");
    let (_, stdout, _) = run(&["images", "-q"]);
    assert!(stdout.trim().is_empty(), "{stdout}");

    run(&["pull", "--creds", "bob:pw-bob", &name]);
    let (ok, stdout, stderr) = run(&["rmi", "--prune"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("Deleted"),
        "prune removes images no container uses: {stdout}"
    );
    let (_, stdout, _) = run(&["images", "-q"]);
    assert!(stdout.trim().is_empty(), "{stdout}");
}

#[tokio::test]
async fn client_deadline_cancels_the_pull_and_cleans_up() {
    let image = busybox_image("0");
    let stall_at = image.layers[0].blob.len() / 2;
    let fake = FakeRegistry::start(FakeRegistry::routes_for(
        "slow/app",
        "v1",
        &image,
        Some((0, stall_at)),
    ))
    .await
    .unwrap();
    let sb = Sandbox::new().unwrap();
    let d = started(&sb, "").await;
    let name = format!("{}/slow/app:v1", fake.host());
    let mut client = d.image().await.unwrap();
    let mut request = tonic::Request::new(PullImageRequest {
        image: spec(&name),
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(2));
    let err = client.pull_image(request).await.unwrap_err();
    // tonic's client reports its own expired deadline as CANCELLED; either way the
    // call ended because of the deadline.
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    // The daemon drops the pull: its temp directory goes away without a restart.
    let tmp = sb.root().join("image/tmp");
    for _ in 0..250 {
        if entries(&tmp).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_store_empty(&sb, "after the client's deadline");
    assert!(list(&d, None).await.is_empty());
}

#[tokio::test]
async fn registries_conf_rewrites_and_falls_back_from_a_dead_mirror() {
    let registry = Registry::start().await.unwrap();
    let image = busybox_image("0");
    registry
        .push_image("upstream/team/app", &["v1"], &image)
        .await
        .unwrap();
    let dead = free_port().unwrap();
    let sb = Sandbox::new().unwrap();
    let conf = sb.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nprefix = \"example.invalid/team\"\nlocation = \"{host}/upstream/team\"\n\
             [[registry.mirror]]\nlocation = \"127.0.0.1:{dead}/mirror\"\n\n\
             [[registry]]\nlocation = \"blocked.invalid\"\nblocked = true\n",
            host = registry.host()
        ),
    )
    .unwrap();
    let d = started(
        &sb,
        &format!("[image]\nregistries_conf = \"{}\"\n", conf.display()),
    )
    .await;
    let id = pull(&d, "example.invalid/team/app:v1", None).await.unwrap();
    assert_eq!(
        id,
        image.id(),
        "pulled through the rewrite after the dead mirror failed"
    );
    let got = status(&d, "example.invalid/team/app:v1", false)
        .await
        .image
        .unwrap();
    assert_eq!(
        got.repo_tags,
        vec!["example.invalid/team/app:v1".to_string()],
        "tagged with the name asked for"
    );
    assert!(
        d.logs().contains("mirror failed"),
        "the mirror was tried first"
    );
    let err = pull(&d, "blocked.invalid/x:v1", None).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
}

#[tokio::test]
async fn bearer_token_flow_with_each_auth_config_kind() {
    let mut layer = LayerBuilder::new();
    layer.busybox(APPLETS).unwrap();
    let image = Image::build_docker(
        vec![layer.finish(Compression::Gzip)],
        host_arch(),
        json!({"User": "0"}),
    );
    let auth = BearerAuth {
        username: "carol".into(),
        password: "pw-carol".into(),
        refresh_token: "refresh-carol".into(),
    };
    let fake = FakeRegistry::start_with(
        FakeRegistry::routes_for("private/app", "v1", &image, None),
        Some(auth),
    )
    .await
    .unwrap();
    let sb = Sandbox::new().unwrap();
    let d = started(&sb, "").await;
    let name = format!("{}/private/app:v1", fake.host());

    let err = pull(&d, &name, None).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unauthenticated,
        "an anonymous token is not enough: {err:?}"
    );
    let wrong = AuthConfig {
        username: "carol".into(),
        password: "nope-pw".into(),
        ..Default::default()
    };
    let err = pull(&d, &name, Some(wrong)).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unauthenticated,
        "token server refuses wrong credentials: {err:?}"
    );

    let kinds = [
        (
            "username/password",
            AuthConfig {
                username: "carol".into(),
                password: "pw-carol".into(),
                ..Default::default()
            },
        ),
        (
            "identity_token",
            AuthConfig {
                username: "carol".into(),
                identity_token: "refresh-carol".into(),
                ..Default::default()
            },
        ),
        (
            "registry_token",
            AuthConfig {
                registry_token: ACCESS_TOKEN.into(),
                ..Default::default()
            },
        ),
    ];
    for (kind, auth) in kinds {
        let id = pull(&d, &name, Some(auth))
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e:?}"));
        assert_eq!(id, image.id(), "{kind}: Docker schema 2 image pulled");
        remove(&d, &name).await.unwrap();
    }
    let logs = d.logs();
    for secret in ["pw-carol", "nope-pw", "refresh-carol", ACCESS_TOKEN] {
        assert!(!logs.contains(secret), "{secret} must not be logged");
    }
}

/// A bare HTTP/2 connection as a tonic client's transport: it sends what the request
/// carries (a `grpc-timeout` header) without enforcing it, so only the server's own
/// answer reaches the test. (tonic's `Channel` would enforce the deadline itself and
/// report CANCELLED; so does grpc-go when the server's answer comes first.)
#[derive(Clone)]
struct RawH2(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl tower::Service<http::Request<tonic::body::Body>> for RawH2 {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, hyper::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let mut send = self.0.clone();
        Box::pin(async move { send.send_request(req).await })
    }
}

async fn raw_image_client(
    sb: &Sandbox,
) -> crust_proto::runtime::v1::image_service_client::ImageServiceClient<RawH2> {
    let stream = tokio::net::UnixStream::connect(sb.socket()).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    crust_proto::runtime::v1::image_service_client::ImageServiceClient::with_origin(
        RawH2(send),
        http::Uri::from_static("http://localhost"),
    )
}

fn with_deadline<T>(msg: T, timeout: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("grpc-timeout", timeout.parse().unwrap());
    req
}

/// A client deadline that passes is DEADLINE_EXCEEDED from the server, never CANCELLED
/// (tonic's server-side timer answered CANCELLED; issue 15), and a pull cut off at any
/// point leaves a store that pulls the image whole afterwards.
#[tokio::test]
async fn a_passed_deadline_is_deadline_exceeded_never_cancelled() {
    let registry = Registry::start().await.unwrap();
    registry
        .push_image("test/deadline", &["v1"], &busybox_image("0"))
        .await
        .unwrap();
    let name = format!("{}/test/deadline:v1", registry.host());
    let sb = Sandbox::new().unwrap();
    let d = started(&sb, "").await;
    let mut client = raw_image_client(&sb).await;
    let mut exceeded = 0;
    for i in 0..40u64 {
        let ms = 1 + i % 20;
        let req = with_deadline(
            PullImageRequest {
                image: spec(&name),
                ..Default::default()
            },
            &format!("{ms}m"),
        );
        match client.pull_image(req).await {
            Ok(_) => remove(&d, &name).await.unwrap(),
            Err(s) if s.code() == Code::DeadlineExceeded => exceeded += 1,
            Err(s) => panic!("pull {i} with a {ms} ms deadline: {s:?}"),
        }
        let req = with_deadline(ListImagesRequest::default(), "1m");
        if let Err(s) = client.list_images(req).await {
            assert_eq!(s.code(), Code::DeadlineExceeded, "ListImages: {s:?}");
        }
    }
    assert!(
        exceeded > 0,
        "no pull ran out of its deadline: the test proves nothing"
    );
    pull(&d, &name, None)
        .await
        .expect("a whole pull after the cut-off ones");
    assert!(status(&d, &name, false).await.image.is_some());
}

/// ImageSpec.runtime_handler must name a configured handler (issue 15): an unknown
/// one is NOT_FOUND naming it in every image RPC; the default handler's name works.
#[tokio::test]
async fn an_unknown_image_runtime_handler_is_refused() {
    let registry = Registry::start().await.unwrap();
    registry
        .push_image("test/handler", &["v1"], &busybox_image("0"))
        .await
        .unwrap();
    let name = format!("{}/test/handler:v1", registry.host());
    let sb = Sandbox::new().unwrap();
    let d = started(&sb, "").await;
    let mut client = d.image().await.unwrap();
    let with = |handler: &str| {
        Some(ImageSpec {
            image: name.clone(),
            runtime_handler: handler.into(),
            ..Default::default()
        })
    };
    let s = client
        .pull_image(PullImageRequest {
            image: with("no-such-handler"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    assert!(s.message().contains("no-such-handler"), "{s:?}");
    let s = client
        .image_status(ImageStatusRequest {
            image: with("no-such-handler"),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    let s = client
        .remove_image(RemoveImageRequest {
            image: with("no-such-handler"),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    client
        .pull_image(PullImageRequest {
            image: with("crust"),
            ..Default::default()
        })
        .await
        .expect("the built-in handler's name");
    assert!(status(&d, &name, false).await.image.is_some());
}
