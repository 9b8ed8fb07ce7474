//! The `oci` runtime handler: pods whose RuntimeClass handler is `type = "oci"` run
//! their containers with runc (Debian bookworm's), from the same generated spec as the
//! built-in launcher. Lifecycle, logs, exits, exec, and security settings that must
//! agree with the built-in launcher's.
//!
//! runc is required, not optional: without it these tests fail and say how to install
//! it. crun runs them too, inside a guest node (the last test here): bookworm's crun
//! refuses this host's hybrid cgroups (see TESTING.md), which
//! `crun_is_detected_not_assumed` checks.

use std::{collections::HashMap, fs, path::Path};

use crust_e2e::{
    guest::{in_guest_run, oci_runtime_under_test, run_suite_in_guest},
    world::{PodOptions, World, busybox_image},
};
use crust_proto::runtime::v1::{
    ContainerConfig, ContainerState, Int64Value, LinuxContainerConfig,
    LinuxContainerSecurityContext, NamespaceMode, NamespaceOption, RemoveContainerRequest,
    RemovePodSandboxRequest, StopContainerRequest, StopPodSandboxRequest,
};

/// The OCI runtime under test: runc here, crun in the guest run.
fn runc() -> String {
    oci_runtime_under_test()
}

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "id", "sleep", "hostname", "head", "grep", "touch", "ls",
];

/// Fails (never skips) when runc is missing: the oci handler is part of what crust
/// ships, so a host without runc cannot vouch for it.
fn require_runc() {
    let runc = runc();
    assert!(
        Path::new(&runc).is_file(),
        "{runc} not found: these tests drive the oci runtime handler with runc; \
         install it with `apt-get install runc` (Debian bookworm's 1.1.5 works)"
    );
}

async fn world() -> World {
    require_runc();
    world_with("runc", &runc()).await
}

/// A crustd with one extra handler, `name`, of `type = "oci"` running `binary`.
async fn world_with(name: &str, binary: &str) -> World {
    let handler = format!("[runtime.handlers.{name}]\ntype = \"oci\"\npath = \"{binary}\"\n");
    World::start(&busybox_image(APPLETS, |_| {}), "test/busybox", &handler).await
}

/// A pod for `handler`; `pid` is its PID namespace mode (POD: shared, CRI's default).
async fn run_pod(w: &World, name: &str, handler: &str, pid: NamespaceMode) -> String {
    w.run_pod(
        &PodOptions::named(name)
            .namespace("oci")
            .handler(handler)
            .pid(pid),
    )
    .await
}

/// (stream, text) of every CRI log record.
fn log(path: &str) -> Vec<(String, String)> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .map(|l| {
            let mut p = l.splitn(4, ' ');
            let _ts = p.next().unwrap();
            let stream = p.next().unwrap().to_string();
            assert_eq!(p.next(), Some("F"), "{l:?}");
            (stream, p.next().unwrap_or("").to_string())
        })
        .collect()
}

