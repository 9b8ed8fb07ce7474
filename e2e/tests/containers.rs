//! Containers through the real crustd, monitor and built-in launcher: an image pulled
//! from a real registry, run in a real pod; lifecycle, logs, exits, OOM, restarts.

use std::{
    collections::HashMap,
    fs,
    ops::{Deref, DerefMut},
    path::{Path, PathBuf},
    time::Duration,
};

use crust_e2e::{
    image_builder::{Compression, Image, LayerBuilder, host_arch},
    registry::Registry,
    world::{PodOptions, World, busybox_image},
};
use crust_proto::runtime::v1::{
    ContainerConfig, ContainerFilter, ContainerState, ContainerStateValue, ContainerStatusRequest,
    ImageSpec, LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    ListContainersRequest, PullImageRequest, RemoveContainerRequest, RemovePodSandboxRequest,
    SecurityProfile, Signal, StopContainerRequest, StopPodSandboxRequest,
    security_profile::ProfileType,
};
use serde_json::json;
use tonic::Code;

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "id", "sleep", "hostname", "head", "tr", "ls", "grep",
];

/// The shared world with the one pod, `app`, that the tests here run their containers
/// in; the world's fields and helpers are reached through it.
struct PodWorld {
    world: World,
    pod: String,
    /// The pod's log directory, where its containers' logs are.
    pod_logs: PathBuf,
}

impl Deref for PodWorld {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

impl DerefMut for PodWorld {
    fn deref_mut(&mut self) -> &mut World {
        &mut self.world
    }
}

async fn world() -> PodWorld {
    let world = World::start(&busybox_image(APPLETS, |_| {}), "test/busybox", "").await;
    let pod = world
        .run_pod(&PodOptions::named("app").namespace("ctr"))
        .await;
    let pod_logs = world.logs.join("app");
    PodWorld {
        world,
        pod,
        pod_logs,
    }
}

/// (stream, text) of every record, checking the CRI format on the way.
fn log(path: &str) -> Vec<(String, String)> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .map(|l| {
            let mut p = l.splitn(4, ' ');
            let ts = p.next().unwrap();
            assert!(humantime_ok(ts), "timestamp {ts:?} in {l:?}");
            let stream = p.next().unwrap().to_string();
            assert_eq!(p.next(), Some("F"), "{l:?}");
            (stream, p.next().unwrap_or("").to_string())
        })
        .collect()
}

fn humantime_ok(ts: &str) -> bool {
    ts.ends_with('Z') && ts.contains('T') && ts.len() >= 20
}

