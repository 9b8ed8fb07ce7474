//! Pod user namespaces (KEP-127, CRI `userns_options` mode POD), with the built-in
//! launcher and the runc (`oci`) handler: ids inside, the idmapped image, volume
//! ownership on the host, one namespace shared by the pod's containers, a shared PID
//! namespace, terminals for exec and attach, privileged containers, refused forms, a
//! crustd restart, and nothing left after RemovePodSandbox.

use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
};

use crust_ctl::stream_client::{self as sc, StreamOpts};
use crust_e2e::{
    image_builder::{Compression, Image, LayerBuilder, host_arch},
    world::{PodOptions, World},
};
use crust_proto::runtime::v1::{
    AttachRequest, ContainerConfig, ExecRequest, IdMapping, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StatusRequest, StopPodSandboxRequest,
    UserNamespace,
};
use tonic::Code;

const RUNC: &str = "/usr/sbin/runc";
const HOST_ID: u32 = 100_000;
/// The handlers every case runs on: the built-in launcher ("") and runc.
const HANDLERS: [&str; 2] = ["", "runc"];

/// busybox with a root-owned file, and an image `VOLUME /data` the image seeds.
fn image() -> Image {
    let mut layer = LayerBuilder::new();
    layer
        .busybox(&[
            "sh", "id", "cat", "sleep", "stat", "touch", "echo", "readlink", "ls",
        ])
        .expect("busybox-static is installed");
    for dir in ["etc", "proc", "sys", "dev", "tmp", "data"] {
        layer.dir(dir, 0o755);
    }
    layer
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .file("etc/group", b"root:x:0:\n", 0o644)
        .file("etc/owned-by-root", b"root's\n", 0o644)
        .file("data/seed", b"seed\n", 0o644);
    Image::build(
        vec![layer.finish(Compression::Gzip)],
        host_arch(),
        serde_json::json!({"Cmd": ["sh"], "Env": ["PATH=/bin"], "Volumes": {"/data": {}}}),
    )
}

fn label(handler: &str) -> &str {
    if handler.is_empty() {
        "built-in"
    } else {
        handler
    }
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

/// What kubelet sends for `hostUsers: false`: 65536 ids from container id 0.
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

/// A container of a [`userns_pod`]: `command`, the pod's mapping repeated.
fn userns_config(w: &World, name: &str, command: &[&str]) -> ContainerConfig {
    with_userns(w.config(name, command), Some(pod_userns()))
}

/// A RunPodSandbox request for a pod named `name` with `ns` as its namespace options.
fn pod_request(name: &str, ns: NamespaceOption, handler: &str) -> RunPodSandboxRequest {
    RunPodSandboxRequest {
        config: Some(PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "e2e".into(),
                attempt: 0,
            }),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(ns),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        runtime_handler: handler.into(),
    }
}

/// A pod with the [`pod_userns`] mapping on `handler`, its PID namespace `pid`.
async fn userns_pod(w: &World, name: &str, handler: &str, pid: NamespaceMode) -> String {
    w.run_pod(
        &PodOptions::named(name)
            .handler(handler)
            .pid(pid)
            .userns(pod_userns()),
    )
    .await
}

/// Makes the e2e sandbox (a 0700 temp dir holding crustd's state dir) traversable,
/// as the parents of `/run/crust` are on a node: runc needs that (see
/// `userns_rootfs` in the runtime).
fn open_up(w: &World) {
    fs::set_permissions(w.sb.path(), fs::Permissions::from_mode(0o711)).unwrap();
}

/// crustd with the runc handler configured, its sandbox [`open_up`]ed.
async fn world(repo: &str) -> World {
    assert!(
        Path::new(RUNC).is_file(),
        "{RUNC} not found: apt-get install runc"
    );
    let w = World::start(
        &image(),
        repo,
        &format!("[runtime.handlers.runc]\ntype = \"oci\"\npath = \"{RUNC}\"\n"),
    )
    .await;
    open_up(&w);
    w
}

