//! PID namespaces a container can be given, through the real crustd and both
//! launchers (built-in and runc): the pod's (POD), its own (CONTAINER, also inside a
//! pod that shares one), and another container's (TARGET, what kubelet uses for
//! ephemeral debug containers). Each is checked from inside the containers by the
//! namespace identity in `/proc/self/ns/pid` and by what `/proc/1` is.

use std::path::Path;

use crust_e2e::world::{PodOptions, World, busybox_image};
use crust_proto::runtime::v1::{
    ContainerConfig, LinuxContainerConfig, LinuxContainerSecurityContext, NamespaceMode,
    NamespaceOption, StopContainerRequest,
};
use tonic::Code;

const RUNC: &str = "/usr/sbin/runc";

async fn world() -> World {
    assert!(
        Path::new(RUNC).is_file(),
        "{RUNC} not found: install it with `apt-get install runc`"
    );
    let image = busybox_image(&["sh", "cat", "sleep", "readlink", "echo"], |_| {});
    World::start(
        &image,
        "test/pidns",
        &format!("[runtime.handlers.runc]\ntype = \"oci\"\npath = \"{RUNC}\"\n"),
    )
    .await
}

fn with_pid(mut c: ContainerConfig, pid: NamespaceMode, target: &str) -> ContainerConfig {
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: pid.into(),
                target_id: target.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

/// `pid:[4026531836]` of the container's PID namespace, and its PID 1's command line.
async fn pid_view(w: &World, id: &str) -> (String, String) {
    let (code, ns, err) = w.exec(id, &["readlink", "/proc/self/ns/pid"]).await;
    assert_eq!(code, 0, "readlink in {id}: {err}");
    let (code, init, err) = w.exec(id, &["cat", "/proc/1/cmdline"]).await;
    assert_eq!(code, 0, "cat /proc/1/cmdline in {id}: {err}");
    (
        ns.trim().to_string(),
        init.replace('\0', " ").trim().to_string(),
    )
}

async fn stop(w: &World, id: &str) {
    w.d.runtime()
        .await
        .unwrap()
        .stop_container(StopContainerRequest {
            container_id: id.into(),
            timeout: 0,
        })
        .await
        .unwrap_or_else(|e| panic!("StopContainer {id}: {e:?}\ncrustd:\n{}", w.d.logs()));
}

/// TARGET joins the target container's namespace: both see the same namespace and the
/// target's command as PID 1; the debug container dies with its target (PID 1 of the
/// namespace), as in Kubernetes.
async fn target_joins_the_target(handler: &str) {
    let w = world().await;
    let pod = w
        .run_pod(
            &PodOptions::named(&format!("target-{handler}"))
                .handler(handler)
                .pid(NamespaceMode::Container),
        )
        .await;
    let app = w
        .run(
            &pod,
            with_pid(
                w.config("app", &["sleep", "3601"]),
                NamespaceMode::Container,
                "",
            ),
        )
        .await;
    let debug = w
        .run(
            &pod,
            with_pid(
                w.config("debug", &["sleep", "3602"]),
                NamespaceMode::Target,
                &app,
            ),
        )
        .await;
    let (app_ns, app_init) = pid_view(&w, &app).await;
    let (debug_ns, debug_init) = pid_view(&w, &debug).await;
    assert_eq!(
        app_init, "sleep 3601",
        "{handler}: the target is PID 1 of its namespace"
    );
    assert_eq!(
        debug_ns, app_ns,
        "{handler}: the TARGET container shares the target's PID namespace"
    );
    assert_eq!(
        debug_init, "sleep 3601",
        "{handler}: the TARGET container sees the target as PID 1"
    );
    let own = std::fs::read_link("/proc/self/ns/pid").unwrap();
    assert_ne!(
        app_ns,
        own.display().to_string(),
        "{handler}: not the host's namespace"
    );

    stop(&w, &app).await;
    let status = w.d.wait_exited(&debug).await;
    assert_eq!(
        status.exit_code, 137,
        "{handler}: the kernel kills the namespace's other processes when its PID 1 exits"
    );
}

#[tokio::test]
async fn pid_target_joins_the_target_container_with_the_builtin_launcher() {
    target_joins_the_target("").await;
}

#[tokio::test]
async fn pid_target_joins_the_target_container_with_runc() {
    target_joins_the_target("runc").await;
}

/// A container asking for a PID namespace of its own in a pod that shares one gets
/// its own (it is PID 1 there), while its POD neighbour stays in the pod's.
async fn own_namespace_inside_a_shared_pod(handler: &str) {
    let w = world().await;
    let pod = w
        .run_pod(
            &PodOptions::named(&format!("shared-{handler}"))
                .handler(handler)
                .pid(NamespaceMode::Pod),
        )
        .await;
    let shared = w.run(&pod, w.config("shared", &["sleep", "3603"])).await;
    let private = w
        .run(
            &pod,
            with_pid(
                w.config("private", &["sleep", "3604"]),
                NamespaceMode::Container,
                "",
            ),
        )
        .await;
    let (shared_ns, shared_init) = pid_view(&w, &shared).await;
    let (private_ns, private_init) = pid_view(&w, &private).await;
    assert_ne!(
        shared_ns, private_ns,
        "{handler}: CONTAINER gets a namespace of its own"
    );
    assert_eq!(private_init, "sleep 3604", "{handler}: and is PID 1 in it");
    assert_ne!(
        shared_init, "sleep 3603",
        "{handler}: the POD container's PID 1 is the pod's init, not itself"
    );
    // The harness leaves nothing behind, also a container in a PID namespace of its
    // own, which the pod init's death does not take with it.
    let pids = [
        container_pid(&w, &shared).await,
        container_pid(&w, &private).await,
    ];
    drop(w);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .is_ok_and(|s| s.contains("State:\tZ")),
            "{handler}: container process {pid} outlived the test's teardown"
        );
    }
}

