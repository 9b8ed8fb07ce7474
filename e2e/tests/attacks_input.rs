//! Issue 13, hostile input: image files and profiles that hurt crustd when read (item
//! 7), over-long metadata (item 10) and requests answered with the wrong code or
//! accepted silently. Each test drives the real crustd over its socket and checks it
//! refuses cleanly (INVALID_ARGUMENT naming the field, a short message) and still
//! answers afterwards.

use std::{future::Future, path::Path, pin::Pin, time::Duration};

use crust_e2e::{
    Crustd,
    image_builder::{Compression, Image, LayerBuilder, host_arch},
    world::{PodOptions, World},
};
use crust_proto::runtime::v1::{
    ContainerConfig, ExecSyncRequest, ImageSpec, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    ListPodSandboxRequest, Mount, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
    PortMapping, PullImageRequest, RunPodSandboxRequest, SecurityProfile,
    UpdateContainerResourcesRequest, UpdatePodSandboxResourcesRequest,
    security_profile::ProfileType,
};
use tonic::{Code, Status};

/// How long crustd may take to answer `Version` once an attack was refused. It answers
/// in milliseconds; this only turns a hang into a failure instead of a stuck test.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

const APPLETS: [&str; 4] = ["sh", "sleep", "id", "cat"];

/// A busybox layer with the usual directories; `etc` gets whatever `etc` adds.
fn image(user: &str, etc: impl FnOnce(&mut LayerBuilder)) -> Image {
    let mut layer = LayerBuilder::new();
    layer
        .busybox(&APPLETS)
        .expect("busybox-static is installed");
    for dir in ["etc", "proc", "sys", "dev", "tmp"] {
        layer.dir(dir, 0o755);
    }
    layer.file("etc/group", b"root:x:0:\n", 0o644);
    etc(&mut layer);
    Image::build(
        vec![layer.finish(Compression::Gzip)],
        host_arch(),
        serde_json::json!({"Cmd": ["sleep", "1000"], "Env": ["PATH=/bin"], "User": user}),
    )
}

async fn world() -> World {
    World::start(
        &image("", |l| {
            l.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644);
        }),
        "attacks-input",
        "",
    )
    .await
}

/// Pushes `image` as `<repo>:v1` to the world's registry, pulls it, returns its name.
async fn pull(w: &World, repo: &str, image: &Image) -> String {
    w.registry
        .push_image(repo, &["v1"], image)
        .await
        .expect("push the image");
    let reference = format!("{}/{repo}:v1", w.registry.host());
    w.d.image()
        .await
        .expect("connect")
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: reference.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("pull {reference}: {e}"));
    reference
}

/// CreateContainer of `config` in `pod`, which must answer (not hang) with an error.
async fn create_refused(w: &World, pod: &str, config: ContainerConfig, what: &str) -> Status {
    let answer = tokio::time::timeout(ANSWER_WITHIN, w.create(pod, config)).await;
    match answer {
        Ok(Err(status)) => status,
        Ok(Ok(id)) => panic!("{what}: CreateContainer succeeded ({id})"),
        Err(_) => panic!(
            "{what}: CreateContainer did not answer within {ANSWER_WITHIN:?}\n{}",
            w.d.logs()
        ),
    }
}

fn with_image(mut config: ContainerConfig, image: &str) -> ContainerConfig {
    config.image = Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    });
    config
}

