//! crustctl's container verbs that `containers.rs` does not cover: `create` and `start`
//! with config files, `exec -s` (ExecSync), and `logs -f` following a container across
//! a partial line, a log rotation and its exit, with stdout and stderr apart; `stop -t`
//! past the call timeout; `exec -t`'s terminal from the container's devpts; `checkpoint`'s
//! refusals (what needs no CRIU).

use std::{process::Stdio, time::Duration};

use crust_e2e::world::{PodOptions, World, busybox_image};
use tokio::io::{AsyncBufReadExt, BufReader};

const APPLETS: &[&str] = &[
    "sh", "echo", "printf", "sleep", "touch", "head", "tr", "tty",
];

async fn world() -> World {
    let image = busybox_image(APPLETS, |_| {});
    World::start(&image, "test/ctl", "[runtime]\nmax_log_line_size = 64\n").await
}

fn ctl(w: &World, args: &[&str]) -> String {
    crust_e2e::crustctl_ok(&w.sb.endpoint(), args)
}

/// Lines of a child's pipe, as they come.
fn lines_of(
    pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

async fn next_line(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, what: &str) -> String {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} from crustctl logs -f"))
        .unwrap_or_else(|| panic!("crustctl logs -f ended before {what}"))
}

#[tokio::test]
async fn crustctl_create_start_exec_and_logs_follow() {
    let w = world().await;
    let pod = w.run_pod(&PodOptions::named("ctl")).await;
    let dir = w.sb.path();
    let pod_file = dir.join("pod.json");
    std::fs::write(
        &pod_file,
        format!(
            r#"{{"metadata":{{"name":"ctl","namespace":"e2e","uid":"uid-ctl"}},"log_directory":"{}"}}"#,
            w.logs.join("ctl").display()
        ),
    )
    .unwrap();
    // Waits for /tmp/go1 and /tmp/go2 (made with exec) so the test decides when each
    // part is written: a 100-byte piece of a line (one P record of 64 bytes; 36 wait in
    // the monitor), then its rest.
    let script = "echo one; echo err >&2; \
        until [ -e /tmp/go1 ]; do sleep 0.05; done; echo two; \
        head -c 100 /dev/zero | tr '\\0' x; \
        until [ -e /tmp/go2 ]; do sleep 0.05; done; \
        head -c 50 /dev/zero | tr '\\0' y; echo; echo last";
    let ctr_file = dir.join("ctr.yaml");
    std::fs::write(
        &ctr_file,
        format!(
            "metadata:\n  name: talker\nimage:\n  image: {}\ncommand: [sh, -c, {script:?}]\nlog_path: talker.log\n",
            w.image
        ),
    )
    .unwrap();
    let id = ctl(
        &w,
        &[
            "create",
            &pod,
            ctr_file.to_str().unwrap(),
            pod_file.to_str().unwrap(),
        ],
    )
    .trim()
    .to_string();
    assert_eq!(id.len(), 64, "create prints the id");
    assert!(ctl(&w, &["ps", "-a", "-q", "--state", "created"]).contains(&id));
    ctl(&w, &["start", &id]);
    assert_eq!(
        ctl(&w, &["exec", "-s", &id, "echo", "from-exec"]),
        "from-exec\n"
    );

    let mut follower = tokio::process::Command::new(crust_e2e::binary("crustctl"))
        .args(["-r", &w.sb.endpoint(), "logs", "-f", &id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = lines_of(follower.stdout.take().unwrap());
    let mut err = lines_of(follower.stderr.take().unwrap());
    assert_eq!(next_line(&mut out, "the first line").await, "one");
    assert_eq!(
        next_line(&mut err, "the stderr line").await,
        "err",
        "stderr apart"
    );

    // Rotate as kubelet does: rename, then ReopenContainerLog.
    let log = w.logs.join("ctl").join("talker.log");
    std::fs::rename(&log, log.with_extension("log.1")).unwrap();
    w.d.runtime()
        .await
        .unwrap()
        .reopen_container_log(crust_proto::runtime::v1::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    ctl(&w, &["exec", "-s", &id, "touch", "/tmp/go1"]);
    assert_eq!(next_line(&mut out, "the line after rotation").await, "two");
    for _ in 0..1000 {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(" stdout P ")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains(" stdout P "),
        "the first piece is a partial record"
    );
    // Let the follower read the partial record before the rest exists.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ctl(&w, &["exec", "-s", &id, "touch", "/tmp/go2"]);
    let joined = next_line(&mut out, "the joined line").await;
    assert_eq!(
        joined,
        format!("{}{}", "x".repeat(100), "y".repeat(50)),
        "partial records are joined, never printed half"
    );
    assert_eq!(next_line(&mut out, "the last line").await, "last");
    let status = tokio::time::timeout(Duration::from_secs(20), follower.wait())
        .await
        .expect("logs -f ends when the container exits")
        .unwrap();
    assert!(status.success());
    assert!(out.recv().await.is_none(), "nothing after the exit");

    let timestamps = ctl(&w, &["logs", "--timestamps", "--tail", "1", &id]);
    let (ts, text) = timestamps.trim_end().split_once(' ').unwrap();
    assert_eq!(text, "last");
    assert!(
        ts.ends_with('Z') && ts.contains('T'),
        "an RFC 3339 timestamp first: {timestamps:?}"
    );
}

/// `stop -t 3` on a container that ignores SIGTERM: crustctl's call must outlive the
/// 2 s default `--timeout` by the stop timeout (crictl adds it to its deadline), so the
/// runtime gets to SIGKILL it and crustctl reports success.
#[tokio::test]
async fn crustctl_stop_waits_out_its_timeout_and_kills() {
    let w = world().await;
    let pod = w.run_pod(&PodOptions::named("stubborn")).await;
    let id = w
        .run(
            &pod,
            w.config(
                "stubborn",
                &["sh", "-c", "trap '' TERM; touch /tmp/ready; sleep 1000"],
            ),
        )
        .await;
    // SIGTERM must find the trap in place, or the shell dies of it (143).
    let mut ready = false;
    for _ in 0..500 {
        if w.exec(&id, &["sh", "-c", "[ -e /tmp/ready ]"]).await.0 == 0 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "the container never got to its trap");

    let out = crust_e2e::crustctl(&w.sb.endpoint(), &["stop", "-t", "3", &id]).unwrap();
    assert!(
        out.status.success(),
        "stop -t 3 must wait for the runtime's SIGKILL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{id}\n"));
    let inspect: serde_json::Value = serde_json::from_str(&ctl(&w, &["inspect", &id])).unwrap();
    assert_eq!(inspect["status"]["state"], "CONTAINER_EXITED", "{inspect}");
    assert_eq!(
        inspect["status"]["exitCode"], 137,
        "SIGTERM was ignored, so SIGKILL ended it: {inspect}"
    );
}

/// `exec -t`: the terminal is a pty of the container's own devpts, as runc makes it, so
/// `tty` names it (`/dev/pts/N`). One from the host's devpts does not resolve inside
/// the container and `tty` says "not a tty".
#[tokio::test]
async fn crustctl_exec_tty_is_the_containers_pts() {
    let w = world().await;
    let pod = w.run_pod(&PodOptions::named("tty")).await;
    let id = w.run(&pod, w.config("sleeper", &["sleep", "1000"])).await;
    let out = crust_e2e::crustctl(
        &w.sb.endpoint(),
        &[
            "exec",
            "-t",
            &id,
            "sh",
            "-c",
            "t=$(tty); echo $t; [ -c $t ] && echo present",
        ],
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    let name = lines.next().unwrap_or_default();
    let n = name.strip_prefix("/dev/pts/").unwrap_or_default();
    assert!(
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        "tty in exec -t must print /dev/pts/N, got {text:?} (stderr {:?})",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        lines.next(),
        Some("present"),
        "{name} is a device of the container's devpts: {text:?}"
    );
    assert!(out.status.success(), "{out:?}");
    // Errors from before the command runs still reach the client.
    let out = crust_e2e::crustctl(&w.sb.endpoint(), &["exec", "-t", &id, "no-such-cmd"]).unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no-such-cmd"),
        "{out:?}"
    );
}

/// A runtime's error reaches the user as crictl prints it (grpc-go's form, the code
/// kept), on stderr, with exit code 1.
#[tokio::test]
async fn crustctl_prints_rpc_errors_as_crictl_does() {
    let w = world().await;
    for args in [
        &["inspect", "no-such-container"][..],
        &["start", "no-such-container"][..],
        &["inspectp", "no-such-pod"][..],
    ] {
        let out = crust_e2e::crustctl(&w.sb.endpoint(), args).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: errors go to stderr");
        assert!(
            err.contains("rpc error: code = NotFound desc = ") && err.contains("no-such-"),
            "{args:?}: {err}"
        );
    }
}

/// `checkpoint -e PATH ID` sends CheckpointContainer with the path as `location`.
/// What needs no CRIU is checked here (the dump itself runs on the guest node,
/// guest_checkpoint.rs): a built-in launcher container is refused naming the `oci`
/// handler checkpoint needs, a bad `location` is INVALID_ARGUMENT naming the field,
/// an unknown id NOT_FOUND; crustctl prints each as crictl does, and no file appears.
#[tokio::test]
async fn crustctl_checkpoint_refusals() {
    let w = world().await;
    let pod = w.run_pod(&PodOptions::named("ckpt")).await;
    let ctr = w.run(&pod, w.config("sleeper", &["sleep", "600"])).await;
    let dir = w.sb.path().join("ckpt");
    std::fs::create_dir(&dir).unwrap();
    let archive = dir.join("c.tar");
    let archive = archive.to_str().unwrap();
    let missing_dir = format!("{}/no-such-dir/c.tar", dir.display());
    for (location, id, code, words) in [
        (
            archive,
            ctr.as_str(),
            "FailedPrecondition",
            &["built-in launcher", "oci"][..],
        ),
        (
            "relative.tar",
            ctr.as_str(),
            "InvalidArgument",
            &["location", "absolute"][..],
        ),
        (
            "",
            ctr.as_str(),
            "InvalidArgument",
            &["location", "empty"][..],
        ),
        (
            missing_dir.as_str(),
            ctr.as_str(),
            "InvalidArgument",
            &["location", "does not exist"][..],
        ),
        (
            archive,
            "some-container",
            "NotFound",
            &["some-container"][..],
        ),
    ] {
        let out = crust_e2e::crustctl(
            &w.sb.endpoint(),
            &["-t", "30s", "checkpoint", "--export", location, id],
        )
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{location:?} {id}: {err}");
        assert!(out.stdout.is_empty(), "errors go to stderr: {out:?}");
        assert!(
            err.contains(&format!(
                "checkpoint {id}: rpc error: code = {code} desc = "
            )),
            "{location:?} {id}: {err}"
        );
        for word in words {
            assert!(
                err.contains(word),
                "{location:?} {id}: {word:?} not in {err}"
            );
        }
    }
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "files left: {left:?}");
}

/// Splits a crictl-style table line into its cells (separated by 3+ spaces, or 2+ when
/// padding reaches the 20-column minimum; cells themselves hold single spaces).
fn cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect()
}