/// The host pid of container `id`, from its verbose status.
async fn container_pid(w: &World, id: &str) -> i32 {
    let details = w.verbose_info(id).await;
    details["pid"]
        .as_i64()
        .expect("a running container has a pid") as i32
}

#[tokio::test]
async fn pid_container_inside_a_shared_pod_with_the_builtin_launcher() {
    own_namespace_inside_a_shared_pod("").await;
}

#[tokio::test]
async fn pid_container_inside_a_shared_pod_with_runc() {
    own_namespace_inside_a_shared_pod("runc").await;
}

/// What TARGET refuses, each with the code and the field.
#[tokio::test]
async fn pid_target_refusals_name_the_target() {
    let w = world().await;
    let pod = w
        .run_pod(&PodOptions::named("refusals").pid(NamespaceMode::Container))
        .await;
    let other_pod = w
        .run_pod(&PodOptions::named("other").pid(NamespaceMode::Container))
        .await;
    let ctr = |name: &str| {
        with_pid(
            w.config(name, &["sleep", "3600"]),
            NamespaceMode::Container,
            "",
        )
    };
    let elsewhere = w.run(&other_pod, ctr("elsewhere")).await;
    let done = w
        .run(
            &pod,
            with_pid(
                w.config("done", &["sh", "-c", "exit 0"]),
                NamespaceMode::Container,
                "",
            ),
        )
        .await;
    w.d.wait_exited(&done).await;
    let created = w.create(&pod, ctr("created")).await.unwrap();

    let cases = [
        ("", Code::InvalidArgument, "target_id"),
        (
            "0123456789abcdef-missing",
            Code::NotFound,
            "0123456789abcdef-missing",
        ),
        (elsewhere.as_str(), Code::InvalidArgument, "target_id"),
        (done.as_str(), Code::FailedPrecondition, done.as_str()),
        (created.as_str(), Code::FailedPrecondition, created.as_str()),
    ];
    for (i, (target, code, named)) in cases.into_iter().enumerate() {
        let err = w
            .create(
                &pod,
                with_pid(
                    w.config(&format!("debug{i}"), &["sleep", "1"]),
                    NamespaceMode::Target,
                    target,
                ),
            )
            .await
            .expect_err(&format!("TARGET {target:?} must be refused"));
        assert_eq!(err.code(), code, "TARGET {target:?}: {err:?}");
        assert!(
            err.message().contains(named),
            "TARGET {target:?}: message names {named:?}: {}",
            err.message()
        );
    }
}

/// Host pids whose command line is exactly `args`.
fn host_processes(args: &[&str]) -> Vec<i32> {
    let wanted = args.join("\0") + "\0";
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted.as_bytes())
        })
        .collect()
}

/// A container whose main process exits leaves nothing behind, also where the kernel
/// would not clean up: in the pod's shared PID namespace its orphans would be adopted
/// by the pod init, and with TARGET by the target.
async fn nothing_outlives_the_main_process(handler: &str) {
    let w = world().await;
    let pod = w
        .run_pod(
            &PodOptions::named(&format!("orphans-{handler}"))
                .handler(handler)
                .pid(NamespaceMode::Pod),
        )
        .await;
    let marker = if handler.is_empty() { "3611" } else { "3612" };
    let script = format!("sleep {marker} & sleep {marker} & echo forked");
    let id = w
        .run(&pod, w.config("parent", &["sh", "-c", &script]))
        .await;
    let status = w.d.wait_exited(&id).await;
    assert_eq!(status.exit_code, 0, "{handler}: {status:?}");
    let mut left = host_processes(&["sleep", marker]);
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        left = host_processes(&["sleep", marker]);
    }
    for pid in &left {
        // Ours (unique marker): end them so a failure leaves nothing behind either.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(
        left.is_empty(),
        "{handler}: the container's background processes outlived it: {left:?}"
    );
}

#[tokio::test]
async fn nothing_outlives_a_container_in_a_shared_pid_namespace_builtin() {
    nothing_outlives_the_main_process("").await;
}

#[tokio::test]
async fn nothing_outlives_a_container_in_a_shared_pid_namespace_runc() {
    nothing_outlives_the_main_process("runc").await;
}
