//! crustctl for an operator: a hand-written pod or container config missing a field
//! crustd needs is refused with INVALID_ARGUMENT naming that field, printed as crictl
//! prints it; a file crustctl cannot read names the file and where it is wrong.

use crust_e2e::world::{PodOptions, World, busybox_image};

async fn world() -> World {
    let image = busybox_image(&["sh", "sleep"], |_| {});
    World::start(&image, "test/ops", "").await
}

fn ctl(w: &World, args: &[&str]) -> String {
    let out = crust_e2e::crustctl(&w.sb.endpoint(), args).unwrap();
    assert!(
        out.status.success(),
        "crustctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
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