/// Item 7. An image whose `etc/passwd` is a symlink to `/dev/zero`, and one whose
/// `etc/passwd` is a FIFO, with a `USER` that needs the file. Before, crustd read
/// `<layer>/etc/passwd` on the host following symlinks: the first grew crustd until the
/// OOM killer ended it (again at every kubelet retry), the second blocked the reading
/// runtime thread forever (and the RPC with it). Now the file is resolved inside the
/// image (there is no /dev/zero in it: no passwd, so the user is not found) and a FIFO
/// is refused as not a regular file; both answer INVALID_ARGUMENT at once and crustd
/// keeps answering.
#[tokio::test(flavor = "multi_thread")]
async fn item7_passwd_symlink_to_dev_zero_and_fifo_are_refused() {
    let w = world().await;
    let pod = w.run_pod(&PodOptions::named("passwd-dos")).await;
    let zero = pull(
        &w,
        "passwd-zero",
        &image("app", |l| {
            l.symlink("etc/passwd", "/dev/zero");
        }),
    )
    .await;
    let fifo = pull(
        &w,
        "passwd-fifo",
        &image("app", |l| {
            l.fifo("etc/passwd", 0o644);
        }),
    )
    .await;
    for (what, reference, text) in [
        ("etc/passwd -> /dev/zero", &zero, "user \"app\" not found"),
        (
            "etc/passwd is a FIFO",
            &fifo,
            "/etc/passwd is a FIFO, not a regular file",
        ),
    ] {
        // Twice, as kubelet retries: the second must be refused as cleanly.
        for attempt in 0..2 {
            let config = with_image(w.config(&format!("c{attempt}"), &[]), reference);
            let status = create_refused(&w, &pod, config, what).await;
            assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
            assert!(
                status.message().contains(text),
                "{what}: {:?} lacks {text:?}",
                status.message()
            );
            w.d.assert_alive(what, ANSWER_WITHIN).await;
        }
    }
}

/// Item 7. An image whose `etc/passwd` is a symlink to an absolute host path: a temp
/// file on the host holding a user that only it has. Before, the host's file was read
/// and the container got the host user's uid. Now the link resolves inside the image,
/// where the target does not exist, so the user is not found; the same link to a file
/// the image does have resolves in the image.
#[tokio::test(flavor = "multi_thread")]
async fn item7_passwd_symlink_to_a_host_file_resolves_in_the_image() {
    let w = world().await;
    let pod = w.run_pod(&PodOptions::named("passwd-host")).await;
    // Under /var/tmp, so that none of its directories is in the image.
    let host = tempfile::tempdir_in("/var/tmp").expect("temp dir");
    let user = format!("crust-hostonly-{}", std::process::id());
    let host_passwd = host.path().join("passwd");
    std::fs::write(&host_passwd, format!("{user}:x:4242:4242::/:/bin/sh\n")).unwrap();
    let host_passwd = host_passwd.display().to_string();

    let escaping = pull(
        &w,
        "passwd-host",
        &image(&user, |l| {
            l.symlink("etc/passwd", &host_passwd);
        }),
    )
    .await;
    let status = create_refused(
        &w,
        &pod,
        with_image(w.config("host", &[]), &escaping),
        "host link",
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("not found"),
        "{:?}",
        status.message()
    );

    // The same absolute link, with the target inside the image: followed there.
    let inside = pull(
        &w,
        "passwd-inside",
        &image(&user, |l| {
            let rel = &host_passwd[1..];
            let mut dir = String::new();
            for part in rel.split('/').take(rel.split('/').count() - 1) {
                dir = if dir.is_empty() {
                    part.to_string()
                } else {
                    format!("{dir}/{part}")
                };
                l.dir(&dir, 0o755);
            }
            l.file(
                rel,
                format!("{user}:x:1234:1234::/:/bin/sh\n").as_bytes(),
                0o644,
            )
            .symlink("etc/passwd", &host_passwd);
        }),
    )
    .await;
    let id = w
        .create(&pod, with_image(w.config("inside", &[]), &inside))
        .await
        .unwrap_or_else(|e| panic!("CreateContainer with an in-image link: {e}"));
    let uid = &w.verbose_info(&id).await["runtimeSpec"]["process"]["user"]["uid"];
    assert_eq!(
        uid, 1234,
        "the user comes from the image's file, not the host's"
    );
    w.d.assert_alive("the host link", ANSWER_WITHIN).await;
}

/// Item 7. A Localhost seccomp profile that is a FIFO, and one that is /dev/zero.
/// Before, crustd read the path with `read_to_string`: the FIFO blocked the runtime
/// thread forever, /dev/zero grew crustd without bound. Now only a bounded regular
/// file is read: INVALID_ARGUMENT naming the field, and crustd answers.
#[tokio::test(flavor = "multi_thread")]
async fn item7_seccomp_profile_fifo_and_dev_zero_are_refused() {
    let w = world().await;
    let pod = w.run_pod(&PodOptions::named("seccomp-dos")).await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let fifo = tmp.path().join("profile.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    for (what, path, text) in [
        ("a FIFO", fifo.display().to_string(), "is a FIFO"),
        (
            "/dev/zero",
            "/dev/zero".to_string(),
            "is a character device",
        ),
    ] {
        let mut config = w.config("c", &["sleep", "1000"]);
        config.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::Localhost.into(),
                    localhost_ref: path,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let status = create_refused(&w, &pod, config, what).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        for want in ["seccomp.localhost_ref", text] {
            assert!(
                status.message().contains(want),
                "{what}: {:?} lacks {want:?}",
                status.message()
            );
        }
        w.d.assert_alive(what, ANSWER_WITHIN).await;
    }
}

