//! CDI devices (`ContainerConfig.CDI_devices`, as DRA drivers request them): specs read
//! from the configured directories, their edits (device nodes, environment, bind
//! mounts, additional groups) seen from inside the container, with both launchers;
//! their OCI hooks run at each lifecycle point with the container's state; unknown
//! devices and edits crust cannot apply refused with a clear code.

use std::{fs, path::Path};

use crust_e2e::world::{PodOptions, World, busybox_image};
use crust_proto::runtime::v1::{CdiDevice, ListContainersRequest, RemoveContainerRequest};
use tonic::Code;

const APPLETS: &[&str] = &["sh", "cat", "sleep", "ls", "id", "echo"];
const RUNC: &str = "/usr/sbin/runc";

#[tokio::test(flavor = "multi_thread")]
async fn cdi_devices_are_applied_with_both_launchers() {
    assert!(
        Path::new(RUNC).is_file(),
        "{RUNC} not found: install it with `apt-get install runc`"
    );
    let cdi = tempfile::Builder::new()
        .prefix("crust-cdi-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let (specs, vendor) = (cdi.path().join("specs"), cdi.path().join("vendor"));
    fs::create_dir_all(&specs).unwrap();
    fs::create_dir_all(&vendor).unwrap();
    fs::write(vendor.join("lib.txt"), "vendor library\n").unwrap();
    fs::write(
        specs.join("vendor.json"),
        serde_json::json!({
            "cdiVersion": "0.6.0",
            "kind": "vendor.test/dev",
            "containerEdits": {"env": ["VENDOR_SPEC=yes"]},
            "devices": [
                {"name": "null", "containerEdits": {
                    "env": ["CDI_DEV=null"],
                    "deviceNodes": [{"path": "/dev/cdi-null", "hostPath": "/dev/null", "permissions": "rw"}],
                    "mounts": [{"hostPath": vendor, "containerPath": "/opt/vendor", "options": ["ro", "nosuid", "bind"]}],
                    "additionalGids": [4242]}},
                {"name": "netdev", "containerEdits": {
                    "netDevices": [{"hostInterfaceName": "cdi0", "name": "eth9"}]}}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let config = format!(
        "[runtime]\ncdi_spec_dirs = [\"{}\"]\n[runtime.handlers.runc]\ntype = \"oci\"\npath = \"{RUNC}\"\n",
        specs.display()
    );
    let w = World::start(&busybox_image(APPLETS, |_| {}), "test/cdi", &config).await;
    let device = |name: &str| CdiDevice {
        name: format!("vendor.test/dev={name}"),
    };

    for handler in ["", "runc"] {
        let pod = w
            .run_pod(&PodOptions::named(&format!("cdi{handler}")).handler(handler))
            .await;
        let mut c = w.config("gpu-user", &["sleep", "1000"]);
        c.cdi_devices = vec![device("null")];
        let ctr = w.run(&pod, c).await;
        let (code, out, err) = w
            .exec(
                &ctr,
                &[
                    "sh",
                    "-c",
                    "ls -l /dev/cdi-null && echo x > /dev/cdi-null && echo $CDI_DEV $VENDOR_SPEC \
                     && cat /opt/vendor/lib.txt && id -G && (echo y > /opt/vendor/new || echo read-only)",
                ],
            )
            .await;
        assert_eq!(code, 0, "[{handler}] {out}{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with('c') && lines[0].contains("1,") && lines[0].contains('3'),
            "[{handler}] /dev/cdi-null is the host's null device (1, 3): {}",
            lines[0]
        );
        assert_eq!(lines[1], "null yes", "[{handler}] device and spec env");
        assert_eq!(lines[2], "vendor library", "[{handler}] the bind mount");
        assert!(
            lines[3].split(' ').any(|g| g == "4242"),
            "[{handler}] additional gid: {}",
            lines[3]
        );
        assert_eq!(lines[4], "read-only", "[{handler}] the mount is ro");

        // A device no spec defines, a malformed name, an edit crust cannot apply.
        for (dev, code, text) in [
            ("vendor.test/dev=missing", Code::NotFound, "missing"),
            ("just-a-name", Code::InvalidArgument, "just-a-name"),
            (
                "vendor.test/dev=netdev",
                Code::Unimplemented,
                "network devices",
            ),
        ] {
            let mut c = w.config(&format!("bad-{}", dev.len()), &["sleep", "1000"]);
            c.cdi_devices = vec![CdiDevice { name: dev.into() }];
            let e = w
                .create(&pod, c)
                .await
                .expect_err(&format!("[{handler}] {dev} must be refused"));
            assert_eq!(e.code(), code, "[{handler}] {dev}: {e:?}");
            assert!(e.message().contains(text), "[{handler}] {}", e.message());
        }
    }
}

/// The hook states written to `dir` for container `id` at `stage` (each hook run
/// writes `<stage>.<its pid>`).
fn states(dir: &Path, stage: &str, id: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.split('.').next() != Some(stage) {
            continue;
        }
        let state: serde_json::Value =
            serde_json::from_slice(&fs::read(e.path()).unwrap()).expect("state is JSON");
        if state["id"] == id {
            out.push(state);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn cdi_hooks_run_at_each_lifecycle_point_with_both_launchers() {
    assert!(
        Path::new(RUNC).is_file(),
        "{RUNC} not found: install it with `apt-get install runc`"
    );
    let cdi = tempfile::Builder::new()
        .prefix("crust-cdi-hooks-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let (specs, out) = (cdi.path().join("specs"), cdi.path().join("out"));
    fs::create_dir_all(&specs).unwrap();
    fs::create_dir_all(&out).unwrap();
    // A host hook: the state on stdin into out/<stage>.<pid>. `$0` is the file.
    let host = |stage: &str| {
        serde_json::json!({
            "hookName": stage, "path": "/bin/sh",
            "args": ["sh", "-c", "cat > \"$0.$$\"", out.join(stage)],
            "env": ["PATH=/usr/bin:/bin"], "timeout": 20})
    };
    fs::write(
        specs.join("hooks.json"),
        serde_json::json!({
            "cdiVersion": "0.6.0",
            "kind": "vendor.test/hook",
            "devices": [
                {"name": "all", "containerEdits": {"hooks": [
                    host("createRuntime"), host("createContainer"),
                    // Resolved and run inside the container (its own /bin/sh).
                    {"hookName": "startContainer", "path": "/bin/sh",
                     "args": ["sh", "-c", "cat > /hook-start.json"]},
                    host("poststart"), host("poststop")]}},
                {"name": "failing", "containerEdits": {"hooks": [
                    {"hookName": "createContainer", "path": "/bin/sh",
                     "args": ["sh", "-c", "echo no-ldcache-here >&2; exit 3"]}]}}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let config = format!(
        "[runtime]\ncdi_spec_dirs = [\"{}\"]\n[runtime.handlers.runc]\ntype = \"oci\"\npath = \"{RUNC}\"\n",
        specs.display()
    );
    let w = World::start(&busybox_image(APPLETS, |_| {}), "test/cdihooks", &config).await;
    let device = |name: &str| CdiDevice {
        name: format!("vendor.test/hook={name}"),
    };

    for handler in ["", "runc"] {
        let pod = w
            .run_pod(&PodOptions::named(&format!("hooks{handler}")).handler(handler))
            .await;
        let mut c = w.config("hooked", &["sleep", "1000"]);
        c.cdi_devices = vec![device("all")];
        let id = w.create(&pod, c).await.expect("CreateContainer");
        for stage in ["createRuntime", "createContainer"] {
            let got = states(&out, stage, &id);
            assert_eq!(
                got.len(),
                1,
                "[{handler}] one {stage} run at create: {got:?}"
            );
            assert_eq!(got[0]["status"], "creating", "[{handler}] {stage}");
            let bundle = Path::new(got[0]["bundle"].as_str().unwrap());
            assert!(
                bundle.join("config.json").is_file(),
                "[{handler}] {stage}: the bundle {} holds config.json",
                bundle.display()
            );
        }
        // runc before 1.2 runs poststart hooks at `runc create` (fixed in 1.2.0 for
        // runtime-spec conformance); bookworm has 1.1.5, so only ours is checked.
        if handler.is_empty() {
            assert!(
                states(&out, "poststart", &id).is_empty(),
                "[built-in] no poststart before StartContainer"
            );
        }

        w.start_container(&id).await.expect("StartContainer");
        let pid = w.verbose_info(&id).await["pid"].as_i64().expect("pid");
        let runtime = &states(&out, "createRuntime", &id)[0];
        assert_eq!(
            runtime["pid"], pid,
            "[{handler}] createRuntime names the process"
        );
        let post = states(&out, "poststart", &id);
        assert_eq!(post.len(), 1, "[{handler}] poststart ran once");
        let want = if handler.is_empty() {
            "running"
        } else {
            "created"
        };
        assert_eq!(post[0]["status"], want, "[{handler}] (runc 1.1: at create)");
        assert_eq!(
            post[0]["pid"], pid,
            "[{handler}] poststart names the process"
        );
        let (code, text, err) = w.exec(&id, &["cat", "/hook-start.json"]).await;
        assert_eq!(code, 0, "[{handler}] startContainer ran inside: {err}");
        let start: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(start["id"], id.as_str(), "[{handler}] startContainer state");
        assert_eq!(start["status"], "created", "[{handler}]");

        let mut rt = w.d.runtime().await.unwrap();
        rt.remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("RemoveContainer");
        let stop = states(&out, "poststop", &id);
        assert_eq!(stop.len(), 1, "[{handler}] poststop ran at RemoveContainer");
        assert_eq!(stop[0]["status"], "stopped", "[{handler}]");

        // A failing createContainer hook fails CreateContainer, naming it, and leaves
        // no container behind.
        let mut c = w.config("hook-fails", &["sleep", "1000"]);
        c.cdi_devices = vec![device("failing")];
        let e = w
            .create(&pod, c)
            .await
            .expect_err(&format!("[{handler}] a failing hook must fail the create"));
        if handler.is_empty() {
            assert!(
                e.message().contains("createContainer hook /bin/sh")
                    && e.message().contains("no-ldcache-here"),
                "[built-in] the hook and its output are named: {}",
                e.message()
            );
        } else {
            assert!(e.message().contains("hook"), "[runc] {}", e.message());
        }
        let left = rt
            .list_containers(ListContainersRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert!(
            left.iter()
                .all(|c| c.metadata.as_ref().unwrap().name != "hook-fails"),
            "[{handler}] the failed container is rolled back: {left:?}"
        );
    }
}