/// What runc itself says about container `id` (`runc state`), or None if it does not
/// know it: proof that runc, not the built-in launcher, runs it.
fn runc_state(w: &World, id: &str) -> Option<serde_json::Value> {
    let out = std::process::Command::new(runc())
        .arg("--root")
        .arg(w.sb.state().join("runc"))
        .args(["state", id])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn rootfs_mounted(w: &World, id: &str) -> bool {
    let rootfs = w.sb.root().join("containers").join(id).join("rootfs");
    w.sb.mounts().contains(&rootfs)
}

#[tokio::test]
async fn runc_runs_the_container_lifecycle_logs_exits_and_exec() {
    let w = world().await;
    let pod = run_pod(&w, "runc-app", "runc", NamespaceMode::Pod).await;

    // Logs, exit code and the pod's namespaces.
    let script = "echo hello $WHO; echo oops >&2; hostname; head -n 1 /etc/resolv.conf; exit 7";
    let id = w
        .create(&pod, w.config("once", &["sh", "-c", script]))
        .await
        .unwrap();
    let state = runc_state(&w, &id).expect("runc knows the created container");
    assert_eq!(state["status"], "created", "{state}");
    assert!(rootfs_mounted(&w, &id), "the rootfs is mounted for runc");
    let created = w.d.container_status(&id).await;
    assert_eq!(created.state, i32::from(ContainerState::ContainerCreated));
    w.start_container(&id).await.unwrap();
    let s = w.d.wait_exited(&id).await;
    assert_eq!(s.exit_code, 7, "{s:?}");
    assert_eq!(s.reason, "Error");
    assert!(s.started_at > 0 && s.finished_at >= s.started_at, "{s:?}");
    let lines = log(&s.log_path);
    assert_eq!(
        lines[0],
        ("stdout".into(), "hello crust".into()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "oops".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stdout".into(), "runc-app".into())),
        "the pod's UTS namespace: {lines:?}"
    );
    assert!(
        lines.iter().any(|(_, t)| t.starts_with("nameserver")),
        "the pod's resolv.conf: {lines:?}"
    );

    // A long runner: exec into it, stop it, remove it.
    let id2 = w
        .create(&pod, w.config("sleeper", &["sleep", "1000"]))
        .await
        .unwrap();
    w.start_container(&id2).await.unwrap();
    assert_eq!(runc_state(&w, &id2).unwrap()["status"], "running");
    let r = w
        .exec_sync(
            &id2,
            &["sh", "-c", "echo out $WHO; hostname; ls /; exit 3"],
            10,
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, 3, "{r:?}");
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(out.starts_with("out crust\nrunc-app\n"), "{out}");
    assert!(
        out.contains("bin") && !out.contains("upper"),
        "the container's root: {out}"
    );
    w.d.runtime()
        .await
        .unwrap()
        .stop_container(StopContainerRequest {
            container_id: id2.clone(),
            timeout: 1,
        })
        .await
        .unwrap();
    let s = w.d.wait_exited(&id2).await;
    // The pod shares its PID namespace (CRI's default, POD), so sleep is not PID 1
    // there and SIGTERM ends it.
    assert_eq!(s.exit_code, 143, "{s:?}");

    for id in [&id, &id2] {
        w.d.runtime()
            .await
            .unwrap()
            .remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap();
        assert!(runc_state(&w, id).is_none(), "runc deleted {id}");
        assert!(!rootfs_mounted(&w, id), "rootfs of {id} unmounted");
    }

    // A container left created when the pod goes: runc state and mount go too.
    let id3 = w
        .create(&pod, w.config("left", &["sleep", "1000"]))
        .await
        .unwrap();
    let mut rt = w.d.runtime().await.unwrap();
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    assert!(runc_state(&w, &id3).is_none(), "runc state of {id3} gone");
    assert!(
        w.sb.mounts().is_empty(),
        "no mounts left: {:?}",
        w.sb.mounts()
    );
}

fn secure(mut c: ContainerConfig, uid: Option<i64>) -> ContainerConfig {
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            run_as_user: uid.map(|value| Int64Value { value }),
            run_as_group: uid.map(|value| Int64Value { value }),
            supplemental_groups: vec![4242],
            readonly_rootfs: true,
            // Its own PID namespace, as its pod's (the lifecycle test covers a shared one).
            namespace_options: Some(NamespaceOption {
                pid: NamespaceMode::Container.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

/// The same container under both launchers reports the same identity, capabilities,
/// no_new_privs, seccomp mode and read-only rootfs.
#[tokio::test]
async fn runc_and_the_builtin_launcher_agree_on_security_settings() {
    let w = world().await;
    let builtin = run_pod(&w, "builtin", "", NamespaceMode::Container).await;
    let runc = run_pod(&w, "runc-sec", "runc", NamespaceMode::Container).await;
    // Everything on stdout: the log interleaves two pipes in whatever order they are read.
    let script = "id -u; id -g; id -G; grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status; \
                  touch /probe 2>&1; touch /tmp/probe 2>&1 && echo tmp-writable; echo pid $$";
    for (name, uid) in [("root", None), ("user", Some(1000))] {
        let mut outputs = Vec::new();
        for pod in [&builtin, &runc] {
            let id = w
                .create(pod, secure(w.config(name, &["sh", "-c", script]), uid))
                .await
                .unwrap();
            w.start_container(&id).await.unwrap();
            let s = w.d.wait_exited(&id).await;
            let lines: Vec<String> = log(&s.log_path).into_iter().map(|(_, t)| t).collect();
            outputs.push(lines);
        }
        let (ours, theirs) = (&outputs[0], &outputs[1]);
        assert_eq!(ours, theirs, "{name}: built-in (left) vs runc (right)");
        let want_uid = uid.unwrap_or(0).to_string();
        assert_eq!(theirs[0], want_uid, "{name}: {theirs:?}");
        assert_eq!(theirs[1], want_uid, "{name}: {theirs:?}");
        assert!(theirs[2].contains("4242"), "{name} groups: {theirs:?}");
        assert!(
            theirs.contains(&"pid 1".to_string()),
            "{name}: own PID namespace: {theirs:?}"
        );
        assert!(
            theirs.iter().any(|l| l.contains("Read-only file system")),
            "{name}: read-only rootfs: {theirs:?}"
        );
        let cap = |k: &str| {
            theirs
                .iter()
                .find_map(|l| l.strip_prefix(&format!("{k}:")))
                .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
                .unwrap_or_else(|| panic!("{k} in {theirs:?}"))
        };
        // Not the host's full set: containerd's default 14 capabilities.
        assert_eq!(cap("CapBnd").count_ones(), 14, "{name}: {theirs:?}");
        let eff = cap("CapEff");
        if uid.is_some() {
            assert_eq!(eff, 0, "{name}: a non-root user has no effective caps");
        } else {
            assert_eq!(eff, cap("CapBnd"), "{name}: root has the bounding set");
        }
    }
}

/// crun (if installed) is tried, not assumed: on this host's hybrid cgroups it
/// refuses, and the refusal must reach the CRI caller as crun's own words.
#[tokio::test]
async fn crun_is_detected_not_assumed() {
    let crun = ["/usr/bin/crun", "/usr/sbin/crun"]
        .into_iter()
        .find(|p| Path::new(p).is_file());
    let Some(crun) = crun else {
        eprintln!("crun is not installed: nothing to detect (runc is what these tests use)");
        return;
    };
    let w2 = world_with("crun", crun).await;
    let pod = run_pod(&w2, "crun-app", "crun", NamespaceMode::Pod).await;
    match w2
        .create(&pod, w2.config("c", &["sh", "-c", "echo hi"]))
        .await
    {
        Ok(id) => {
            w2.start_container(&id).await.unwrap();
            let s = w2.d.wait_exited(&id).await;
            assert_eq!(s.exit_code, 0, "crun ran the container: {s:?}");
            eprintln!("crun works on this host");
        }
        Err(e) => {
            assert!(
                e.message().contains("crun") && e.message().len() > 20,
                "the refusal names crun and says why: {}",
                e.message()
            );
            eprintln!("crun refuses this host, as detected: {}", e.message());
        }
    }
}

/// A terminal through runc's console socket, and runc's own refusal reaching the
/// caller with nothing left behind.
#[tokio::test]
async fn runc_gives_a_tty_and_its_errors_reach_the_caller() {
    let w = world().await;
    let pod = run_pod(&w, "runc-tty", "runc", NamespaceMode::Pod).await;
    let mut c = w.config("term", &["sh", "-c", "tty; echo hi"]);
    c.tty = true;
    let id = w.create(&pod, c).await.unwrap();
    w.start_container(&id).await.unwrap();
    let s = w.d.wait_exited(&id).await;
    assert_eq!(s.exit_code, 0, "{s:?}");
    let text = fs::read_to_string(&s.log_path).unwrap();
    assert!(
        text.contains(" stdout F /dev/pts/0") && text.contains(" stdout F hi"),
        "a terminal, one stream: {text}"
    );

    let err = w
        .create(&pod, w.config("missing", &["no-such-binary"]))
        .await
        .unwrap_err();
    assert!(
        err.message().contains("no-such-binary") && err.message().contains(&runtime_name()),
        "runc's words: {}",
        err.message()
    );
    let runc_dir = w.sb.state().join("runc");
    let left: Vec<_> = fs::read_dir(&runc_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy() != id)
        .collect();
    assert!(left.is_empty(), "runc state of the failed create: {left:?}");
    let mounts: Vec<_> =
        w.sb.mounts()
            .into_iter()
            .filter(|m| m.ends_with("rootfs") && !m.to_string_lossy().contains(&id))
            .collect();
    assert!(mounts.is_empty(), "rootfs of the failed create: {mounts:?}");
}

/// Status advertises recursive read-only mounts per handler: the built-in launcher
/// has them (this kernel has mount_setattr), runc exactly when its own features
/// document lists `rro` (bookworm's 1.1.5 does not; runc 1.2 does).
#[tokio::test]
async fn status_advertises_recursive_read_only_mounts_per_handler() {
    require_runc();
    let w = world().await;
    let features = std::process::Command::new(runc())
        .arg("features")
        .output()
        .expect("runc features");
    // crun before 1.9 has no `features` subcommand (it fails, printing nothing): no
    // document, so no `rro` as far as crust can know.
    let runc_rro = features.status.success() && {
        let doc: serde_json::Value = serde_json::from_slice(&features.stdout).expect("JSON");
        doc["mountOptions"]
            .as_array()
            .is_some_and(|o| o.iter().any(|x| x == "rro"))
    };
    let handlers =
        w.d.runtime()
            .await
            .unwrap()
            .status(crust_proto::runtime::v1::StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner()
            .runtime_handlers;
    let rro: HashMap<String, bool> = handlers
        .into_iter()
        .map(|h| {
            let f = h.features.expect("features are set");
            // Pod user namespaces: every handler (user_namespaces.rs).
            assert!(f.user_namespaces, "{}: user namespaces", h.name);
            (h.name, f.recursive_read_only_mounts)
        })
        .collect();
    assert_eq!(
        rro,
        HashMap::from([
            (String::new(), true),
            ("crust".to_string(), true),
            ("runc".to_string(), runc_rro),
        ]),
        "the default handler (\"\") is the built-in one"
    );
}

/// The runtime's file name (`runc`, `crun`), as its errors name it.
fn runtime_name() -> String {
    Path::new(&runc())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// This file's other tests, again with crun on a pure cgroup v2 node (crun refuses
/// this host's hybrid cgroups; there `crun_is_detected_not_assumed` sees it work).
#[test]
fn the_same_with_crun_on_a_guest_node() {
    assert!(!in_guest_run(), "run with --skip with_crun in the guest");
    run_suite_in_guest("oci-runtime-crun", "/usr/bin/crun", "with_crun", 5);
}