/// Stops and removes `pod`, then checks nothing of it is left: no mount names it, no
/// user namespace pin.
async fn remove_pod(w: &World, pod: &str, label: &str) {
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
    let left: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .filter(|l| l.contains(pod))
        .map(str::to_string)
        .collect();
    assert_eq!(left, Vec::<String>::new(), "{label}: mounts left");
    let pin = w.sb.path().join("state/ns").join(pod).join("user");
    assert!(!pin.exists(), "{label}: pin left");
}

async fn reported_userns(w: &World, pod: &str) -> Option<UserNamespace> {
    w.d.runtime()
        .await
        .expect("connect")
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.into(),
            verbose: false,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner()
        .status
        .and_then(|s| s.linux)
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .and_then(|o| o.userns_options)
}

/// `uid_map` inside container `id`, as its three fields.
async fn uid_map(w: &World, id: &str, label: &str) -> Vec<String> {
    let (code, out, err) = w.exec(id, &["cat", "/proc/self/uid_map"]).await;
    assert_eq!(code, 0, "{label}: cat uid_map: {err}");
    out.split_whitespace().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_user_namespace_maps_root() {
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
            Some(h.name != "runc" || HANDLERS.contains(&"runc")),
            "handler {:?}: user_namespaces",
            h.name
        );
    }
    // runc mounts the rootfs as the pod's mapped root, which must be able to walk
    // down to it: the e2e sandbox is a 0700 temp dir, so until it is opened up (as
    // /run's parents are on a node) that is a FAILED_PRECONDITION naming the dir.
    fs::set_permissions(w.sb.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let pod = userns_pod(&w, "userns-closed", "runc", NamespaceMode::Container).await;
    let err = w
        .create(&pod, userns_config(&w, "a", &["sleep", "3600"]))
        .await
        .expect_err("a rootfs the mapped root cannot reach");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(
        err.message().contains("cannot traverse")
            && err.message().contains(&w.sb.path().display().to_string()),
        "{err}"
    );
    remove_pod(&w, &pod, "runc, closed parent").await;
    open_up(&w);
    for handler in HANDLERS {
        let label = label(handler);
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
        fs::set_permissions(&vol, fs::Permissions::from_mode(0o777)).unwrap();
        fs::write(vol.join("host-owned"), b"host\n").unwrap();
        let pod = userns_pod(&w, &name, handler, NamespaceMode::Container).await;
        assert_eq!(
            reported_userns(&w, &pod).await,
            Some(pod_userns()),
            "{label}: PodSandboxStatus reports the userns"
        );

        let mut config = userns_config(&w, "a", &["sleep", "3600"]);
        config.mounts = vec![Mount {
            container_path: "/vol".into(),
            host_path: vol.display().to_string(),
            ..Default::default()
        }];
        let a = w.run(&pod, config.clone()).await;
        let (code, out, err) = w.exec(&a, &["id", "-u"]).await;
        assert_eq!((code, out.trim()), (0, "0"), "{label}: id -u ({err})");
        // runc's rootfs: in a directory only root and the pod's root group enter.
        let userns_rootfs = w.sb.path().join("state/userns-rootfs").join(&a);
        if handler == "runc" {
            let meta = fs::metadata(&userns_rootfs).expect("runc's rootfs directory");
            assert_eq!(
                (meta.mode() & 0o7777, meta.uid(), meta.gid()),
                (0o710, 0, HOST_ID),
                "{label}: {}",
                userns_rootfs.display()
            );
            let parent = fs::metadata(userns_rootfs.parent().unwrap()).unwrap();
            assert_eq!(
                parent.mode() & 0o7777,
                0o711,
                "{label}: traverse-only parent"
            );
        } else {
            assert!(
                !userns_rootfs.exists(),
                "{label}: mounted in its own namespace"
            );
        }
        assert_eq!(
            uid_map(&w, &a, label).await,
            ["0", "100000", "65536"],
            "{label}: uid_map"
        );
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
        // The image's VOLUME, copied from the image and given to the pod's root.
        let (code, out, err) = w
            .exec(&a, &["stat", "-c", "%u:%g", "/data", "/data/seed"])
            .await;
        assert_eq!(
            (code, out.split_whitespace().collect::<Vec<_>>()),
            (0, vec!["0:0", "0:0"]),
            "{label}: the image volume is root's inside ({err})"
        );
        let (code, out, err) = w
            .exec(&a, &["sh", "-c", "cat /data/seed && touch /data/made"])
            .await;
        assert_eq!(
            (code, out.as_str()),
            (0, "seed\n"),
            "{label}: write to the image volume: {err}"
        );

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

        remove_pod(&w, &pod, label).await;
        assert!(!userns_rootfs.exists(), "{label}: rootfs directory left");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_userns_options_are_refused_naming_the_field() {
    let w = World::start(&image(), "e2e/userns-invalid", "").await;
    let ok = || vec![mapping(HOST_ID, 0, 65536)];
    let only = |u: UserNamespace| NamespaceOption {
        userns_options: Some(u),
        ..Default::default()
    };
    let cases = [
        (
            "CONTAINER",
            only(userns(NamespaceMode::Container, ok(), ok())),
        ),
        ("TARGET", only(userns(NamespaceMode::Target, ok(), ok()))),
        (
            "no uid mapping",
            only(userns(NamespaceMode::Pod, vec![], ok())),
        ),
        (
            "two gid mappings",
            only(userns(
                NamespaceMode::Pod,
                ok(),
                vec![mapping(HOST_ID, 0, 10), mapping(300_000, 10, 10)],
            )),
        ),
        (
            "container id 1",
            only(userns(
                NamespaceMode::Pod,
                vec![mapping(HOST_ID, 1, 65536)],
                ok(),
            )),
        ),
        (
            "length 0",
            only(userns(
                NamespaceMode::Pod,
                vec![mapping(HOST_ID, 0, 0)],
                ok(),
            )),
        ),
        (
            "overflow",
            only(userns(
                NamespaceMode::Pod,
                vec![mapping(u32::MAX - 5, 0, 65536)],
                ok(),
            )),
        ),
        (
            "NODE with mappings",
            only(userns(NamespaceMode::Node, ok(), ok())),
        ),
        // kubelet's validation (hostUsers: false forbids hostNetwork/hostPID/hostIPC).
        (
            "host network",
            NamespaceOption {
                network: NamespaceMode::Node.into(),
                ..only(pod_userns())
            },
        ),
        (
            "host PID",
            NamespaceOption {
                pid: NamespaceMode::Node.into(),
                ..only(pod_userns())
            },
        ),
        (
            "host IPC",
            NamespaceOption {
                ipc: NamespaceMode::Node.into(),
                ..only(pod_userns())
            },
        ),
    ];
    for (i, (name, ns)) in cases.into_iter().enumerate() {
        let err =
            w.d.runtime()
                .await
                .expect("connect")
                .run_pod_sandbox(pod_request(&format!("bad-{i}"), ns, ""))
                .await
                .expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err}");
        assert!(
            err.message().contains("namespace_options.userns_options"),
            "{name}: {err}"
        );
    }
}

/// Recovery: the pod's user namespace (its pin and the mappings in the record) is
/// still there after crustd restarts; the running container keeps it, an exec joins
/// it, a new container joins the same one, and removal leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_pod_user_namespace_survives_a_crustd_restart() {
    let mut w = world("e2e/userns-restart").await;
    let mut pods = Vec::new();
    for handler in HANDLERS {
        let name = format!(
            "restart-{}",
            if handler.is_empty() {
                "builtin"
            } else {
                handler
            }
        );
        let pod = userns_pod(&w, &name, handler, NamespaceMode::Container).await;
        let a = w
            .run(&pod, userns_config(&w, "a", &["sleep", "3600"]))
            .await;
        let (_, before, _) = w.exec(&a, &["readlink", "/proc/self/ns/user"]).await;
        pods.push((handler, pod, a, before));
    }

    assert!(w.d.terminate().await.unwrap().success());
    w.d = w.sb.start().unwrap();
    w.d.wait_ready().await.unwrap();

    for (handler, pod, a, before) in pods {
        let label = label(handler);
        assert_eq!(
            uid_map(&w, &a, label).await,
            ["0", "100000", "65536"],
            "{label}: exec after the restart"
        );
        let (_, after, _) = w.exec(&a, &["readlink", "/proc/self/ns/user"]).await;
        assert_eq!(before, after, "{label}: the same user namespace");
        let b = w
            .run(&pod, userns_config(&w, "b", &["sleep", "3600"]))
            .await;
        let (_, in_b, _) = w.exec(&b, &["readlink", "/proc/self/ns/user"]).await;
        assert_eq!(
            before, in_b,
            "{label}: a container made after the restart joins it"
        );
        let (code, out, err) = w.exec(&b, &["id", "-u"]).await;
        assert_eq!((code, out.trim()), (0, "0"), "{label}: id -u ({err})");
        assert_eq!(
            reported_userns(&w, &pod).await,
            Some(pod_userns()),
            "{label}: the record kept the mappings"
        );
        remove_pod(&w, &pod, label).await;
    }
}

