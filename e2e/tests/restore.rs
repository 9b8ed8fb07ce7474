//! CreateContainer from a checkpoint archive (`config.image.image` = its path) on this
//! host, where CRIU cannot run (bookworm's criu 3.17 on kernel 6.18; the real restore
//! is `guest_checkpoint`): the refusals, each naming its field or object, and a restore
//! that fails in runc/CRIU rolled back to nothing (no mount, runc state, cgroup or
//! directory left) while the container stays removable, also across a crustd restart.
//! The archives are made here in CRI-O's and crust's layout.

use std::{fs::File, path::Path};

use crust_e2e::world::{PodOptions, World, busybox_image};
use crust_proto::runtime::v1::{ContainerConfig, ContainerState, Mount, RemovePodSandboxRequest};
use serde_json::json;

async fn world() -> World {
    let image = busybox_image(&["sh", "sleep"], |_| {});
    World::start(
        &image,
        "test/restore",
        "[runtime.handlers.runc]\ntype = \"oci\"\npath = \"/usr/sbin/runc\"\n",
    )
    .await
}

/// A checkpoint archive at `path` with `config.dump` naming `image`, a `spec.dump`
/// with `mounts`, a `checkpoint/` directory (not real CRIU images) and a writable
/// layer holding `/restored`; `skip` leaves one member out.
fn write_archive(path: &Path, image: &str, mounts: serde_json::Value, skip: &str) {
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["/bin/sh", "-c", "sleep 1000"], "cwd": "/", "env": ["WAS=checkpointed"],
                    "user": {"uid": 0, "gid": 0}},
        "root": {"path": "/old/rootfs"},
        "mounts": mounts,
    });
    let config = json!({"id": "old-id", "name": "old", "rootfsImageName": image,
                        "checkpointedTime": "2026-01-02T03:04:05Z"});
    let mut layer = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    layer.append_data(&mut h, "restored", &b"yes"[..]).unwrap();
    let layer = layer.into_inner().unwrap();
    let mut b = tar::Builder::new(File::create(path).unwrap());
    let members: Vec<(&str, Vec<u8>)> = vec![
        ("checkpoint/inventory.img", b"not a CRIU image".to_vec()),
        ("spec.dump", spec.to_string().into_bytes()),
        ("config.dump", config.to_string().into_bytes()),
        ("rootfs-diff.tar", layer),
    ];
    for (name, data) in members.into_iter().filter(|(n, _)| *n != skip) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.finish().unwrap();
}

fn restore_config(w: &World, name: &str, archive: &Path) -> ContainerConfig {
    let mut config = w.config(name, &[]);
    config.image.as_mut().unwrap().image = archive.display().to_string();
    config.command.clear();
    config
}

