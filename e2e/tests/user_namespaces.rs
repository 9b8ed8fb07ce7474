//! Pod user namespaces (KEP-127, CRI `userns_options` mode POD), with the built-in
//! launcher (runc is refused with FAILED_PRECONDITION): ids inside, the idmapped image, volume ownership on the
//! host, one namespace shared by the pod's containers, refused forms, and nothing left
//! after RemovePodSandbox.

use std::{fs, os::unix::fs::MetadataExt, path::Path};

use crust_e2e::{
    image_builder::Image,
    world::{PodOptions, World, busybox_image},
};
use crust_proto::runtime::v1::{
    ContainerConfig, IdMapping, LinuxContainerConfig, LinuxContainerSecurityContext, Mount,
    NamespaceMode, NamespaceOption, PodSandboxStatusRequest, RemovePodSandboxRequest,
    StatusRequest, StopPodSandboxRequest, UserNamespace,
};
use tonic::Code;

const RUNC: &str = "/usr/sbin/runc";
const HOST_ID: u32 = 100_000;

fn image() -> Image {
    busybox_image(
        &[
            "sh", "id", "cat", "sleep", "stat", "touch", "echo", "readlink",
        ],
        |l| {
            l.file("etc/owned-by-root", b"root's\n", 0o644);
        },
    )
}

fn userns(mode: NamespaceMode, uids: Vec<IdMapping>, gids: Vec<IdMapping>) -> UserNamespace {
    UserNamespace {
        mode: mode.into(),
        uids,
        gids,
    }
}

fn mapping(host_id: u32, container_id: u32, length: u32) -> IdMapping {
    IdMapping {
        host_id,
        container_id,
        length,
    }
}

fn pod_userns() -> UserNamespace {
    userns(
        NamespaceMode::Pod,
        vec![mapping(HOST_ID, 0, 65536)],
        vec![mapping(HOST_ID, 0, 65536)],
    )
}