/// `pid: POD` in a user namespace pod: the containers share one PID namespace (with
/// the pod init as PID 1) and see each other's processes, in the pod's one user
/// namespace.
#[tokio::test(flavor = "multi_thread")]
async fn a_shared_pid_namespace_in_a_user_namespace_pod() {
    let w = world("e2e/userns-pidns").await;
    for handler in HANDLERS {
        let label = label(handler);
        let name = format!(
            "pidns-{}",
            if handler.is_empty() {
                "builtin"
            } else {
                handler
            }
        );
        let pod = userns_pod(&w, &name, handler, NamespaceMode::Pod).await;
        let mut configs = Vec::new();
        for c in ["a", "b"] {
            let mut config = userns_config(&w, c, &["sleep", "3600"]);
            let sc = config
                .linux
                .as_mut()
                .unwrap()
                .security_context
                .as_mut()
                .unwrap();
            sc.namespace_options.as_mut().unwrap().pid = NamespaceMode::Pod.into();
            configs.push(config);
        }
        let a = w.run(&pod, configs[0].clone()).await;
        let b = w.run(&pod, configs[1].clone()).await;
        let (_, pid_a, _) = w.exec(&a, &["readlink", "/proc/self/ns/pid"]).await;
        let (_, pid_b, _) = w.exec(&b, &["readlink", "/proc/self/ns/pid"]).await;
        assert_eq!(pid_a, pid_b, "{label}: one PID namespace");
        let host_pid = fs::read_link("/proc/self/ns/pid").unwrap();
        assert_ne!(pid_a.trim(), host_pid.display().to_string(), "{label}");
        let (code, comm, err) = w.exec(&b, &["cat", "/proc/1/comm"]).await;
        assert_eq!(
            (code, comm.trim()),
            (0, "crust-pod-init"),
            "{label}: PID 1 is the pod init ({err})"
        );
        // Exec'd from its sealed memfd as the pod's root, not left a fork of the
        // monitor (the fallback where the exec fails).
        let pids: crust_runtime::monitor::MonitorPids = serde_json::from_slice(
            &fs::read(w.sb.state().join("pods").join(&pod).join("monitor.json")).unwrap(),
        )
        .unwrap();
        let init = pids.init.expect("pid: POD has an init").pid;
        assert_eq!(
            fs::read_link(format!("/proc/{init}/exe"))
                .unwrap()
                .to_string_lossy(),
            "/memfd:crust-pod-init (deleted)",
            "{label}"
        );
        // Both sleeps, a's and b's, are visible from b.
        let (code, all, err) = w.exec(&b, &["sh", "-c", "cat /proc/[0-9]*/comm"]).await;
        assert_eq!(code, 0, "{label}: {err}");
        assert_eq!(
            all.lines().filter(|l| *l == "sleep").count(),
            2,
            "{label}: processes seen from b: {all:?}"
        );
        for id in [&a, &b] {
            assert_eq!(
                uid_map(&w, id, label).await,
                ["0", "100000", "65536"],
                "{label}"
            );
        }
        // The pod init runs as the pod's root (it was started in the pod's user
        // namespace, which owns the PID namespace, so that runc may join it), but as
        // PID 1 it takes no SIGKILL from inside: the pod stays up.
        let _ = w.exec(&b, &["sh", "-c", "kill -9 1"]).await;
        let (code, comm, err) = w.exec(&a, &["cat", "/proc/1/comm"]).await;
        assert_eq!(
            (code, comm.trim()),
            (0, "crust-pod-init"),
            "{label}: the pod init survives SIGKILL from a container ({err})"
        );
        remove_pod(&w, &pod, label).await;
    }
}