#[tokio::test]
async fn restore_refusals_name_their_field_and_a_failed_restore_leaves_nothing() {
    let mut w = world().await;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let good = dir.path().join("good.tar");
    write_archive(&good, &w.image, json!([]), "");
    let runc = w.run_pod(&PodOptions::named("runc").handler("runc")).await;
    let builtin = w.run_pod(&PodOptions::named("builtin")).await;

    // The built-in launcher has no CRIU: refused before anything is made.
    let e = w
        .create(&builtin, restore_config(&w, "b", &good))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("oci"), "{e:?}");

    // A missing file: NOT_FOUND naming the field; the rest INVALID_ARGUMENT.
    let e = w
        .create(&runc, restore_config(&w, "m", &dir.path().join("none.tar")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("config.image.image"), "{e:?}");
    let corrupt = dir.path().join("corrupt.tar");
    std::fs::write(&corrupt, vec![0x42; 4096]).unwrap();
    let no_spec = dir.path().join("no-spec.tar");
    write_archive(&no_spec, &w.image, json!([]), "spec.dump");
    let no_images = dir.path().join("no-images.tar");
    write_archive(&no_images, &w.image, json!([]), "checkpoint/inventory.img");
    for (archive, want) in [
        (&corrupt, "config.image.image"),
        (&no_spec, "spec.dump"),
        (&no_images, "checkpoint/"),
        (&dir.path().to_path_buf(), "not a regular file"),
    ] {
        let e = w
            .create(&runc, restore_config(&w, "c", archive))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{archive:?}: {e:?}");
        assert!(
            e.message().contains("config.image.image") && e.message().contains(want),
            "{archive:?}: {e:?}"
        );
    }
    // The image the checkpoint was made from must be here.
    let other = dir.path().join("other-image.tar");
    write_archive(&other, "localhost:1/absent/image:v9", json!([]), "");
    let e = w
        .create(&runc, restore_config(&w, "i", &other))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("absent/image:v9"), "{e:?}");
    // A bind mount the checkpointed container had must be given (its new source).
    let bind = dir.path().join("bind.tar");
    write_archive(
        &bind,
        &w.image,
        json!([{"destination": "/data", "type": "bind", "source": "/old/data", "options": ["rbind"]}]),
        "",
    );
    let e = w
        .create(&runc, restore_config(&w, "d", &bind))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("config.mounts") && e.message().contains("/data"),
        "{e:?}"
    );
    let mut with_mount = restore_config(&w, "d", &bind);
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    with_mount.mounts = vec![Mount {
        container_path: "/data".into(),
        host_path: data.display().to_string(),
        ..Default::default()
    }];
    let given = w.create(&runc, with_mount).await.expect("the mount given");

    // Created from the archive: its image, the archive's process, the request's
    // name and labels, and an annotation saying where it came from.
    let id = w
        .create(&runc, restore_config(&w, "restored", &good))
        .await
        .expect("create from the archive");
    let s = w.d.container_status(&id).await;
    assert_eq!(s.state, i32::from(ContainerState::ContainerCreated));
    assert_eq!(s.image.as_ref().unwrap().image, w.image);
    assert_eq!(s.metadata.as_ref().unwrap().name, "restored");
    assert_eq!(s.labels.get("name").map(String::as_str), Some("restored"));
    assert_eq!(
        s.annotations
            .get("io.crust.checkpoint.restored-from")
            .map(String::as_str),
        Some(good.to_str().unwrap()),
        "{:?}",
        s.annotations
    );
    assert_eq!(
        s.annotations
            .get("io.crust.checkpoint.checkpointed-at")
            .map(String::as_str),
        Some("2026-01-02T03:04:05Z")
    );
    let info = w.verbose_info(&id).await;
    assert!(
        info.to_string().contains("WAS=checkpointed"),
        "the archive's environment: {info}"
    );

    // The restore to come survives a crustd restart: still Created, still from the
    // archive (StartContainer below tries the restore, not a start).
    assert!(w.d.terminate().await.unwrap().success());
    w.d = w.sb.start().unwrap();
    w.d.wait_ready().await.unwrap();
    let s = w.d.container_status(&id).await;
    assert_eq!(
        s.state,
        i32::from(ContainerState::ContainerCreated),
        "{s:?}"
    );

    // CRIU cannot restore here (and these are no CRIU images): StartContainer fails
    // naming the restore, and nothing of it is left running or mounted.
    let e = w.start_container(&id).await.unwrap_err();
    eprintln!("the restore failed as it must here: {}", e.message());
    assert!(e.message().contains("restore"), "{e:?}");
    let s = w.d.container_status(&id).await;
    assert_eq!(
        (s.state, s.reason.as_str()),
        (i32::from(ContainerState::ContainerExited), "StartError"),
        "{s:?}"
    );
    assert!(
        !w.sb.state().join("runc").join(&id).exists(),
        "runc's state of the failed restore is gone"
    );
    let mounts = w.sb.mounts();
    assert!(
        !mounts.iter().any(|m| m.to_string_lossy().contains(&id)),
        "{mounts:?}"
    );

    // Removed, restored or not (`given` was never started).
    for c in [&id, &given] {
        w.d.runtime()
            .await
            .unwrap()
            .remove_container(crust_proto::runtime::v1::RemoveContainerRequest {
                container_id: c.to_string(),
            })
            .await
            .unwrap_or_else(|e| panic!("remove {c}: {e}"));
        assert!(!w.sb.root().join("containers").join(c).exists(), "{c}");
    }
    for pod in [&runc, &builtin] {
        w.d.runtime()
            .await
            .unwrap()
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.to_string(),
            })
            .await
            .unwrap();
    }
    assert!(w.sb.mounts().is_empty(), "{:?}", w.sb.mounts());
    let left: Vec<_> =
        w.sb.cgroups()
            .into_iter()
            .filter(|c| c.to_string_lossy().contains("/pods/"))
            .collect();
    assert!(left.is_empty(), "pod and container cgroups left: {left:?}");
}