fn pod_config(w: &World, name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: "uid-long".into(),
            namespace: "e2e".into(),
            attempt: 0,
        }),
        log_directory: w.logs.join("long").display().to_string(),
        ..Default::default()
    }
}

async fn run_pod(d: &Crustd, config: PodSandboxConfig) -> Result<String, Status> {
    d.runtime()
        .await
        .expect("connect")
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

async fn pod_count(d: &Crustd) -> usize {
    d.runtime()
        .await
        .expect("connect")
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
        .len()
}

/// Item 10. RunPodSandbox with a 1 MiB pod name. Before, it was accepted: the name went
/// into CNI_ARGS, CNI ADD and the rollback DEL failed with E2BIG, and the record was
/// retried at every start forever. Now it is INVALID_ARGUMENT naming metadata.name, in
/// a short message, before anything is made; after a restart no pod exists and the
/// daemon logs no teardown retries.
#[tokio::test(flavor = "multi_thread")]
async fn item10_a_1mib_pod_name_is_refused_up_front() {
    let mut w = world().await;
    let long = "p".repeat(1 << 20);
    let status = run_pod(&w.d, pod_config(&w, &long))
        .await
        .expect_err("a 1 MiB pod name is refused");
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "{}",
        &status.message()[..200.min(status.message().len())]
    );
    assert!(
        status.message().len() < 400,
        "the message echoes the name: {} bytes",
        status.message().len()
    );
    assert!(
        status.message().contains("metadata.name"),
        "{:?}",
        status.message()
    );
    assert_eq!(pod_count(&w.d).await, 0, "nothing was made");

    w.d.terminate().await.expect("crustd stops");
    w.d = w.sb.start().expect("restart crustd");
    w.d.wait_ready().await.expect("crustd gets ready again");
    assert_eq!(pod_count(&w.d).await, 0, "no record came back");
    let logs = w.d.logs();
    for bad in ["E2BIG", "Argument list too long", "teardown", "retry"] {
        assert!(!logs.contains(bad), "startup logs {bad:?}:\n{logs}");
    }
    assert!(
        logs.len() < 1 << 20,
        "the startup log repeats the name ({} bytes)",
        logs.len()
    );
}

type Call<'a> = Pin<Box<dyn Future<Output = Result<(), Status>> + 'a>>;

