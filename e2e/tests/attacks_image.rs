//! Issue 13, the image side: attacks through the image store and the registry client.
//! Each test reproduces one attack against the real crustd (real registry or a lying
//! one on loopback, real CNI, both runtime handlers where they differ) and checks that
//! it is refused.
//!
//! - item 1: setuid-root binaries in layers and in containers' writable layers were
//!   reachable by any local user through the store's 0755 directories.
//! - item 9: a registry could stream any amount past a layer's or config's declared size.
//! - item 11: RemoveImage deleted the layers of images running containers use.
//! - item 12: PullImage racing RemoveImage left "present" images with layers gone.

use std::{
    collections::HashMap,
    fs,
    os::unix::{
        fs::{MetadataExt, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crust_e2e::{
    Sandbox, bytes_below,
    image_builder::{Compression, Image, LayerBuilder, host_arch, sha256},
    world::{PodOptions, World, busybox_image},
};
use crust_proto::runtime::v1::{
    ContainerState, ImageSpec, ImageStatusRequest, Int64Value, LinuxContainerConfig,
    LinuxContainerSecurityContext, ListImagesRequest, PullImageRequest, RemoveContainerRequest,
    RemoveImageRequest,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Status};

const RUNC: &str = "/usr/sbin/runc";
const APPLETS: &[&str] = &["sh", "cat", "cp", "chmod", "ls", "sleep", "id", "true"];
/// The unprivileged user the attacks run as (nobody).
const NOBODY: u32 = 65534;

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

async fn pull(w: &World, image: &str) -> Result<String, Status> {
    w.d.image()
        .await
        .expect("connect")
        .pull_image(PullImageRequest {
            image: spec(image),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn remove_image(w: &World, image: &str) -> Result<(), Status> {
    w.d.image()
        .await
        .expect("connect")
        .remove_image(RemoveImageRequest { image: spec(image) })
        .await
        .map(|_| ())
}

/// `ImageStatus`: the image and its chain IDs (from verbose info), or None if absent.
async fn image_chains(w: &World, image: &str) -> Option<(String, Vec<String>)> {
    try_image_chains(w, image).await.expect("ImageStatus")
}

async fn try_image_chains(w: &World, image: &str) -> Result<Option<(String, Vec<String>)>, Status> {
    let r =
        w.d.image()
            .await
            .expect("connect")
            .image_status(ImageStatusRequest {
                image: spec(image),
                verbose: true,
            })
            .await?
            .into_inner();
    let Some(found) = r.image else {
        return Ok(None);
    };
    let id = found.id;
    let info: serde_json::Value = serde_json::from_str(&r.info["info"]).expect("verbose info");
    let chains = info["chainIDs"]
        .as_array()
        .expect("chainIDs")
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    Ok(Some((id, chains)))
}

fn layer_dir(sb: &Sandbox, chain_id: &str) -> PathBuf {
    sb.root()
        .join("image/layers")
        .join(chain_id.trim_start_matches("sha256:"))
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn remove_container(w: &World, id: &str) {
    w.d.runtime()
        .await
        .expect("connect")
        .remove_container(RemoveContainerRequest {
            container_id: id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemoveContainer {id}: {e}"));
}

// ---------------------------------------------------------------------------------
// Item 1
// ---------------------------------------------------------------------------------

/// A static program that prints its effective uid: setuid root, it prints 0.
fn euid_program(dir: &Path) -> Vec<u8> {
    let src = dir.join("euid.c");
    let bin = dir.join("euid");
    fs::write(
        &src,
        "#include <stdio.h>\n#include <unistd.h>\nint main(void){printf(\"euid=%d\\n\",(int)geteuid());return 0;}\n",
    )
    .unwrap();
    let out = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run gcc (the Rust toolchain's linker)");
    assert!(
        out.status.success(),
        "gcc -static: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::read(&bin).unwrap()
}

/// Execs `path` as uid/gid 65534 with no supplementary groups (std drops them when
/// root sets a uid): the local attacker.
fn exec_as_nobody(path: &Path) -> std::io::Result<std::process::Output> {
    Command::new(path).uid(NOBODY).gid(NOBODY).output()
}

/// Asserts an unprivileged user cannot exec `path` (or even reach it): EACCES.
fn assert_unreachable(path: &Path, what: &str) {
    assert!(
        fs::symlink_metadata(path).is_ok(),
        "{what}: {} must exist for the check to mean anything",
        path.display()
    );
    match exec_as_nobody(path) {
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(libc_eacces()),
            "{what}: exec of {} as uid {NOBODY} must fail with EACCES, got {e}",
            path.display()
        ),
        Ok(out) => panic!(
            "{what}: uid {NOBODY} ran {} through the store: {}",
            path.display(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
    }
}

fn libc_eacces() -> i32 {
    nix::errno::Errno::EACCES as i32
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// Attack (CVE-2021-41091 class): an image ships a setuid-root binary, or a container
/// (root inside) copies one into its writable layer; a local non-root user on the node
/// runs it through `<root>/image/layers/<chain>/…` or `<root>/containers/<id>/upper/…`
/// (or, for the runc handler, the host-side rootfs mount) and gets euid 0. Before, those
/// directories were 0755 under a 0711 `<root>`: the exec worked. Now `<root>/image` and
/// `<root>/containers` are 0700, whatever the umask and whatever an older crustd left,
/// and both handlers still run root and non-root containers from them.
#[tokio::test]
async fn item1_setuid_binaries_in_the_store_are_unreachable_by_other_users() {
    assert!(
        Path::new(RUNC).is_file(),
        "{RUNC} is needed (apt-get install runc)"
    );
    let build = tempfile::tempdir().unwrap();
    let euid = euid_program(build.path());
    let image = busybox_image(APPLETS, |l| {
        l.file("bin/suid", &euid, 0o4755);
    });
    let handler = format!("[runtime.handlers.runc]\ntype = \"oci\"\npath = \"{RUNC}\"\n");
    let mut w = World::start(&image, "attack/suid", &handler).await;
    // The e2e sandbox is a 0700 temp dir; a real root (/var/lib/crust) has
    // traversable parents. Open it up so only crust's own modes stand in the way.
    fs::set_permissions(w.sb.path(), fs::Permissions::from_mode(0o755)).unwrap();

    // Control: the attacker can exec a setuid binary it can reach.
    let control = w.sb.path().join("control");
    fs::create_dir(&control).unwrap();
    fs::set_permissions(&control, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(control.join("suid"), &euid).unwrap();
    fs::set_permissions(control.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    let out = exec_as_nobody(&control.join("suid")).expect("control exec as nobody");
    eprintln!(
        "control: uid {NOBODY} runs a reachable setuid binary: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );

    let (_, chains) = image_chains(&w, &w.image).await.expect("image pulled");
    let layer_suid = layer_dir(&w.sb, &chains[0]).join("bin/suid");
    assert_eq!(mode(&layer_suid), 0o4755, "the layer keeps the setuid bit");
    assert_unreachable(&layer_suid, "setuid binary in an image layer");
    for dir in ["image", "image/layers", "image/tmp", "containers"] {
        assert_eq!(mode(&w.sb.root().join(dir)), 0o700, "<root>/{dir}");
    }

    let mut uppers = Vec::new();
    for handler in ["", "runc"] {
        let name = if handler.is_empty() {
            "builtin"
        } else {
            handler
        };
        let pod = w
            .run_pod(&PodOptions::named(&format!("suid-{name}")).handler(handler))
            .await;
        let id = w.run(&pod, w.config("planter", &["sleep", "1000"])).await;
        // Root in the container plants a setuid-root copy in its writable layer.
        let (code, _, err) = w
            .exec(
                &id,
                &["sh", "-c", "cp /bin/suid /planted && chmod 4755 /planted"],
            )
            .await;
        assert_eq!(code, 0, "{name}: plant: {err}");
        let container_dir = w.sb.root().join("containers").join(&id);
        let planted = container_dir.join("upper/planted");
        assert_eq!(mode(&planted), 0o4755, "{name}: planted setuid in upper");
        assert_unreachable(&planted, &format!("{name}: setuid binary in upper"));
        assert_eq!(mode(&container_dir), 0o700, "{name}: container dir");
        if handler == "runc" {
            // runc's rootfs is an overlay mounted on the host (nodev, not nosuid).
            assert_unreachable(
                &container_dir.join("rootfs/bin/suid"),
                "runc: setuid binary in the host-side rootfs",
            );
        }
        // A non-root container still reaches its own `/` (upper is 0755 inside).
        let mut config = w.config("nonroot", &["sleep", "1000"]);
        config.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                run_as_user: Some(Int64Value { value: 1000 }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let nonroot = w.run(&pod, config).await;
        let (code, out, err) = w
            .exec(&nonroot, &["sh", "-c", "id -u && ls /bin/suid"])
            .await;
        assert_eq!(
            (code, out.as_str()),
            (0, "1000\n/bin/suid\n"),
            "{name}: non-root container: {err}"
        );
        uppers.push(container_dir);
    }

    // An older crustd left everything open, and this one starts under umask 000.
    w.d.terminate().await.unwrap();
    for dir in ["image", "image/layers", "containers"] {
        fs::set_permissions(w.sb.root().join(dir), fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert!(
        exec_as_nobody(&layer_suid).is_ok(),
        "with the old modes the attack works (the test can see it)"
    );
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let started = w.sb.start();
    nix::sys::stat::umask(old);
    w.d = started.unwrap();
    w.d.wait_ready().await.unwrap();
    assert_unreachable(
        &layer_suid,
        "after restart: setuid binary in an image layer",
    );
    for upper in &uppers {
        assert_unreachable(
            &upper.join("upper/planted"),
            "after restart: setuid binary in upper",
        );
    }
}

// ---------------------------------------------------------------------------------
// Item 9
// ---------------------------------------------------------------------------------

/// One canned answer of [`LyingRegistry`].
#[derive(Clone)]
enum Answer {
    /// An honest body with its Content-Length.
    Honest(Vec<u8>),
    /// `prefix`, then zeros up to `total` bytes, then the connection is held open
    /// until the client closes it. `content_length` is what the header claims (none:
    /// the body runs until the connection closes).
    Endless {
        prefix: Vec<u8>,
        total: u64,
        content_length: Option<u64>,
    },
}

/// A registry on loopback that serves fixed answers and counts the bytes it sent.
struct LyingRegistry {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl LyingRegistry {
    async fn start(routes: HashMap<String, Answer>, sent: Arc<AtomicU64>) -> LyingRegistry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let routes = Arc::new(routes);
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve_conn(conn, routes.clone(), sent.clone()));
            }
        });
        LyingRegistry { port, task }
    }
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for LyingRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_conn(
    mut conn: tokio::net::TcpStream,
    routes: Arc<HashMap<String, Answer>>,
    sent: Arc<AtomicU64>,
) {
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match conn.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let answer = if path == "/v2/" {
            Some(Answer::Honest(b"{}".to_vec()))
        } else {
            routes.get(&path).cloned()
        };
        match answer {
            None => {
                let r = "HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}";
                if conn.write_all(r.as_bytes()).await.is_err() {
                    return;
                }
            }
            Some(Answer::Honest(body)) => {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                r.extend_from_slice(&body);
                if conn.write_all(&r).await.is_err() {
                    return;
                }
            }
            Some(Answer::Endless {
                prefix,
                total,
                content_length,
            }) => {
                let length = content_length
                    .map(|n| format!("content-length: {n}\r\n"))
                    .unwrap_or_default();
                let r = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n{length}connection: close\r\n\r\n"
                );
                if conn.write_all(r.as_bytes()).await.is_err() {
                    return;
                }
                let mut written = 0u64;
                let zeros = vec![0u8; 64 << 10];
                while written < total {
                    let piece: &[u8] = if (written as usize) < prefix.len() {
                        &prefix[written as usize..]
                    } else {
                        &zeros[..zeros.len().min((total - written) as usize)]
                    };
                    if conn.write_all(piece).await.is_err() {
                        return;
                    }
                    written += piece.len() as u64;
                    sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
                }
                // Hold the connection: a client that does not stop by itself waits
                // here (for more bytes) with everything sent so far on its disk.
                let mut sink = [0u8; 1024];
                while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
        }
    }
}

/// A tar stream whose first entry is a 1 GiB file named `big`: what lands in
/// `image/tmp` grows with every byte the unpacker is fed.
fn tar_of_a_huge_file() -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_path("big").unwrap();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(1 << 30);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// Attack: a registry (or a man in the middle of a plain-HTTP mirror) serves a
/// manifest that declares a 2 KiB layer, then streams without end; before, crustd
/// unpacked all of it into `image/tmp` (3 GiB seen) and only the digest check at the
/// very end refused it, so a small image could fill the node's disk. The same for an
/// image config (read into memory up to 8 MiB regardless of its descriptor). Now
/// reading stops at the declared size: PullImage fails with DATA_LOSS naming the
/// digest, no more than the declared bytes reach the disk, and `image/tmp` is empty.
#[tokio::test]
async fn item9_blobs_longer_than_their_descriptor_are_cut_off() {
    const DECLARED: u64 = 2048;
    const STREAMED: u64 = 16 << 20;
    let layer_prefix = {
        let mut p = tar_of_a_huge_file();
        p.resize(DECLARED as usize, 0);
        p
    };
    let layer_digest = sha256(&layer_prefix);
    let config = serde_json::to_vec(&json!({
        "architecture": host_arch(), "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer_prefix)]},
    }))
    .unwrap();
    let config_digest = sha256(&config);
    let manifest = |layer_size: u64| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": layer_size}],
        }))
        .unwrap()
    };
    // (repo, what is lying, the blob digest the error must name, routes)
    let mut routes = HashMap::new();
    let mut cases = Vec::new();
    for (repo, content_length) in [("endless", None), ("lying-length", Some(3u64 << 30))] {
        routes.insert(
            format!("/v2/{repo}/manifests/v1"),
            Answer::Honest(manifest(DECLARED)),
        );
        routes.insert(
            format!("/v2/{repo}/blobs/{config_digest}"),
            Answer::Honest(config.clone()),
        );
        routes.insert(
            format!("/v2/{repo}/blobs/{layer_digest}"),
            Answer::Endless {
                prefix: layer_prefix.clone(),
                total: STREAMED,
                content_length,
            },
        );
        cases.push((repo, "layer", layer_digest.clone()));
    }
    // A config that goes on past its declared size (JSON whitespace, still parseable).
    routes.insert(
        "/v2/fat-config/manifests/v1".into(),
        Answer::Honest(manifest(DECLARED)),
    );
    routes.insert(
        format!("/v2/fat-config/blobs/{config_digest}"),
        Answer::Endless {
            prefix: config.clone(),
            total: config.len() as u64 + (1 << 20),
            content_length: None,
        },
    );
    cases.push(("fat-config", "config", config_digest.clone()));
    // A layer shorter than declared (its bytes otherwise fine): refused too.
    routes.insert(
        "/v2/short/manifests/v1".into(),
        Answer::Honest(manifest(DECLARED + 1)),
    );
    routes.insert(
        format!("/v2/short/blobs/{config_digest}"),
        Answer::Honest(config.clone()),
    );
    routes.insert(
        format!("/v2/short/blobs/{layer_digest}"),
        Answer::Honest(layer_prefix.clone()),
    );
    cases.push(("short", "layer", layer_digest.clone()));

    let sent = Arc::new(AtomicU64::new(0));
    let registry = LyingRegistry::start(routes, sent.clone()).await;
    let sb = Sandbox::new().unwrap();
    sb.write_config("").unwrap();
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    let tmp = sb.root().join("image/tmp");

    for (repo, what, digest) in cases {
        let name = format!("{}/{repo}:v1", registry.host());
        sent.store(0, Ordering::Relaxed);
        let mut client = d.image().await.unwrap();
        let pulling = tokio::spawn({
            let name = name.clone();
            async move {
                client
                    .pull_image(PullImageRequest {
                        image: spec(&name),
                        ..Default::default()
                    })
                    .await
            }
        });
        // Watch what lands in tmp/ until the pull ends. Old code never ends (it waits
        // for more bytes) while the file in tmp/ grows: that is caught here.
        let limit = DECLARED + (64 << 10);
        let mut most = 0;
        let deadline = Instant::now() + Duration::from_secs(50);
        while !pulling.is_finished() {
            most = most.max(bytes_below(&tmp));
            assert!(
                most <= limit,
                "{repo}: {most} bytes of a {DECLARED}-byte {what} landed in {}",
                tmp.display()
            );
            assert!(Instant::now() < deadline, "{repo}: the pull never ended");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let err = pulling
            .await
            .unwrap()
            .expect_err("a lying registry's image is refused");
        eprintln!(
            "{repo}: refused after the registry sent {} bytes: {}",
            sent.load(Ordering::Relaxed),
            err.message()
        );
        assert_eq!(err.code(), Code::DataLoss, "{repo}: {err:?}");
        assert!(
            err.message().contains(&digest) && err.message().contains("declares"),
            "{repo}: the error names the {what} {digest} and its declared size: {}",
            err.message()
        );
        assert!(
            err.message().len() < 400,
            "{repo}: a short message: {}",
            err.message()
        );
        assert_eq!(entries(&tmp), Vec::<String>::new(), "{repo}: tmp/ is empty");
        assert_eq!(
            entries(&sb.root().join("image/layers")),
            Vec::<String>::new(),
            "{repo}: no layer kept"
        );
        let listed = d
            .image()
            .await
            .unwrap()
            .list_images(ListImagesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .images;
        assert!(listed.is_empty(), "{repo}: no image");
    }
}

// ---------------------------------------------------------------------------------
// Item 11
// ---------------------------------------------------------------------------------

/// Attack (lost state): kubelet's image GC, or an operator's `crictl rmi`, removes the
/// image of a running container; before, the in-use check was a stub and the layers
/// (the running container's overlay lower dirs, and the rootfs of a created-not-started
/// one) were deleted under it: its files vanished and StartContainer of the created one
/// failed. Now, as containerd, the image disappears for the CRI but its layers stay
/// until the last container made from it is removed, and are freed then.
#[tokio::test]
async fn item11_remove_image_keeps_the_layers_of_containers_using_it() {
    let image = busybox_image(APPLETS, |l| {
        l.dir("data", 0o755)
            .file("data/hello", b"still here\n", 0o644);
    });
    let w = World::start(&image, "attack/inuse", "").await;
    let (id, chains) = image_chains(&w, &w.image).await.expect("image pulled");
    let pod = w.run_pod(&PodOptions::named("inuse")).await;
    let running = w.run(&pod, w.config("running", &["sleep", "1000"])).await;
    let created = w
        .create(&pod, w.config("created", &["sleep", "1000"]))
        .await
        .expect("CreateContainer");

    remove_image(&w, &w.image)
        .await
        .expect("RemoveImage succeeds");
    assert!(
        image_chains(&w, &w.image).await.is_none() && image_chains(&w, &id).await.is_none(),
        "the image is gone for the CRI (by tag and by id)"
    );
    for chain in &chains {
        assert!(
            layer_dir(&w.sb, chain).is_dir(),
            "layer {chain} of containers' image must stay"
        );
    }
    let (code, out, _) = w.exec(&running, &["cat", "/data/hello"]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "still here\n"),
        "running container reads its image"
    );
    // As containerd: a removed image is not found for new containers.
    let err = w
        .create(&pod, w.config("new", &["true"]))
        .await
        .expect_err("no new container from a removed image");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    w.start_container(&created)
        .await
        .expect("the created container still starts");
    let (code, out, _) = w.exec(&created, &["cat", "/data/hello"]).await;
    assert_eq!((code, out.as_str()), (0, "still here\n"));
    assert_eq!(
        w.d.container_status(&running).await.state(),
        ContainerState::ContainerRunning
    );

    remove_container(&w, &running).await;
    for chain in &chains {
        assert!(
            layer_dir(&w.sb, chain).is_dir(),
            "one container still uses layer {chain}"
        );
    }
    remove_container(&w, &created).await;
    assert_eq!(
        entries(&w.sb.root().join("image/layers")),
        Vec::<String>::new(),
        "the last container gone, the layers are freed"
    );
    assert_eq!(
        entries(&w.sb.root().join("records/image")),
        Vec::<String>::new()
    );
    assert_eq!(
        entries(&w.sb.root().join("image/tmp")),
        Vec::<String>::new()
    );

    // The image can be pulled back and used.
    assert_eq!(pull(&w, &w.image).await.expect("pull again"), id);
    let again = w
        .run(&pod, w.config("again", &["cat", "/data/hello"]))
        .await;
    assert_eq!(w.d.wait_exited(&again).await.exit_code, 0);
}

// ---------------------------------------------------------------------------------
// Item 12
// ---------------------------------------------------------------------------------

/// Attack (lost state): PullImage and RemoveImage of the same image at once (kubelet
/// pulling while its GC or an operator removes). Before, removal decided from a
/// snapshot of the index and deleted layers after a concurrent pull had published the
/// image again: ImageStatus said present while 1-3 layer dirs were gone (12 of 20
/// trials) and CreateContainer failed forever. Now each trial ends with the image
/// absent, or present with every layer directory and usable; nothing leaks in tmp/.
#[tokio::test]
async fn item12_concurrent_pull_and_remove_never_leave_a_half_image() {
    const TRIALS: usize = 20;
    let mut layers = Vec::new();
    let mut base = LayerBuilder::new();
    base.busybox(APPLETS).unwrap();
    for dir in ["etc", "proc", "sys", "dev", "tmp"] {
        base.dir(dir, 0o755);
    }
    layers.push(base.finish(Compression::Gzip));
    for i in 0..4 {
        let mut l = LayerBuilder::new();
        l.dir(&format!("data{i}"), 0o755);
        // Many small files: a layer's delete takes a while, as on real images.
        for f in 0..300 {
            l.file(
                &format!("data{i}/f{f}"),
                format!("{i}-{f}\n").as_bytes(),
                0o644,
            );
        }
        layers.push(l.finish(Compression::Gzip));
    }
    let image = Image::build(
        layers,
        host_arch(),
        json!({"Cmd": ["sh"], "Env": ["PATH=/bin"]}),
    );
    let w = World::start(&image, "attack/race", "").await;
    let pod = w.run_pod(&PodOptions::named("race")).await;
    let mut broken = Vec::new();
    let mut present_after = 0;
    for trial in 0..TRIALS {
        // Absent, or broken by the previous trial (already counted): pull it back.
        if !matches!(try_image_chains(&w, &w.image).await, Ok(Some(_))) {
            pull(&w, &w.image).await.expect("pull before the trial");
        }
        let (pulled, removed) = tokio::join!(pull(&w, &w.image), remove_image(&w, &w.image));
        pulled.unwrap_or_else(|e| panic!("trial {trial}: PullImage: {e}"));
        removed.unwrap_or_else(|e| panic!("trial {trial}: RemoveImage: {e}"));
        let chains = match try_image_chains(&w, &w.image).await {
            Ok(None) => continue,
            Ok(Some((_, chains))) => chains,
            Err(e) => {
                broken.push((trial, format!("ImageStatus failed: {:.100}", e.message())));
                continue;
            }
        };
        present_after += 1;
        let missing = chains
            .iter()
            .filter(|c| !layer_dir(&w.sb, c).is_dir())
            .count();
        if missing > 0 {
            broken.push((trial, format!("{missing} layer dirs missing")));
        }
        match w
            .create(&pod, w.config(&format!("t{trial}"), &["cat", "/data3/f7"]))
            .await
        {
            Ok(id) => remove_container(&w, &id).await,
            Err(e) => broken.push((trial, format!("CreateContainer: {:.100}", e.message()))),
        }
    }
    eprintln!("{present_after} of {TRIALS} trials ended with the image present");
    assert_eq!(
        broken,
        Vec::<(usize, String)>::new(),
        "trials where ImageStatus said present (or failed) but the image was broken"
    );
    assert_eq!(
        entries(&w.sb.root().join("image/tmp")),
        Vec::<String>::new()
    );
    // Whatever the last trial left, the image works after one more pull.
    pull(&w, &w.image).await.expect("final pull");
    let id = w.run(&pod, w.config("final", &["cat", "/data3/f7"])).await;
    let status = w.d.wait_exited(&id).await;
    assert_eq!(status.exit_code, 0, "{}", status.message);
}