#[tokio::test]
async fn a_container_runs_logs_and_exits_with_its_code() {
    let w = world().await;
    let script =
        "echo hello $WHO; echo oops >&2; hostname; cat /etc/resolv.conf | head -n 1; id -u; exit 7";
    let id = w
        .create(&w.pod, w.config("once", &["sh", "-c", script]))
        .await
        .unwrap();
    let created = w.d.container_status(&id).await;
    assert_eq!(created.state, i32::from(ContainerState::ContainerCreated));
    assert_eq!(created.started_at, 0);
    w.start_container(&id).await.unwrap();
    let s = w.d.wait_exited(&id).await;
    assert_eq!(s.exit_code, 7);
    assert_eq!(s.reason, "Error");
    assert!(s.started_at > 0 && s.finished_at >= s.started_at, "{s:?}");
    assert_eq!(
        s.log_path,
        w.pod_logs.join("once.log").display().to_string()
    );
    let lines = log(&s.log_path);
    assert_eq!(lines[0], ("stdout".to_string(), "hello crust".to_string()));
    assert!(
        lines.contains(&("stderr".to_string(), "oops".to_string())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stdout".to_string(), "app".to_string())),
        "pod hostname: {lines:?}"
    );
    assert!(
        lines.iter().any(|(_, t)| t.starts_with("nameserver")),
        "pod resolv.conf: {lines:?}"
    );
    assert!(
        lines.contains(&("stdout".to_string(), "0".to_string())),
        "uid 0: {lines:?}"
    );

    let ok = w
        .create(&w.pod, w.config("fine", &["true-not-in-image-so-use-sh"]))
        .await
        .unwrap();
    let err = w.start_container(&ok).await.unwrap_err();
    assert!(
        err.message().contains("true-not-in-image-so-use-sh"),
        "{}",
        err.message()
    );
    let s = w.d.container_status(&ok).await;
    assert_eq!(
        (s.state, s.reason.as_str()),
        (i32::from(ContainerState::ContainerExited), "StartError")
    );

    let done = w
        .create(&w.pod, w.config("zero", &["sh", "-c", "exit 0"]))
        .await
        .unwrap();
    w.start_container(&done).await.unwrap();
    assert_eq!(w.d.wait_exited(&done).await.reason, "Completed");
}

#[tokio::test]
async fn stop_list_remove_and_the_cri_rules() {
    let w = world().await;
    let id = w
        .create(&w.pod, w.config("sleeper", &["sleep", "1000"]))
        .await
        .unwrap();
    w.start_container(&id).await.unwrap();
    let mut rt = w.d.runtime().await.unwrap();

    let running = Some(ContainerFilter {
        state: Some(ContainerStateValue {
            state: ContainerState::ContainerRunning.into(),
        }),
        ..Default::default()
    });
    let listed = rt
        .list_containers(ListContainersRequest { filter: running })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(
        listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec![id.as_str()]
    );
    assert_eq!(listed[0].pod_sandbox_id, w.pod);
    let by_label = Some(ContainerFilter {
        label_selector: HashMap::from([("name".into(), "nope".into())]),
        ..Default::default()
    });
    assert!(
        rt.list_containers(ListContainersRequest { filter: by_label })
            .await
            .unwrap()
            .into_inner()
            .containers
            .is_empty()
    );

    // Same name in the same pod.
    assert_eq!(
        w.create(&w.pod, w.config("sleeper", &["sleep", "1"]))
            .await
            .unwrap_err()
            .code(),
        Code::AlreadyExists
    );
    // A missing image.
    let mut missing = w.config("missing", &["sh"]);
    missing.image = Some(ImageSpec {
        image: "example.invalid/nothing:1".into(),
        ..Default::default()
    });
    assert_eq!(
        w.create(&w.pod, missing).await.unwrap_err().code(),
        Code::NotFound
    );
    // The pod shares a PID namespace, so sleep is not PID 1 and SIGTERM ends it.
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    let s = w.d.container_status(&id).await;
    assert_eq!(
        (s.state, s.exit_code),
        (i32::from(ContainerState::ContainerExited), 143)
    );
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 1,
    })
    .await
    .expect("idempotent");
    rt.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    rt.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("idempotent");
    let gone = rt
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // A running container is killed by RemoveContainer; a stopped pod refuses new ones.
    let busy = w
        .create(&w.pod, w.config("busy", &["sleep", "1000"]))
        .await
        .unwrap();
    w.start_container(&busy).await.unwrap();
    rt.remove_container(RemoveContainerRequest {
        container_id: busy.clone(),
    })
    .await
    .unwrap();
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: w.pod.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        w.create(&w.pod, w.config("late", &["sh"]))
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: w.pod.clone(),
    })
    .await
    .unwrap();
    let left: Vec<_> = fs::read_dir(w.sb.root().join("containers"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(
        left,
        Vec::<std::path::PathBuf>::new(),
        "container dirs left"
    );
}

/// Puts `config` under a memory limit of `bytes`.
fn with_memory_limit(config: &mut ContainerConfig, bytes: i64) {
    config.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: bytes,
            ..Default::default()
        }),
        ..Default::default()
    });
}

#[tokio::test]
async fn a_container_over_its_memory_limit_is_oom_killed() {
    let w = world().await;
    let mut c = w.config(
        "hog",
        &[
            "sh",
            "-c",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
        ],
    );
    with_memory_limit(&mut c, 32 << 20);
    let id = w.create(&w.pod, c).await.unwrap();
    w.start_container(&id).await.unwrap();
    let s = w.d.wait_exited(&id).await;
    assert_eq!(
        (s.exit_code, s.reason.as_str()),
        (137, "OOMKilled"),
        "{s:?}"
    );
}

/// An earlier OOM kill of some other process in the container's cgroup does not make a
/// later StopContainer's SIGKILL look like the OOM killer's work.
#[tokio::test]
async fn a_stop_after_a_child_was_oom_killed_is_not_oom_killed() {
    let w = world().await;
    let mut c = w.config(
        "survivor",
        &[
            "sh",
            "-c",
            "(x=$(head -c 200000000 /dev/zero | tr '\\0' a)); echo child-gone; exec sleep 3600",
        ],
    );
    with_memory_limit(&mut c, 32 << 20);
    let id = w.create(&w.pod, c).await.unwrap();
    w.start_container(&id).await.unwrap();
    let log_path = w.d.container_status(&id).await.log_path;
    for _ in 0..1000 {
        if fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("child-gone")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        fs::read_to_string(&log_path)
            .unwrap()
            .contains("child-gone"),
        "the subshell was OOM-killed and the container went on"
    );
    let running = w.d.container_status(&id).await;
    assert_eq!(running.state, ContainerState::ContainerRunning as i32);
    w.d.runtime()
        .await
        .unwrap()
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    let s = w.d.wait_exited(&id).await;
    assert_eq!(
        (s.exit_code, s.reason.as_str()),
        (137, "Error"),
        "killed by StopContainer, not by the OOM killer: {s:?}"
    );
}

