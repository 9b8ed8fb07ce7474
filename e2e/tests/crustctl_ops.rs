//! crustctl for an operator: a hand-written pod or container config missing a field
//! crustd needs is refused with INVALID_ARGUMENT naming that field, printed as crictl
//! prints it; a file crustctl cannot read names the file and where it is wrong.

use std::process::Stdio;

use crust_e2e::world::{PodOptions, World, busybox_image};
use tokio::io::{AsyncBufReadExt, BufReader};

async fn world() -> World {
    let image = busybox_image(&["sh", "sleep"], |_| {});
    World::start(&image, "test/ops", "").await
}

fn ctl(w: &World, args: &[&str]) -> String {
    crust_e2e::crustctl_ok(&w.sb.endpoint(), args)
}

/// Runs crustctl expecting it to fail; its stderr.
fn ctl_fails(w: &World, args: &[&str]) -> String {
    let out = crust_e2e::crustctl(&w.sb.endpoint(), args).unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "crustctl {args:?} should fail: {err}"
    );
    assert!(out.stdout.is_empty(), "{args:?}: {:?}", out.stdout);
    err
}

#[tokio::test]
async fn crustctl_names_the_missing_config_field() {
    let w = world().await;
    let dir = w.sb.path();
    let logs = w.logs.join("fields");
    let pod_json = |meta: &str| {
        format!(
            r#"{{"metadata":{{{meta}}},"log_directory":"{}"}}"#,
            logs.display()
        )
    };
    for (meta, field) in [
        (r#""namespace":"e2e","uid":"u1""#, "config.metadata.name"),
        (r#""name":"p","uid":"u1""#, "config.metadata.namespace"),
        (r#""name":"p","namespace":"e2e""#, "config.metadata.uid"),
    ] {
        let file = dir.join("pod-missing.json");
        std::fs::write(&file, pod_json(meta)).unwrap();
        let err = ctl_fails(&w, &["runp", file.to_str().unwrap()]);
        assert!(
            err.contains(&format!(
                "rpc error: code = InvalidArgument desc = invalid {field}: is required"
            )),
            "{field}: {err}"
        );
    }
    let file = dir.join("pod-nometa.json");
    std::fs::write(
        &file,
        format!(r#"{{"log_directory":"{}"}}"#, logs.display()),
    )
    .unwrap();
    let err = ctl_fails(&w, &["runp", file.to_str().unwrap()]);
    assert!(
        err.contains("code = InvalidArgument desc = invalid config.metadata: is required"),
        "{err}"
    );
    assert_eq!(ctl(&w, &["pods", "-q"]), "", "nothing was made");

    let pod = w.run_pod(&PodOptions::named("fields")).await;
    let pod_file = dir.join("pod-fields.json");
    std::fs::write(
        &pod_file,
        pod_json(r#""name":"fields","namespace":"e2e","uid":"uid-fields""#),
    )
    .unwrap();
    for (yaml, field) in [
        (
            format!(
                "metadata:\n  attempt: 0\nimage:\n  image: {}\ncommand: [sleep, '9']\n",
                w.image
            ),
            "config.metadata.name",
        ),
        (
            "metadata:\n  name: c\nimage:\n  image: ''\ncommand: [sleep, '9']\n".to_string(),
            "config.image.image",
        ),
        (
            "metadata:\n  name: c\ncommand: [sleep, '9']\n".to_string(),
            "config.image",
        ),
    ] {
        let file = dir.join("ctr-missing.yaml");
        std::fs::write(&file, yaml).unwrap();
        let err = ctl_fails(
            &w,
            &[
                "create",
                &pod,
                file.to_str().unwrap(),
                pod_file.to_str().unwrap(),
            ],
        );
        assert!(
            err.contains(&format!(
                "CreateContainer: rpc error: code = InvalidArgument desc = invalid {field}: is required"
            )),
            "{field}: {err}"
        );
    }
    assert_eq!(ctl(&w, &["ps", "-a", "-q"]), "", "no container was made");

    // crustctl's own parse errors: the file, then the line or the field.
    let bad = dir.join("broken.json");
    std::fs::write(&bad, "{\n  \"metadata\": {\"name\": \"p\",}\n}\n").unwrap();
    let err = ctl_fails(&w, &["runp", bad.to_str().unwrap()]);
    assert!(
        err.contains(bad.to_str().unwrap())
            && err.contains("JSON syntax")
            && err.contains("line 2"),
        "{err}"
    );
    let bad = dir.join("wrong.yaml");
    std::fs::write(&bad, "metadata:\n  name: c\n  attempt: many\n").unwrap();
    let err = ctl_fails(
        &w,
        &[
            "create",
            &pod,
            bad.to_str().unwrap(),
            pod_file.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains(bad.to_str().unwrap())
            && err.contains("is not a ContainerConfig")
            && err.contains("field metadata.attempt: invalid digit"),
        "{err}"
    );
}

/// `-o go-template --template` over the `-o json` documents of inspect, inspectp,
/// inspecti, ps, pods and images; `events -o table` and `-o go-template`.
#[tokio::test]
async fn crustctl_go_templates_and_event_table() {
    let w = world().await;
    let spawn_events = |args: &[&str]| {
        let mut child = tokio::process::Command::new(crust_e2e::binary("crustctl"))
            .args(["-r", &w.sb.endpoint(), "events"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        (child, lines)
    };
    let (mut table_child, mut table) = spawn_events(&["-o", "table"]);
    let (mut tmpl_child, mut tmpl) = spawn_events(&[
        "-o",
        "go-template",
        "--template",
        "{{.containerId}} {{.containerEventType}} {{.podSandboxStatus.metadata.name}}",
    ]);
    let header = next(&mut table).await;
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["TIME", "TYPE", "CONTAINER", "POD"],
        "{header}"
    );

    let pod = w.run_pod(&PodOptions::named("tmpl")).await;
    let id = w.run(&pod, w.config("tmplc", &["sleep", "1000"])).await;

    let t = |args: &[&str], template: &str| {
        let mut all = args.to_vec();
        all.extend(["-o", "go-template", "--template", template]);
        ctl(&w, &all)
    };
    assert_eq!(t(&["inspect", &id], "{{.status.id}}"), format!("{id}\n"));
    assert_eq!(
        t(
            &["inspect", &id],
            "{{.status.metadata.name}} {{.status.state | lower}} {{len .status.metadata | printf \"%d keys\"}}"
        ),
        "tmplc container_running 2 keys\n"
    );
    assert_eq!(
        t(
            &["inspectp", &pod],
            "{{.status.metadata.namespace}}/{{.status.metadata.name}} {{.status.state}}"
        ),
        format!(
            "{}/tmpl SANDBOX_READY\n",
            PodOptions::named("tmpl").namespace
        )
    );
    let image_id = ctl(&w, &["images", "-q"]).trim().to_string();
    assert_eq!(
        t(&["inspecti", &w.image], "{{.status.id}}"),
        format!("{image_id}\n")
    );
    assert_eq!(
        t(
            &["ps"],
            "{{range .containers}}{{.id}} {{.metadata.name}}{{\"\\n\"}}{{end}}"
        ),
        format!("{id} tmplc\n\n")
    );
    assert_eq!(
        t(
            &["pods"],
            "{{range .items}}{{if eq .metadata.name \"tmpl\"}}{{.id}}{{end}}{{end}}"
        ),
        format!("{pod}\n")
    );
    assert_eq!(
        t(&["images"], "{{range .images}}{{index .repoTags 0}}{{end}}"),
        format!("{}\n", w.image)
    );
    // A key the document lacks is an error, as crictl's missingkey=error.
    let out = crust_e2e::crustctl(
        &w.sb.endpoint(),
        &[
            "inspect",
            &id,
            "-o",
            "go-template",
            "--template",
            "{{.status.nope}}",
        ],
    )
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no entry for key \"nope\""),
        "{out:?}"
    );
    // A template that does not parse fails before any call.
    let out = crust_e2e::crustctl(
        &w.sb.endpoint(),
        &["--template", "{{if .x}}", "rm", "-f", &id],
    );
    let out = out.unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed to parse go-template"));
    assert!(ctl(&w, &["ps", "-q"]).contains(&id), "rm did not run");

    let started = loop {
        let line = next(&mut table).await;
        if line.contains(&id[..13]) && line.contains("STARTED") {
            break line;
        }
    };
    let cells: Vec<&str> = started.split_whitespace().collect();
    assert_eq!(cells.len(), 4, "{started}");
    assert!(
        cells[0].ends_with('Z') && cells[0].contains('T'),
        "{started}"
    );
    assert!(cells[3].ends_with("/tmpl"), "{started}");
    loop {
        let line = next(&mut tmpl).await;
        if line == format!("{id} CONTAINER_STARTED_EVENT tmpl") {
            break;
        }
        assert!(line.split(' ').count() == 3, "{line}");
    }
    table_child.kill().await.unwrap();
    tmpl_child.kill().await.unwrap();
}

async fn next(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
        .await
        .expect("a line from crustctl events in 20 s")
        .unwrap()
        .expect("crustctl events ended")
}