/// Terminals in a user namespace container: an exec with `tty` and an attach to a
/// `tty` container both get a pty the container's root owns (the launcher chowns it
/// to the mapped host id).
#[tokio::test(flavor = "multi_thread")]
async fn tty_exec_and_attach_in_a_user_namespace_container() {
    let w = world("e2e/userns-tty").await;
    for handler in HANDLERS {
        let label = label(handler);
        let name = format!(
            "tty-{}",
            if handler.is_empty() {
                "builtin"
            } else {
                handler
            }
        );
        let pod = userns_pod(&w, &name, handler, NamespaceMode::Container).await;
        let mut config = userns_config(&w, "shell", &["sh"]);
        config.tty = true;
        config.stdin = true;
        let id = w.run(&pod, config).await;

        let mut rt = w.d.runtime().await.expect("connect");
        let url = rt
            .exec(ExecRequest {
                container_id: id.clone(),
                cmd: ["sh", "-c", "echo A$(id -u)B; stat -c C%uD /proc/self/fd/0"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                tty: true,
                stdout: true,
                ..Default::default()
            })
            .await
            .expect("Exec")
            .into_inner()
            .url;
        let opts = StreamOpts {
            stdout: true,
            tty: true,
            ..Default::default()
        };
        let out = sc::exec_collect(&url, sc::Transport::Spdy, opts, b"")
            .await
            .unwrap_or_else(|e| panic!("{label}: tty exec: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.exit_code, 0, "{label}: {text}");
        assert!(
            text.contains("A0B") && text.contains("C0D"),
            "{label}: tty exec as root, on a pty root owns: {text:?}"
        );

        let url = rt
            .attach(AttachRequest {
                container_id: id.clone(),
                stdin: true,
                tty: true,
                stdout: true,
                ..Default::default()
            })
            .await
            .expect("Attach")
            .into_inner()
            .url;
        let opts = StreamOpts {
            stdin: true,
            stdout: true,
            tty: true,
            ..Default::default()
        };
        let input = b"echo E$(id -u)F; stat -c G%uH /proc/self/fd/0; exit\n";
        let out = sc::exec_collect(&url, sc::Transport::Spdy, opts, input)
            .await
            .unwrap_or_else(|e| panic!("{label}: tty attach: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("E0F") && text.contains("G0H"),
            "{label}: the attached shell is root, on a pty root owns: {text:?}"
        );
        remove_pod(&w, &pod, label).await;
    }
}

/// A privileged container in a user namespace pod (kubelet allows it: its validation
/// forbids only host network/PID/IPC with `hostUsers: false`): every capability, but
/// over the pod's user namespace only. It writes its own network namespace's sysctls
/// (owned by the pod's root) but not a global one (owned by host root), and its root
/// is still the mapped id.
#[tokio::test(flavor = "multi_thread")]
async fn a_privileged_container_in_a_user_namespace_pod_is_root_of_the_pod_only() {
    let w = world("e2e/userns-privileged").await;
    for handler in HANDLERS {
        let label = label(handler);
        let name = format!(
            "priv-{}",
            if handler.is_empty() {
                "builtin"
            } else {
                handler
            }
        );
        let pod = w
            .run_pod(
                &PodOptions::named(&name)
                    .handler(handler)
                    .pid(NamespaceMode::Container)
                    .privileged()
                    .userns(pod_userns()),
            )
            .await;
        let mut config = userns_config(&w, "priv", &["sleep", "3600"]);
        config
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .privileged = true;
        let id = w.run(&pod, config).await;
        assert_eq!(
            uid_map(&w, &id, label).await,
            ["0", "100000", "65536"],
            "{label}"
        );
        let (code, out, err) = w.exec(&id, &["sh", "-c", "cat /proc/self/status"]).await;
        assert_eq!(code, 0, "{label}: {err}");
        let cap_eff = out
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(str::trim)
            .unwrap_or_default()
            .to_string();
        assert!(
            u64::from_str_radix(&cap_eff, 16).is_ok_and(|c| c & (1 << 21) != 0),
            "{label}: CAP_SYS_ADMIN (in the pod's namespace): CapEff {cap_eff:?}"
        );
        let (code, _, err) = w
            .exec(&id, &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
            .await;
        assert_eq!(
            code, 0,
            "{label}: its own network namespace's sysctl: {err}"
        );
        let (code, _, _) = w
            .exec(&id, &["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"])
            .await;
        assert_ne!(code, 0, "{label}: a host-wide sysctl is host root's");
        remove_pod(&w, &pod, label).await;
    }
}

/// CRI `Mount.uidMappings`/`gidMappings` (kubelet's idmapped volumes, with the pod's
/// own mappings): through the built-in launcher's idmapped bind, files host root made
/// are the container root's, and what it writes lands on disk as host root, not as
/// the mapped id. runc 1.1 would ignore the mappings, so it is refused; other
/// mappings, a pod without a user namespace and half a mapping are refused too.
#[tokio::test(flavor = "multi_thread")]
async fn idmapped_mounts_use_the_pods_mappings() {
    let w = world("e2e/userns-idmap").await;
    let vol = w.sb.path().join("idmapped");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("host-owned"), b"host\n").unwrap();
    let idmapped = |m: UserNamespace| Mount {
        container_path: "/idvol".into(),
        host_path: vol.display().to_string(),
        uid_mappings: m.uids,
        gid_mappings: m.gids,
        ..Default::default()
    };

    let pod = userns_pod(&w, "idmap-builtin", "", NamespaceMode::Container).await;
    let mut config = userns_config(&w, "a", &["sleep", "3600"]);
    config.mounts = vec![idmapped(pod_userns())];
    let a = w.run(&pod, config).await;
    let (code, out, err) = w
        .exec(&a, &["stat", "-c", "%u:%g", "/idvol/host-owned"])
        .await;
    assert_eq!(
        (code, out.trim()),
        (0, "0:0"),
        "host root's file is root's ({err})"
    );
    let (code, _, err) = w
        .exec(
            &a,
            &[
                "sh",
                "-c",
                "echo more >> /idvol/host-owned && touch /idvol/made",
            ],
        )
        .await;
    assert_eq!(code, 0, "root writes through the idmapped mount: {err}");
    assert_eq!(fs::read(vol.join("host-owned")).unwrap(), b"host\nmore\n");
    let made = fs::metadata(vol.join("made")).unwrap();
    assert_eq!((made.uid(), made.gid()), (0, 0), "on disk as host root");

    // Mappings other than the pod's, and half a mapping.
    let cases = [
        (
            "other mappings",
            userns(
                NamespaceMode::Pod,
                vec![mapping(200_000, 0, 65536)],
                vec![mapping(HOST_ID, 0, 65536)],
            ),
            "must be the pod's",
        ),
        (
            "uids only",
            userns(NamespaceMode::Pod, vec![mapping(HOST_ID, 0, 65536)], vec![]),
            "go together",
        ),
    ];
    for (name, m, want) in cases {
        let mut config = userns_config(&w, "bad", &["sleep", "1"]);
        config.mounts = vec![idmapped(m)];
        let err = w.create(&pod, config).await.expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err}");
        assert!(
            err.message().contains("config.mounts[].uidMappings") && err.message().contains(want),
            "{name}: {err}"
        );
    }
    remove_pod(&w, &pod, "built-in").await;

    // A pod without a user namespace.
    let plain = w.run_pod(&PodOptions::named("idmap-plain")).await;
    let mut config = w.config("a", &["sleep", "1"]);
    config.mounts = vec![idmapped(pod_userns())];
    let err = w.create(&plain, config).await.expect_err("no pod userns");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("no user namespace"), "{err}");
    remove_pod(&w, &plain, "no userns").await;

    // runc 1.1.5's `features` has no linux.mountExtensions.idmap: refused, not
    // mounted without the mapping.
    let pod = userns_pod(&w, "idmap-runc", "runc", NamespaceMode::Container).await;
    let mut config = userns_config(&w, "a", &["sleep", "1"]);
    config.mounts = vec![idmapped(pod_userns())];
    let err = w
        .create(&pod, config)
        .await
        .expect_err("runc without idmap");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(
        err.message().contains("config.mounts[0].uidMappings")
            && err.message().contains("does not honour"),
        "{err}"
    );
    remove_pod(&w, &pod, "runc").await;
}