/// The wrong codes of issue 13: requests that came back INTERNAL (a host port of
/// 70000, an unparseable bandwidth annotation, an unknown sysctl, a NUL in an ExecSync
/// argument) and requests accepted silently (negative ports, protocol 99, a host IP
/// that is no IP, unknown enum values, negative resources and overhead, log paths that
/// leave the pod's log directory). Each must be INVALID_ARGUMENT naming the field;
/// errors about containers say "container", never "sandbox" or "pod". Nothing is left
/// behind by a refused RunPodSandbox.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_codes_are_invalid_argument() {
    let world = world().await;
    let w = &world;
    let pod = &w.run_pod(&PodOptions::named("codes")).await;
    let sleeper = &w.run(pod, w.config("sleeper", &["sleep", "1000"])).await;
    let pods_before = pod_count(&w.d).await;
    // Each case gets names of its own, so that one wrongly accepted does not make the
    // next fail for a name clash instead of for what it checks.
    // Where the log_path cases would write (inside the test's sandbox, removed with it).
    let escaped_abs = w.sb.path().join("escaped-abs.log").display().to_string();
    let escaped_dotdot = w.sb.path().join("escaped-dotdot.log");
    let n = &std::cell::Cell::new(0);
    let fresh = move |what: &str| {
        n.set(n.get() + 1);
        format!("{what}-{}", n.get())
    };

    let run = move |edit: fn(&mut PodSandboxConfig)| -> Call<'_> {
        let mut c = pod_config(w, &fresh("refused"));
        edit(&mut c);
        Box::pin(async move { run_pod(&w.d, c).await.map(|_| ()) })
    };
    let with_ports = move |ports: Vec<PortMapping>| -> Call<'_> {
        let mut c = pod_config(w, &fresh("refused"));
        c.port_mappings = ports;
        Box::pin(async move { run_pod(&w.d, c).await.map(|_| ()) })
    };
    let mapping = |protocol: i32, container_port: i32, host_port: i32, host_ip: &str| PortMapping {
        protocol,
        container_port,
        host_port,
        host_ip: host_ip.into(),
    };
    let create = move |edit: Box<dyn FnOnce(&mut ContainerConfig)>| -> Call<'_> {
        let mut c = w.config(&fresh("refused"), &["sleep", "1000"]);
        edit(&mut c);
        Box::pin(async move { w.create(pod, c).await.map(|_| ()) })
    };
    let container_sc =
        |sc: LinuxContainerSecurityContext| -> Box<dyn FnOnce(&mut ContainerConfig)> {
            Box::new(move |c| {
                c.linux = Some(LinuxContainerConfig {
                    security_context: Some(sc),
                    ..Default::default()
                })
            })
        };
    let container_res = |r: LinuxContainerResources| -> Box<dyn FnOnce(&mut ContainerConfig)> {
        Box::new(move |c| {
            c.linux = Some(LinuxContainerConfig {
                resources: Some(r),
                ..Default::default()
            })
        })
    };
    let exec = move |cmd: Vec<String>| -> Call<'_> {
        let id = sleeper.clone();
        Box::pin(async move {
            w.d.runtime()
                .await
                .expect("connect")
                .exec_sync(ExecSyncRequest {
                    container_id: id,
                    cmd,
                    timeout: 10,
                })
                .await
                .map(|_| ())
        })
    };

    // (case, the call, words the message must hold, a container RPC?)
    let cases: Vec<(&str, Call<'_>, &[&str], bool)> = vec![
        (
            "hostPort 70000 (was INTERNAL)",
            with_ports(vec![mapping(0, 80, 70000, "")]),
            &["config.port_mappings", "host_port 70000"],
            false,
        ),
        (
            "bandwidth annotation \"lots\" (was INTERNAL)",
            run(|c| {
                c.annotations
                    .insert("kubernetes.io/ingress-bandwidth".into(), "lots".into());
            }),
            &["config.annotations", "kubernetes.io/ingress-bandwidth"],
            false,
        ),
        (
            "unknown sysctl (was INTERNAL)",
            run(|c| {
                c.linux = Some(LinuxPodSandboxConfig {
                    sysctls: [("net.ipv4.crust_no_such_sysctl".into(), "1".into())].into(),
                    ..Default::default()
                })
            }),
            &["config.linux.sysctls", "net.ipv4.crust_no_such_sysctl"],
            false,
        ),
        (
            "NUL byte in an ExecSync arg (was INTERNAL)",
            exec(vec!["echo".into(), "a\0b".into()]),
            &["cmd", "NUL"],
            true,
        ),
        (
            "negative host port",
            with_ports(vec![mapping(0, 80, -8080, "")]),
            &["config.port_mappings", "host_port -8080"],
            false,
        ),
        (
            "negative container port",
            with_ports(vec![mapping(0, -80, 8080, "")]),
            &["config.port_mappings", "container_port -80"],
            false,
        ),
        (
            "protocol 99",
            with_ports(vec![mapping(99, 80, 0, "")]),
            &["config.port_mappings", "protocol"],
            false,
        ),
        (
            "hostIp not-an-ip",
            with_ports(vec![mapping(0, 80, 8080, "not-an-ip")]),
            &["config.port_mappings", "not-an-ip"],
            false,
        ),
        (
            "relative log_directory",
            run(|c| c.log_directory = "logs/refused".into()),
            &["config.log_directory", "absolute"],
            false,
        ),
        (
            "log_path with ..",
            create(Box::new(|c| c.log_path = "../../escaped-dotdot.log".into())),
            &["config.log_path"],
            true,
        ),
        (
            "absolute log_path",
            create(Box::new({
                let abs = escaped_abs.clone();
                move |c| c.log_path = abs
            })),
            &["config.log_path"],
            true,
        ),
        (
            "mount propagation 9",
            create(Box::new(|c| {
                c.mounts = vec![Mount {
                    container_path: "/m".into(),
                    host_path: "/tmp".into(),
                    propagation: 9,
                    ..Default::default()
                }]
            })),
            &["config.mounts.propagation", "unknown value 9"],
            true,
        ),
        (
            "seccomp profile type 9",
            create(container_sc(LinuxContainerSecurityContext {
                seccomp: Some(SecurityProfile {
                    profile_type: 9,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            })),
            &["seccomp", "unknown value 9"],
            true,
        ),
        (
            "namespace mode 9",
            create(container_sc(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    ipc: 9,
                    ..Default::default()
                }),
                ..Default::default()
            })),
            &["namespace_options", "unknown value 9"],
            true,
        ),
        (
            "negative cpu_shares",
            create(container_res(LinuxContainerResources {
                cpu_shares: -1024,
                ..Default::default()
            })),
            &["config.linux.resources", "cpu_shares"],
            true,
        ),
        (
            "negative memory limit",
            create(container_res(LinuxContainerResources {
                memory_limit_in_bytes: -1,
                ..Default::default()
            })),
            &["config.linux.resources", "memory_limit_in_bytes"],
            true,
        ),
        (
            "cpu_quota below -1",
            create(container_res(LinuxContainerResources {
                cpu_quota: -5,
                ..Default::default()
            })),
            &["config.linux.resources", "cpu_quota"],
            true,
        ),
        (
            "NUL in an env value",
            create(Box::new(|c| {
                c.envs = vec![KeyValue {
                    key: "A".into(),
                    value: "x\0y".into(),
                }]
            })),
            &["config.envs", "NUL"],
            true,
        ),
        (
            "negative UpdateContainerResources",
            Box::pin(async {
                w.d.runtime()
                    .await
                    .expect("connect")
                    .update_container_resources(UpdateContainerResourcesRequest {
                        container_id: sleeper.clone(),
                        linux: Some(LinuxContainerResources {
                            memory_limit_in_bytes: -4096,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
            }),
            &["linux", "memory_limit_in_bytes"],
            true,
        ),
        (
            "negative pod overhead",
            Box::pin(async {
                w.d.runtime()
                    .await
                    .expect("connect")
                    .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
                        pod_sandbox_id: pod.clone(),
                        overhead: Some(LinuxContainerResources {
                            cpu_shares: -2,
                            ..Default::default()
                        }),
                        resources: None,
                    })
                    .await
                    .map(|_| ())
            }),
            &["overhead", "cpu_shares"],
            false,
        ),
    ];
    let mut failures = Vec::new();
    for (name, call, words, about_container) in cases {
        let status = match call.await {
            Ok(()) => {
                failures.push(format!("{name}: accepted"));
                continue;
            }
            Err(status) => status,
        };
        if status.code() != Code::InvalidArgument {
            failures.push(format!("{name}: {:?} {}", status.code(), status.message()));
            continue;
        }
        let msg = status.message();
        for word in words {
            if !msg.contains(word) {
                failures.push(format!("{name}: {msg:?} lacks {word:?}"));
            }
        }
        if about_container && (msg.contains("sandbox") || msg.contains("pod ")) {
            failures.push(format!(
                "{name}: a container error speaks of a pod: {msg:?}"
            ));
        }
    }
    // A container name clash: its own code, and about a container.
    match w.create(pod, w.config("sleeper", &["sleep", "1000"])).await {
        Err(status) if status.code() == Code::AlreadyExists => {
            let msg = status.message();
            if !msg.starts_with("container ") || msg.contains("sandbox") {
                failures.push(format!("name clash: {msg:?} is not about a container"));
            }
        }
        other => failures.push(format!("name clash: {other:?}")),
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        pod_count(&w.d).await,
        pods_before,
        "a refused pod left a record"
    );
    for escaped in [Path::new(&escaped_abs), &escaped_dotdot] {
        assert!(
            !escaped.exists(),
            "{} was written outside the pod's log directory",
            escaped.display()
        );
    }
    w.d.assert_alive("the wrong-code cases", ANSWER_WITHIN)
        .await;
}