#[tokio::test]
async fn containers_keep_running_across_a_crustd_restart_and_exits_while_down_are_reported() {
    let mut w = world().await;
    let long = w
        .create(&w.pod, w.config("long", &["sleep", "1000"]))
        .await
        .unwrap();
    w.start_container(&long).await.unwrap();
    let short = w
        .create(&w.pod, w.config("short", &["sh", "-c", "sleep 1; exit 3"]))
        .await
        .unwrap();
    w.start_container(&short).await.unwrap();

    assert!(w.d.terminate().await.unwrap().success());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    w.d = w.sb.start().unwrap();
    w.d.wait_ready().await.unwrap();
    assert_eq!(
        w.d.container_status(&long).await.state,
        i32::from(ContainerState::ContainerRunning),
        "still running"
    );
    let s = w.d.container_status(&short).await;
    assert_eq!(
        (s.state, s.exit_code),
        (i32::from(ContainerState::ContainerExited), 3),
        "exit while crustd was down"
    );

    let mut rt = w.d.runtime().await.unwrap();
    if let Err(e) = rt
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: w.pod.clone(),
        })
        .await
    {
        let monitor_log = fs::read_dir(w.sb.state().join("pods"))
            .unwrap()
            .flatten()
            .map(|e| fs::read_to_string(e.path().join("monitor.log")).unwrap_or_default())
            .collect::<String>();
        panic!("{e:?}\ncrustd:\n{}\nmonitor:\n{monitor_log}", w.d.logs());
    }
    assert_eq!(
        w.d.container_status(&long).await.state,
        i32::from(ContainerState::ContainerExited),
        "stopping the pod stops its containers"
    );
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: w.pod.clone(),
    })
    .await
    .unwrap();
    let all = rt
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(
        all.is_empty(),
        "removing the pod removes its containers: {all:?}"
    );
}