/// `config` with the container's copy of the pod's userns_options, as kubelet sends.
fn with_userns(mut config: ContainerConfig, ns: Option<UserNamespace>) -> ContainerConfig {
    config.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: NamespaceMode::Container.into(),
                userns_options: ns,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

async fn world(repo: &str) -> World {
    assert!(
        Path::new(RUNC).is_file(),
        "{RUNC} not found: apt-get install runc"
    );
    World::start(
        &image(),
        repo,
        &format!("[runtime.handlers.runc]\ntype = \"oci\"\npath = \"{RUNC}\"\n"),
    )
    .await
}

async fn remove_pod(w: &World, pod: &str) {
    let mut rt = w.d.runtime().await.expect("connect");
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .expect("StopPodSandbox");
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .expect("RemovePodSandbox");
}

fn mountinfo_mentions(what: &str) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .filter(|l| l.contains(what))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_user_namespace_maps_root_with_the_built_in_launcher() {
    let w = world("e2e/userns").await;
    let status =
        w.d.runtime()
            .await
            .expect("connect")
            .status(StatusRequest { verbose: false })
            .await
            .expect("Status")
            .into_inner();
    for h in &status.runtime_handlers {
        assert_eq!(
            h.features.as_ref().map(|f| f.user_namespaces),
            Some(h.name != "runc"),
            "handler {:?}: user_namespaces for the built-in launcher only",
            h.name
        );
    }
    // runc is refused before anything is made (see run_pod_sandbox.rs for why).
    let err = w
        .d
        .runtime()
        .await
        .expect("connect")
        .run_pod_sandbox(crust_proto::runtime::v1::RunPodSandboxRequest {
            config: Some(crust_proto::runtime::v1::PodSandboxConfig {
                metadata: Some(crust_proto::runtime::v1::PodSandboxMetadata {
                    name: "userns-runc".into(),
                    uid: "uid-userns-runc".into(),
                    namespace: "e2e".into(),
                    attempt: 0,
                }),
                linux: Some(crust_proto::runtime::v1::LinuxPodSandboxConfig {
                    security_context: Some(crust_proto::runtime::v1::LinuxSandboxSecurityContext {
                        namespace_options: Some(NamespaceOption {
                            userns_options: Some(pod_userns()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            runtime_handler: "runc".into(),
        })
        .await
        .expect_err("runc with a pod user namespace");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("userns_options"), "{err}");
    for handler in [""] {
        let label = if handler.is_empty() {
            "built-in"
        } else {
            handler
        };
        let name = format!(
            "userns-{}",
            if handler.is_empty() {
                "builtin"
            } else {
                handler
            }
        );
        // An emptyDir-like volume (0777, as kubelet makes them for such pods) and a
        // host-root-owned file the pod's root must not be able to write.
        let vol = w.sb.path().join(format!("vol-{name}"));
        fs::create_dir_all(&vol).unwrap();
        fs::set_permissions(&vol, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        fs::write(vol.join("host-owned"), b"host\n").unwrap();
        let opts = PodOptions::named(&name)
            .handler(handler)
            .pid(NamespaceMode::Container)
            .userns(pod_userns());
        let pod = w.run_pod(&opts).await;

        let ps =
            w.d.runtime()
                .await
                .expect("connect")
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: pod.clone(),
                    verbose: false,
                })
                .await
                .expect("PodSandboxStatus")
                .into_inner();
        let reported = ps
            .status
            .and_then(|s| s.linux)
            .and_then(|l| l.namespaces)
            .and_then(|n| n.options)
            .and_then(|o| o.userns_options);
        assert_eq!(
            reported,
            Some(pod_userns()),
            "{label}: PodSandboxStatus reports the userns"
        );

        let mut config = with_userns(w.config("a", &["sleep", "3600"]), Some(pod_userns()));
        config.mounts = vec![Mount {
            container_path: "/vol".into(),
            host_path: vol.display().to_string(),
            ..Default::default()
        }];
        let a = w.run(&pod, config.clone()).await;
        let (code, out, err) = w.exec(&a, &["id", "-u"]).await;
        assert_eq!((code, out.trim()), (0, "0"), "{label}: id -u ({err})");
        let (_, out, _) = w.exec(&a, &["cat", "/proc/self/uid_map"]).await;
        let fields: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(fields, ["0", "100000", "65536"], "{label}: uid_map {out:?}");
        let (code, out, err) = w
            .exec(&a, &["stat", "-c", "%u:%g", "/etc/owned-by-root"])
            .await;
        assert_eq!(
            (code, out.trim()),
            (0, "0:0"),
            "{label}: image file is root's inside ({err})"
        );
        let (code, _, err) = w.exec(&a, &["touch", "/vol/made-inside"]).await;
        assert_eq!(code, 0, "{label}: touch in the volume: {err}");
        let made = fs::metadata(vol.join("made-inside")).expect("the file is on the host");
        assert_eq!(
            (made.uid(), made.gid()),
            (HOST_ID, HOST_ID),
            "{label}: owner on the host"
        );
        let (code, _, _) = w.exec(&a, &["sh", "-c", "echo x >> /vol/host-owned"]).await;
        assert_ne!(
            code, 0,
            "{label}: the pod's root cannot write a host-root file"
        );
        assert_eq!(
            fs::read(vol.join("host-owned")).unwrap(),
            b"host\n",
            "{label}"
        );
        let (code, _, err) = w.exec(&a, &["touch", "/made-in-rootfs"]).await;
        assert_eq!(code, 0, "{label}: write to the rootfs: {err}");

        let mut second = config;
        second.metadata.as_mut().unwrap().name = "b".into();
        second.log_path = "b.log".into();
        let b = w.run(&pod, second).await;
        let (_, ns_a, _) = w.exec(&a, &["readlink", "/proc/self/ns/user"]).await;
        let (_, ns_b, _) = w.exec(&b, &["readlink", "/proc/self/ns/user"]).await;
        let host_ns = fs::read_link("/proc/self/ns/user").unwrap();
        assert_eq!(ns_a, ns_b, "{label}: both containers in one user namespace");
        assert_ne!(
            ns_a.trim(),
            host_ns.display().to_string(),
            "{label}: not the host's"
        );

        // A container whose userns_options differ from the pod's.
        let err = w
            .create(&pod, with_userns(w.config("c", &["sleep", "1"]), None))
            .await
            .expect_err("differing userns_options");
        assert_eq!(err.code(), Code::InvalidArgument, "{label}: {err}");
        assert!(err.message().contains("userns_options"), "{label}: {err}");

        remove_pod(&w, &pod).await;
        assert_eq!(
            mountinfo_mentions(&pod),
            Vec::<String>::new(),
            "{label}: mounts left"
        );
        assert!(
            !w.sb
                .path()
                .join("state/ns")
                .join(&pod)
                .join("user")
                .exists(),
            "{label}: pin left"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_userns_options_are_refused_naming_the_field() {
    let w = World::start(&image(), "e2e/userns-invalid", "").await;
    let ok = || vec![mapping(HOST_ID, 0, 65536)];
    let cases = [
        ("CONTAINER", userns(NamespaceMode::Container, ok(), ok())),
        ("TARGET", userns(NamespaceMode::Target, ok(), ok())),
        ("no uid mapping", userns(NamespaceMode::Pod, vec![], ok())),
        (
            "two gid mappings",
            userns(
                NamespaceMode::Pod,
                ok(),
                vec![mapping(HOST_ID, 0, 10), mapping(300_000, 10, 10)],
            ),
        ),
        (
            "container id 1",
            userns(NamespaceMode::Pod, vec![mapping(HOST_ID, 1, 65536)], ok()),
        ),
        (
            "length 0",
            userns(NamespaceMode::Pod, vec![mapping(HOST_ID, 0, 0)], ok()),
        ),
        (
            "overflow",
            userns(
                NamespaceMode::Pod,
                vec![mapping(u32::MAX - 5, 0, 65536)],
                ok(),
            ),
        ),
        (
            "NODE with mappings",
            userns(NamespaceMode::Node, ok(), ok()),
        ),
    ];
    for (i, (name, ns)) in cases.into_iter().enumerate() {
        let opts = PodOptions::named(&format!("bad-{i}")).userns(ns);
        let config = crust_proto::runtime::v1::PodSandboxConfig {
            metadata: Some(crust_proto::runtime::v1::PodSandboxMetadata {
                name: opts.name.clone(),
                uid: format!("uid-{i}"),
                namespace: "e2e".into(),
                attempt: 0,
            }),
            linux: Some(crust_proto::runtime::v1::LinuxPodSandboxConfig {
                security_context: Some(crust_proto::runtime::v1::LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        userns_options: opts.userns.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err =
            w.d.runtime()
                .await
                .expect("connect")
                .run_pod_sandbox(crust_proto::runtime::v1::RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler: String::new(),
                })
                .await
                .expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err}");
        assert!(
            err.message().contains("namespace_options.userns_options"),
            "{name}: {err}"
        );
    }
    // A pod user namespace with the host's network.
    let err = w
        .d
        .runtime()
        .await
        .expect("connect")
        .run_pod_sandbox(crust_proto::runtime::v1::RunPodSandboxRequest {
            config: Some(crust_proto::runtime::v1::PodSandboxConfig {
                metadata: Some(crust_proto::runtime::v1::PodSandboxMetadata {
                    name: "hostnet".into(),
                    uid: "uid-hostnet".into(),
                    namespace: "e2e".into(),
                    attempt: 0,
                }),
                linux: Some(crust_proto::runtime::v1::LinuxPodSandboxConfig {
                    security_context: Some(crust_proto::runtime::v1::LinuxSandboxSecurityContext {
                        namespace_options: Some(NamespaceOption {
                            network: NamespaceMode::Node.into(),
                            userns_options: Some(pod_userns()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("userns with host network");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
}

/// Recovery: the pod's user namespace (its pin and the mappings in the record) is
/// still there after crustd restarts; the running container keeps it, an exec joins
/// it, a new container joins the same one, and removal leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_pod_user_namespace_survives_a_crustd_restart() {
    let mut w = World::start(&image(), "e2e/userns-restart", "").await;
    let opts = PodOptions::named("userns-restart")
        .pid(NamespaceMode::Container)
        .userns(pod_userns());
    let pod = w.run_pod(&opts).await;
    let a = w
        .run(
            &pod,
            with_userns(w.config("a", &["sleep", "3600"]), Some(pod_userns())),
        )
        .await;
    let (_, before, _) = w.exec(&a, &["readlink", "/proc/self/ns/user"]).await;

    assert!(w.d.terminate().await.unwrap().success());
    w.d = w.sb.start().unwrap();
    w.d.wait_ready().await.unwrap();

    let (code, out, err) = w.exec(&a, &["cat", "/proc/self/uid_map"]).await;
    assert_eq!(code, 0, "exec after the restart: {err}");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );
    let (_, after, _) = w.exec(&a, &["readlink", "/proc/self/ns/user"]).await;
    assert_eq!(before, after, "the same user namespace");
    let b = w
        .run(
            &pod,
            with_userns(w.config("b", &["sleep", "3600"]), Some(pod_userns())),
        )
        .await;
    let (_, in_b, _) = w.exec(&b, &["readlink", "/proc/self/ns/user"]).await;
    assert_eq!(before, in_b, "a container made after the restart joins it");
    let reported =
        w.d.runtime()
            .await
            .expect("connect")
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: false,
            })
            .await
            .expect("PodSandboxStatus")
            .into_inner()
            .status
            .and_then(|s| s.linux)
            .and_then(|l| l.namespaces)
            .and_then(|n| n.options)
            .and_then(|o| o.userns_options);
    assert_eq!(reported, Some(pod_userns()), "the record kept the mappings");
    remove_pod(&w, &pod).await;
    assert_eq!(
        mountinfo_mentions(&pod),
        Vec::<String>::new(),
        "mounts left"
    );
}
