//! CDI devices (`ContainerConfig.CDI_devices`, as DRA drivers request them): specs read
//! from the configured directories, their edits (device nodes, environment, bind
//! mounts, additional groups) seen from inside the container, with both launchers;
//! unknown devices and edits crust cannot apply refused with a clear code.

use std::{fs, path::Path};

use crust_e2e::world::{PodOptions, World, busybox_image};
use crust_proto::runtime::v1::CdiDevice;
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
                {"name": "hooked", "containerEdits": {
                    "hooks": [{"hookName": "createContainer", "path": "/bin/true"}]}}
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
            ("vendor.test/dev=hooked", Code::Unimplemented, "hooks"),
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