#[tokio::test]
async fn crustctl_container_verbs() {
    let w = world().await;
    let ep = w.sb.endpoint();
    let ctl = |args: &[&str]| {
        let out = crust_e2e::crustctl(&ep, args).unwrap();
        assert!(
            out.status.success(),
            "crustctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let dir = w.sb.path();
    fs::write(
        dir.join("pod.json"),
        format!(r#"{{"metadata":{{"name":"ctl","namespace":"default","uid":"ctl-uid"}},"log_directory":"{}","linux":{{}}}}"#, w.logs.display()),
    )
    .unwrap();
    fs::write(
        dir.join("ctr.yaml"),
        format!("metadata:\n  name: talker\nimage:\n  image: {}\ncommand: [sh, -c, 'echo one; echo two; sleep 1000']\nlog_path: talker.log\n", w.image),
    )
    .unwrap();
    let id = ctl(&[
        "run",
        dir.join("ctr.yaml").to_str().unwrap(),
        dir.join("pod.json").to_str().unwrap(),
    ])
    .trim()
    .to_string();
    assert_eq!(id.len(), 64);
    assert!(ctl(&["ps", "-q"]).contains(&id));
    let table = ctl(&["ps"]);
    assert!(
        table.contains("talker") && table.contains("Running"),
        "{table}"
    );
    for _ in 0..200 {
        if ctl(&["logs", &id]) == "one\ntwo\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ctl(&["logs", &id]), "one\ntwo\n");
    assert_eq!(ctl(&["logs", "--tail", "1", &id]), "two\n");
    let inspect: serde_json::Value = serde_json::from_str(&ctl(&["inspect", &id[..10]])).unwrap();
    assert_eq!(inspect["status"]["state"], "CONTAINER_RUNNING");
    assert!(inspect["info"]["pid"].as_i64().unwrap() > 0, "{inspect}");
    ctl(&["stop", "-t", "0", &id]);
    assert!(ctl(&["ps", "-q"]).is_empty(), "not running any more");
    assert!(ctl(&["ps", "-a", "-q"]).contains(&id));
    ctl(&["rm", &id]);
    assert!(!ctl(&["ps", "-a", "-q"]).contains(&id));
}

/// `/proc/<pid>/stat` of every `sleep` (zombies too) in `pid`'s PID namespace.
fn sleeps_in_pid_ns_of(pid: i64) -> Vec<String> {
    let ns = fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| fs::read_link(format!("/proc/{p}/ns/pid")).ok().as_ref() == Some(&ns))
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter(|stat| stat.contains("(sleep)"))
        .collect()
}

#[tokio::test]
async fn exec_sync_runs_inside_the_container_and_honours_its_timeout() {
    let w = world().await;
    let id = w
        .create(&w.pod, w.config("target", &["sleep", "1000"]))
        .await
        .unwrap();
    w.start_container(&id).await.unwrap();

    let r = w
        .exec_sync(
            &id,
            &["sh", "-c", "echo out $WHO; echo err >&2; hostname; exit 5"],
            10,
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, 5);
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "out crust\napp\n",
        "the container's env and the pod's hostname"
    );
    assert_eq!(String::from_utf8_lossy(&r.stderr), "err\n");
    let r = w.exec_sync(&id, &["ls", "/"], 10).await.unwrap();
    let root = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(
        root.contains("bin") && !root.contains("work"),
        "the container's root: {root}"
    );
    let r = w.exec_sync(&id, &["no-such-command"], 10).await.unwrap();
    assert_eq!(r.exit_code, 127);
    assert!(String::from_utf8_lossy(&r.stderr).contains("no-such-command"));

    // A background child that keeps the pipes open must not hold the call up.
    let r = w
        .exec_sync(&id, &["sh", "-c", "sleep 100 & echo done"], 30)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "done\n");
    // A command past its timeout is killed, with everything it forked.
    let err = w
        .exec_sync(&id, &["sh", "-c", "sleep 100 & sleep 100"], 1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    let inspect =
        w.d.runtime()
            .await
            .unwrap()
            .container_status(ContainerStatusRequest {
                container_id: id.clone(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
    let info: serde_json::Value = serde_json::from_str(&inspect.info["info"]).unwrap();
    let cgroup = info["cgroup"].as_str().unwrap();
    let procs = fs::read_to_string(format!("/sys/fs/cgroup/pids{cgroup}/cgroup.procs")).unwrap();
    assert_eq!(
        procs.lines().count(),
        1,
        "only the container's own process is left: {procs}"
    );
    // The exec cgroups left are empty spares for the next exec: at most two, reused
    // (five more execs make no more of them), and none holds a process.
    let exec_cgroups = || -> Vec<std::path::PathBuf> {
        fs::read_dir(format!("/sys/fs/cgroup/pids{cgroup}"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect()
    };
    let spares = exec_cgroups();
    assert!(spares.len() <= 2, "exec cgroups kept: {spares:?}");
    for _ in 0..5 {
        let r = w.exec_sync(&id, &["sh", "-c", "exit 0"], 10).await.unwrap();
        assert_eq!(r.exit_code, 0);
    }
    let after = exec_cgroups();
    assert!(after.len() <= 2, "exec cgroups reused: {after:?}");
    for dir in &after {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert_eq!(procs, "", "spare {} holds processes", dir.display());
    }
    // Killed and reaped before ExecSync returned: no zombie `sleep` (it used to be
    // orphaned to the host's PID 1 for seconds, so `pgrep sleep` still found it).
    let main = info["pid"].as_i64().unwrap();
    let sleeps = sleeps_in_pid_ns_of(main);
    assert_eq!(
        sleeps.len(),
        1,
        "only the container's own sleep: {sleeps:?}"
    );

    w.d.runtime()
        .await
        .unwrap()
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    assert_eq!(
        w.exec_sync(&id, &["true"], 1).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    // Removing the container takes its spare exec cgroups with its own.
    w.d.runtime()
        .await
        .unwrap()
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    let dir = format!("/sys/fs/cgroup/pids{cgroup}");
    assert!(!std::path::Path::new(&dir).exists(), "{dir} is left");
}

#[tokio::test]
async fn reopen_container_log_follows_rotation() {
    let w = world().await;
    let id = w
        .create(
            &w.pod,
            w.config(
                "chatty",
                &[
                    "sh",
                    "-c",
                    "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.05; done",
                ],
            ),
        )
        .await
        .unwrap();
    w.start_container(&id).await.unwrap();
    let path = w.pod_logs.join("chatty.log");
    for _ in 0..200 {
        if fs::read_to_string(&path)
            .map(|t| t.lines().count() >= 2)
            .unwrap_or(false)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fs::rename(&path, w.pod_logs.join("chatty.log.1")).unwrap();
    let req = crust_proto::runtime::v1::ReopenContainerLogRequest {
        container_id: id.clone(),
    };
    w.d.runtime()
        .await
        .unwrap()
        .reopen_container_log(req)
        .await
        .unwrap();
    for _ in 0..200 {
        if fs::read_to_string(&path)
            .map(|t| !t.is_empty())
            .unwrap_or(false)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fresh = log(path.to_str().unwrap());
    assert!(
        !fresh.is_empty() && fresh[0].1.starts_with("line"),
        "{fresh:?}"
    );
    let rotated = log(w.pod_logs.join("chatty.log.1").to_str().unwrap());
    assert!(rotated[0].1 == "line0", "{rotated:?}");
}

#[tokio::test]
async fn update_container_resources_changes_limits_live() {
    let w = world().await;
    let mut c = w.config("tunable", &["sleep", "1000"]);
    c.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_shares: 512,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = w.create(&w.pod, c).await.unwrap();
    w.start_container(&id).await.unwrap();
    let mut rt = w.d.runtime().await.unwrap();
    let info = rt
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let cgroup = serde_json::from_str::<serde_json::Value>(&info.info["info"]).unwrap()["cgroup"]
        .as_str()
        .unwrap()
        .to_string();
    let read = |file: &str| {
        fs::read_to_string(format!("/sys/fs/cgroup/{file}"))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(
        read(&format!("memory{cgroup}/memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    assert_eq!(read(&format!("cpu{cgroup}/cpu.shares")), "512");

    let new = LinuxContainerResources {
        memory_limit_in_bytes: 128 << 20,
        cpu_shares: 1024,
        ..Default::default()
    };
    rt.update_container_resources(crust_proto::runtime::v1::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(new),
        windows: None,
        annotations: HashMap::new(),
    })
    .await
    .unwrap();
    assert_eq!(
        read(&format!("memory{cgroup}/memory.limit_in_bytes")),
        (128u64 << 20).to_string()
    );
    assert_eq!(read(&format!("cpu{cgroup}/cpu.shares")), "1024");
    let s = w.d.container_status(&id).await;
    assert_eq!(
        s.resources.unwrap().linux.unwrap().memory_limit_in_bytes,
        128 << 20,
        "status shows the new limits"
    );
}

fn with_seccomp(mut c: ContainerConfig, profile: ProfileType, localhost: &str) -> ContainerConfig {
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile {
                profile_type: profile.into(),
                localhost_ref: localhost.into(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

#[tokio::test]
async fn seccomp_profiles_confine_the_container_and_its_execs() {
    let w = world().await;
    // RuntimeDefault: filtered (mode 2), and ordinary work still runs.
    let c = with_seccomp(
        w.config(
            "confined",
            &[
                "sh",
                "-c",
                "grep -E '^Seccomp:' /proc/self/status; echo ok; sleep 1000",
            ],
        ),
        ProfileType::RuntimeDefault,
        "",
    );
    let id = w.create(&w.pod, c).await.unwrap();
    w.start_container(&id).await.unwrap();
    let path = w.pod_logs.join("confined.log");
    for _ in 0..200 {
        if fs::read_to_string(&path)
            .map(|t| t.contains(" ok"))
            .unwrap_or(false)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lines: Vec<String> = log(path.to_str().unwrap())
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(lines, vec!["Seccomp:\t2".to_string(), "ok".to_string()]);
    let r = w
        .exec_sync(&id, &["grep", "-E", "^Seccomp:", "/proc/self/status"], 10)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "Seccomp:\t2\n",
        "execs get the container's filter too"
    );

    // Localhost: a profile of our own that denies mkdir with EPERM and allows the rest.
    let profile = w.sb.path().join("no-mkdir.json");
    fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )
    .unwrap();
    let c = with_seccomp(
        w.config(
            "nomkdir",
            &[
                "sh",
                "-c",
                "mkdir /tmp/x; echo rc=$?; touch /tmp/y && echo touched",
            ],
        ),
        ProfileType::Localhost,
        profile.to_str().unwrap(),
    );
    let id = w.create(&w.pod, c).await.unwrap();
    w.start_container(&id).await.unwrap();
    w.d.wait_exited(&id).await;
    let lines: Vec<String> = log(w.pod_logs.join("nomkdir.log").to_str().unwrap())
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("Operation not permitted")),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"rc=1".to_string()) && lines.contains(&"touched".to_string()),
        "{lines:?}"
    );

    // A Localhost profile that is not there is an error naming the field.
    let c = with_seccomp(
        w.config("missing-profile", &["sh"]),
        ProfileType::Localhost,
        "/nonexistent/profile.json",
    );
    let err = w.create(&w.pod, c).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("localhost_ref"), "{}", err.message());
}

#[tokio::test]
async fn stop_signal_reaches_the_container() {
    let w = world().await;
    // The monitor blocks SIGTERM for itself; the container must not inherit that.
    let id = w
        .create(
            &w.pod,
            w.config(
                "trapper",
                &[
                    "sh",
                    "-c",
                    "trap 'exit 42' TERM; while true; do sleep 0.1; done",
                ],
            ),
        )
        .await
        .unwrap();
    w.start_container(&id).await.unwrap();
    assert_eq!(
        w.d.container_status(&id).await.stop_signal,
        Signal::Sigterm as i32,
        "no signal asked, none in the image: SIGTERM, and ContainerStatus says so"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.stop_container(&id, 30).await.unwrap();
    let s = w.d.container_status(&id).await;
    assert_eq!(
        s.exit_code, 42,
        "SIGTERM delivered and handled, not SIGKILL after the grace: {s:?}"
    );
}

/// ContainerStatus.user is the identity the process really has (checked against its
/// /proc status), stop_signal the one StopContainer will send (issue 15).
#[tokio::test]
async fn container_status_reports_the_user_and_stop_signal_used() {
    use crust_proto::runtime::v1::Int64Value;
    let w = world().await;
    let mut c = w.config(
        "who",
        &[
            "sh",
            "-c",
            "trap 'exit 7' INT; while true; do sleep 0.1; done",
        ],
    );
    c.stop_signal = Signal::Sigint as i32;
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1234 }),
            run_as_group: Some(Int64Value { value: 2345 }),
            supplemental_groups: vec![3456],
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = w.create(&w.pod, c).await.unwrap();
    w.start_container(&id).await.unwrap();
    let s = w.d.container_status(&id).await;
    assert_eq!(s.stop_signal, Signal::Sigint as i32, "{s:?}");
    let user = s
        .user
        .and_then(|u| u.linux)
        .expect("ContainerStatus.user.linux");
    assert_eq!((user.uid, user.gid), (1234, 2345));
    assert!(user.supplemental_groups.contains(&3456), "{user:?}");
    let pid = w.verbose_info(&id).await["pid"]
        .as_i64()
        .expect("a running pid");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .map(|x| x.parse::<i64>().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(field("Uid:")[0], user.uid);
    assert_eq!(field("Gid:")[0], user.gid);
    let mut groups = field("Groups:");
    groups.sort();
    let mut want = user.supplemental_groups.clone();
    want.sort();
    assert_eq!(groups, want, "the process's groups are the ones reported");
    w.stop_container(&id, 30).await.unwrap();
    assert_eq!(
        w.d.container_status(&id).await.exit_code,
        7,
        "SIGINT was sent"
    );
}

#[tokio::test]
async fn image_symlinks_cannot_point_mounts_at_the_host() {
    let registry = Registry::start().await.unwrap();
    let escape = format!("/var/tmp/crust-escape-{}", std::process::id());
    let _ = fs::remove_file(&escape);
    let mut layer = LayerBuilder::new();
    layer.busybox(APPLETS).unwrap();
    for dir in ["etc", "proc", "sys", "dev", "tmp"] {
        layer.dir(dir, 0o755);
    }
    layer
        .symlink("etc/hosts", &escape)
        .symlink("etc/resolv.conf", "../../../../../etc/crust-escape-resolv");
    let image = Image::build(
        vec![layer.finish(Compression::Gzip)],
        host_arch(),
        json!({"Cmd": ["sh"], "Env": ["PATH=/bin"]}),
    );
    registry
        .push_image("test/hostile", &["v1"], &image)
        .await
        .unwrap();
    let mut w = world().await;
    w.image = format!("{}/test/hostile:v1", registry.host());
    w.d.image()
        .await
        .unwrap()
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: w.image.clone(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        })
        .await
        .unwrap();
    let id = w
        .create(
            &w.pod,
            w.config("hostile", &["sh", "-c", "cat /etc/hosts | head -n 1"]),
        )
        .await
        .unwrap();
    w.start_container(&id).await.unwrap();
    let s = w.d.wait_exited(&id).await;
    assert_eq!(s.exit_code, 0, "{s:?}");
    assert!(
        !Path::new(&escape).exists(),
        "a file was created on the host through the image's symlink"
    );
    assert!(
        !Path::new("/etc/crust-escape-resolv").exists(),
        "relative escape"
    );
    let lines = log(&s.log_path);
    assert!(
        lines[0].1.starts_with("127.0.0.1"),
        "the pod's hosts file is what the container sees: {lines:?}"
    );
}

#[tokio::test]
async fn mounts_honour_recursive_read_only_and_propagation() {
    use crust_proto::runtime::v1::{Mount, MountPropagation};
    use nix::mount::{MsFlags, mount};
    let w = world().await;
    // A host directory with a submount, shared so that later host mounts propagate.
    let data = w.sb.path().join("data");
    fs::create_dir_all(data.join("sub")).unwrap();
    mount(
        Some(&data),
        &data,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    mount(
        None::<&str>,
        &data,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .unwrap();
    mount(
        Some("tmpfs"),
        &data.join("sub"),
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    fs::create_dir_all(data.join("late")).unwrap();
    let host_path = data.display().to_string();
    let m = |ro: bool, rro: bool, prop: MountPropagation, at: &str| Mount {
        container_path: at.into(),
        host_path: host_path.clone(),
        readonly: ro,
        recursive_read_only: rro,
        propagation: prop.into(),
        ..Default::default()
    };
    let script = "touch /rro/x 2>/dev/null || echo rro-top-ro; touch /rro/sub/x 2>/dev/null || echo rro-sub-ro; \
                  touch /ro/sub/y 2>/dev/null && echo ro-sub-rw; sleep 1000";
    let mut c = w.config("mounter", &["sh", "-c", script]);
    c.mounts = vec![
        m(true, true, MountPropagation::PropagationPrivate, "/rro"),
        m(true, false, MountPropagation::PropagationPrivate, "/ro"),
        m(
            false,
            false,
            MountPropagation::PropagationHostToContainer,
            "/slave",
        ),
    ];
    let id = w.create(&w.pod, c).await.unwrap();
    // ContainerStatus reports the mounts as asked, not all PRIVATE.
    let reported: Vec<(String, i32, bool, bool)> =
        w.d.container_status(&id)
            .await
            .mounts
            .iter()
            .map(|m| {
                (
                    m.container_path.clone(),
                    m.propagation,
                    m.readonly,
                    m.recursive_read_only,
                )
            })
            .collect();
    let p = |x: MountPropagation| x as i32;
    assert_eq!(
        reported,
        vec![
            (
                "/rro".into(),
                p(MountPropagation::PropagationPrivate),
                true,
                true
            ),
            (
                "/ro".into(),
                p(MountPropagation::PropagationPrivate),
                true,
                false
            ),
            (
                "/slave".into(),
                p(MountPropagation::PropagationHostToContainer),
                false,
                false
            ),
        ]
    );
    w.start_container(&id).await.unwrap();
    let path = w.pod_logs.join("mounter.log");
    for _ in 0..300 {
        if fs::read_to_string(&path)
            .map(|t| t.lines().count() >= 3)
            .unwrap_or(false)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lines: Vec<String> = log(path.to_str().unwrap())
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(
        lines,
        vec!["rro-top-ro", "rro-sub-ro", "ro-sub-rw"],
        "rro covers submounts; plain ro does not"
    );

    // A mount made on the host after start shows up under the rslave mount only.
    mount(
        Some("tmpfs"),
        &data.join("late"),
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    fs::write(data.join("late/hello"), "from the host").unwrap();
    let r = w
        .exec_sync(&id, &["cat", "/slave/late/hello"], 10)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "from the host",
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let r = w
        .exec_sync(&id, &["cat", "/ro/late/hello"], 10)
        .await
        .unwrap();
    assert_ne!(r.exit_code, 0, "a private mount does not receive it");
    w.d.runtime()
        .await
        .unwrap()
        .remove_container(RemoveContainerRequest { container_id: id })
        .await
        .unwrap();
}

#[tokio::test]
async fn container_and_pod_stats_come_from_the_cgroups_and_the_writable_layer() {
    use crust_proto::runtime::v1::{
        ContainerStatsRequest, ListContainerStatsRequest, ListPodSandboxStatsRequest,
        PodSandboxStatsRequest,
    };
    let w = world().await;
    let script = "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; head -c 3000000 /dev/zero > /tmp/blob; echo ready; sleep 1000";
    let id = w
        .create(&w.pod, w.config("busy", &["sh", "-c", script]))
        .await
        .unwrap();
    w.start_container(&id).await.unwrap();
    let path = w.pod_logs.join("busy.log");
    for _ in 0..1000 {
        if fs::read_to_string(&path)
            .map(|t| t.contains("ready"))
            .unwrap_or(false)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut rt = w.d.runtime().await.unwrap();
    let stats = rt
        .container_stats(ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(stats.attributes.as_ref().unwrap().id, id);
    // PSI is read from the cgroup2 hierarchy: the root on v2, `unified` on this hybrid
    // host (no controllers there, but every cgroup has the pressure files).
    let cpu_psi = stats.cpu.as_ref().unwrap().psi.as_ref().expect("cpu PSI");
    assert!(cpu_psi.some.is_some(), "cpu PSI `some`");
    assert!(stats.memory.as_ref().unwrap().psi.is_some(), "memory PSI");
    assert!(
        stats.io.as_ref().and_then(|io| io.psi.as_ref()).is_some(),
        "io PSI"
    );
    let cpu = stats.cpu.unwrap().usage_core_nano_seconds.unwrap().value;
    assert!(cpu > 0, "the loop used CPU");
    assert!(
        stats
            .memory
            .as_ref()
            .unwrap()
            .working_set_bytes
            .as_ref()
            .unwrap()
            .value
            > 0
    );
    let layer = stats.writable_layer.unwrap();
    assert!(
        layer.used_bytes.unwrap().value >= 3_000_000,
        "the 3 MB file is in the writable layer"
    );
    assert!(layer.fs_id.unwrap().mountpoint.ends_with("/upper"));
    // A second sample has a rate.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let again = rt
        .container_stats(ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert!(
        again.cpu.unwrap().usage_nano_cores.is_some(),
        "usage_nano_cores from consecutive samples"
    );

    let listed = rt
        .list_container_stats(ListContainerStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(
        listed
            .iter()
            .map(|s| s.attributes.as_ref().unwrap().id.clone())
            .collect::<Vec<_>>(),
        vec![id.clone()]
    );
    let pod = rt
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: w.pod.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let linux = pod.linux.unwrap();
    assert!(
        linux.cpu.unwrap().usage_core_nano_seconds.unwrap().value >= cpu,
        "the pod cgroup counts its containers"
    );
    assert_eq!(linux.containers.len(), 1);
    let pods = rt
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(pods.len(), 1);
}

/// `oom_score_adj` below crustd's own cannot be set without CAP_SYS_RESOURCE (missing
/// on this host): the container still runs, with crustd's score, and the verbose
/// status says what was asked and why it was not given. A higher score is given as is.
#[tokio::test]
async fn oom_score_adj_is_clamped_to_crustds_own_and_the_status_says_so() {
    let w = world().await;
    let crustd = w.d.pid().as_raw();
    let own: i64 = fs::read_to_string(format!("/proc/{crustd}/oom_score_adj"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cap_eff = fs::read_to_string(format!("/proc/{crustd}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("CapEff:")
                .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        })
        .unwrap();
    let can_lower = cap_eff & (1 << 24) != 0;
    let wanted = own.min(0) - 10;
    for (name, asked, expect) in [
        ("low", wanted, if can_lower { wanted } else { own }),
        ("high", 500, 500),
    ] {
        let mut c = w.config(name, &["sleep", "3600"]);
        c.linux = Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                oom_score_adj: asked,
                ..Default::default()
            }),
            ..Default::default()
        });
        let id = w.create(&w.pod, c).await.unwrap();
        w.start_container(&id).await.unwrap();
        let out = w
            .exec_sync(&id, &["cat", "/proc/self/oom_score_adj"], 10)
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            expect.to_string(),
            "{name}: asked {asked}, crustd's own {own}, CAP_SYS_RESOURCE {can_lower}"
        );
        let details = w.verbose_info(&id).await;
        assert!(
            details["mounts"].is_array(),
            "verbose info lists the mounts"
        );
        if expect == asked {
            assert!(details["oomScoreAdj"].is_null(), "{name}: nothing to say");
        } else {
            assert_eq!(
                details["oomScoreAdj"]["requested"], asked,
                "{name}: {details}"
            );
            assert_eq!(details["oomScoreAdj"]["applied"], own, "{name}");
            assert!(
                details["oomScoreAdj"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("CAP_SYS_RESOURCE"),
                "{name}"
            );
        }
    }
}