/// `ps` and `pods` as crictl prints them: its columns, ages, the pod's name, and its
/// filters (`--name` regex, `--image`, `--last`, `--state`); inspect times in RFC 3339.
#[tokio::test]
async fn crustctl_ps_and_pods_like_crictl() {
    let w = world().await;
    let pod = w.run_pod(&PodOptions::named("lister")).await;
    let alpha = w.run(&pod, w.config("alpha", &["sleep", "1000"])).await;
    let beta = w.run(&pod, w.config("beta", &["sleep", "1000"])).await;
    w.stop_container(&beta, 0).await.unwrap();

    let table = ctl(&w, &["ps", "-a"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        cells(lines[0]),
        [
            "CONTAINER",
            "IMAGE",
            "CREATED",
            "STATE",
            "NAME",
            "ATTEMPT",
            "POD ID",
            "POD"
        ],
        "{table}"
    );
    assert_eq!(lines.len(), 3, "{table}");
    // Newest first: beta, then alpha.
    let row = cells(lines[2]);
    assert_eq!(row[0], alpha[..13], "{table}");
    assert_eq!(row[1], w.image, "{table}");
    assert!(row[2].ends_with(" ago"), "an age: {table}");
    assert_eq!(
        row[3..],
        ["Running", "alpha", "0", &pod[..13], "lister"],
        "{table}"
    );
    assert_eq!(cells(lines[1])[3], "Exited", "{table}");
    // Aligned: every column starts where its header does.
    let at = |line: &str, cell: &str| line.find(cell).unwrap();
    assert_eq!(at(lines[0], "POD ID"), at(lines[2], &pod[..13]), "{table}");
    assert_eq!(at(lines[0], "NAME"), at(lines[1], "beta"), "{table}");

    let ids = |args: &[&str]| -> Vec<String> { ctl(&w, args).lines().map(String::from).collect() };
    assert_eq!(
        ids(&["ps", "-q"]),
        [alpha.as_str()],
        "running only by default"
    );
    assert_eq!(ids(&["ps", "-a", "-q", "--name", "^al"]), [alpha.as_str()]);
    assert_eq!(
        ids(&["ps", "-a", "-q", "--name", "a$"]),
        [beta.as_str(), alpha.as_str()]
    );
    assert_eq!(
        ids(&["ps", "-q", "--last", "1"]),
        [beta.as_str()],
        "any state, newest"
    );
    assert_eq!(ids(&["ps", "-q", "-l"]), [beta.as_str()]);
    assert_eq!(ids(&["ps", "-q", "--state", "exited"]), [beta.as_str()]);
    assert_eq!(ids(&["ps", "-a", "-q", "--image", &w.image]).len(), 2);
    let image_id = ctl(&w, &["images", "-q"]).trim().to_string();
    assert_eq!(
        ids(&["ps", "-a", "-q", "--image", &image_id]).len(),
        2,
        "the image by its id ({image_id}) too"
    );
    assert!(ids(&["ps", "-a", "-q", "--image", "nowhere/none:v9"]).is_empty());

    let pods = ctl(&w, &["pods"]);
    let lines: Vec<&str> = pods.lines().collect();
    assert_eq!(
        cells(lines[0]),
        [
            "POD ID",
            "CREATED",
            "STATE",
            "NAME",
            "NAMESPACE",
            "ATTEMPT",
            "RUNTIME"
        ],
        "{pods}"
    );
    let row = cells(lines[1]);
    assert_eq!(row[0], pod[..13], "{pods}");
    assert!(row[1].ends_with(" ago"), "{pods}");
    // crustd names the handler it chose ("(default)" is for runtimes that leave it empty).
    assert_eq!(row[2..], ["Ready", "lister", "e2e", "0", "crust"], "{pods}");
    assert_eq!(ids(&["pods", "-q", "--name", "^lis"]), [pod.as_str()]);
    assert!(ids(&["pods", "-q", "--name", "^ster"]).is_empty());
    assert_eq!(ids(&["pods", "-q", "--namespace", "e2."]), [pod.as_str()]);

    let rfc3339 = |v: &serde_json::Value| {
        let s = v.as_str().unwrap_or_else(|| panic!("{v} is not a string"));
        assert!(
            s.len() >= 20 && s.as_bytes()[10] == b'T' && s.ends_with('Z'),
            "{s} is not RFC 3339"
        );
    };
    let inspect: serde_json::Value = serde_json::from_str(&ctl(&w, &["inspect", &beta])).unwrap();
    for field in ["createdAt", "startedAt", "finishedAt"] {
        rfc3339(&inspect["status"][field]);
    }
    let inspectp: serde_json::Value = serde_json::from_str(&ctl(&w, &["inspectp", &pod])).unwrap();
    rfc3339(&inspectp["status"]["createdAt"]);
}

/// `events` streams GetContainerEvents as JSON lines; `stats` and `statsp` print
/// crictl's tables; `config` shows the endpoint in use.
#[tokio::test]
async fn crustctl_events_stats_and_config() {
    let w = world().await;
    let mut events = tokio::process::Command::new(crust_e2e::binary("crustctl"))
        .args(["-r", &w.sb.endpoint(), "events"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = lines_of(events.stdout.take().unwrap());
    let pod = w.run_pod(&PodOptions::named("stats")).await;
    let id = w.run(&pod, w.config("busy", &["sleep", "1000"])).await;
    loop {
        let line = next_line(&mut lines, "a container event").await;
        let event: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON line: {line:?}: {e}"));
        if event["containerId"] == id.as_str()
            && event["containerEventType"] == "CONTAINER_STARTED_EVENT"
        {
            break;
        }
    }
    events.kill().await.unwrap();

    let table = ctl(&w, &["stats", "-a"]);
    let rows: Vec<Vec<String>> = table.lines().map(cells).collect();
    assert_eq!(
        rows[0],
        ["CONTAINER", "NAME", "CPU %", "MEM", "DISK", "INODES"],
        "{table}"
    );
    let row = rows
        .iter()
        .find(|r| r[0] == id[..13])
        .unwrap_or_else(|| panic!("no row for {id}: {table}"));
    assert_eq!(row[1], "busy", "{table}");
    assert!(row[2].parse::<f64>().is_ok(), "CPU % is a number: {table}");
    let json: serde_json::Value =
        serde_json::from_str(&ctl(&w, &["stats", &id, "-o", "json"])).unwrap();
    assert_eq!(json["stats"][0]["attributes"]["id"], id.as_str(), "{json}");

    let table = ctl(&w, &["statsp"]);
    let rows: Vec<Vec<String>> = table.lines().map(cells).collect();
    assert_eq!(rows[0], ["POD", "POD ID", "CPU %", "MEM"], "{table}");
    assert!(
        rows.iter().any(|r| r[0] == "stats" && r[1] == pod[..13]),
        "{table}"
    );

    let config = ctl(&w, &["config"]);
    assert!(
        config.contains(&format!("runtime-endpoint: {}\n", w.sb.endpoint())),
        "{config}"
    );
    assert_eq!(
        ctl(&w, &["config", "--get", "runtime-endpoint"]).trim(),
        w.sb.endpoint()
    );
}

#[tokio::test]
async fn crustctl_logs_previous_attempt_and_since() {
    let w = world().await;
    let pod = w.run_pod(&PodOptions::named("attempts")).await;
    let dir = w.sb.path();
    let pod_file = dir.join("pod-attempts.json");
    std::fs::write(
        &pod_file,
        format!(
            r#"{{"metadata":{{"name":"attempts","namespace":"e2e","uid":"uid-attempts"}},"log_directory":"{}"}}"#,
            w.logs.join("attempts").display()
        ),
    )
    .unwrap();
    // kubelet's layout: <log dir>/<container>/<attempt>.log, one container per attempt.
    let run = |attempt: u32, word: &str| {
        let file = dir.join(format!("app-{attempt}.yaml"));
        std::fs::write(
            &file,
            format!(
                "metadata:\n  name: app\n  attempt: {attempt}\nimage:\n  image: {}\ncommand: [echo, {word}]\nlog_path: app/{attempt}.log\n",
                w.image
            ),
        )
        .unwrap();
        let id = ctl(
            &w,
            &[
                "create",
                &pod,
                file.to_str().unwrap(),
                pod_file.to_str().unwrap(),
            ],
        )
        .trim()
        .to_string();
        ctl(&w, &["start", &id]);
        id
    };
    let wait_exited = |id: &str| {
        for _ in 0..200 {
            if ctl(&w, &["inspect", id]).contains("CONTAINER_EXITED") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{id} did not exit");
    };
    let first = run(0, "first");
    wait_exited(&first);
    let second = run(1, "second");
    wait_exited(&second);

    assert_eq!(ctl(&w, &["logs", &second]), "second\n");
    assert_eq!(ctl(&w, &["logs", "--previous", &second]), "first\n");
    assert_eq!(
        ctl(&w, &["logs", "-p", "--since", "1h", &second]),
        "first\n"
    );
    let later = humantime::format_rfc3339(std::time::SystemTime::now() + Duration::from_secs(3600));
    assert_eq!(
        ctl(&w, &["logs", "--since", &later.to_string(), &second]),
        ""
    );
    let out = crust_e2e::crustctl(&w.sb.endpoint(), &["logs", "--previous", &first]).unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("first attempt"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn crustctl_run_with_pull_pulls_the_image_first() {
    let w = world().await;
    let dir = w.sb.path();
    let pod_file = dir.join("pod-pull.json");
    std::fs::write(
        &pod_file,
        format!(
            r#"{{"metadata":{{"name":"pull","namespace":"e2e","uid":"uid-pull"}},"log_directory":"{}"}}"#,
            w.logs.join("pull").display()
        ),
    )
    .unwrap();
    let ctr_file = dir.join("ctr-pull.yaml");
    std::fs::write(
        &ctr_file,
        format!(
            "metadata:\n  name: app\nimage:\n  image: {}\ncommand: [sleep, '100']\nlog_path: app.log\n",
            w.image
        ),
    )
    .unwrap();
    ctl(&w, &["rmi", &w.image]);
    let (pod, ctr) = (pod_file.to_str().unwrap(), ctr_file.to_str().unwrap());
    // Without the image, CreateContainer refuses; the pod `run` made is its own.
    let out = crust_e2e::crustctl(&w.sb.endpoint(), &["run", ctr, pod]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CreateContainer") && err.contains(&w.image),
        "{err}"
    );
    ctl(&w, &["rmp", "-f", "-a"]);

    let id = ctl(&w, &["run", "--with-pull", ctr, pod])
        .trim()
        .to_string();
    assert!(ctl(&w, &["images", "-q"]).lines().count() == 1, "pulled");
    assert!(ctl(&w, &["inspect", &id]).contains("CONTAINER_RUNNING"));
}
