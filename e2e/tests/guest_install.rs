//! `scripts/install.sh` on a real systemd node (the guest): the binaries, unit and
//! config files land where docs/operations.md says, the unit passes `systemd-analyze
//! verify`, `systemctl start crust` returns only once crustd answers (Type=notify),
//! crustctl reaches it on the default endpoint, and a container keeps running across
//! `systemctl restart crust` and `systemctl stop crust` (KillMode=process).

use crust_e2e::{
    binary,
    guest::{in_guest, workspace_root},
    guest_crustd::{BUSYBOX, GuestCrustd},
};
use serde_json::Value;

fn step(what: &str) {
    eprintln!("guest_install: {what}");
}

#[tokio::test]
async fn install_script_and_unit_on_a_systemd_node() {
    // The fixture's own crustd pulls the image into /var/lib/crust, the installed
    // unit's default root, and is then stopped and its config removed.
    let node = GuestCrustd::start("install", "")
        .await
        .expect("guest node with crustd");
    node.stop_crustd().unwrap();
    node.run("rm -f /etc/crust/crust.toml", 30).unwrap();

    step("install");
    let repo = in_guest(&workspace_root()).unwrap();
    let bin_dir = in_guest(binary("crustd").parent().unwrap()).unwrap();
    let out = node
        .run(&format!("BIN_DIR={bin_dir} {repo}/scripts/install.sh"), 120)
        .unwrap();
    assert!(out.contains("installed /usr/local/bin/crustd"), "{out}");
    let files = node
        .run(
            "stat -c '%a %n' /usr/local/bin/crustd /usr/local/bin/crust-monitor \
             /usr/local/bin/crustctl /etc/systemd/system/crust.service \
             /etc/crust/crust.toml /etc/crictl.yaml /etc/crust/crust.toml.d",
            30,
        )
        .unwrap();
    for want in [
        "755 /usr/local/bin/crustd",
        "755 /usr/local/bin/crust-monitor",
        "755 /usr/local/bin/crustctl",
        "644 /etc/systemd/system/crust.service",
        "644 /etc/crust/crust.toml",
        "644 /etc/crictl.yaml",
        "755 /etc/crust/crust.toml.d",
    ] {
        assert!(files.lines().any(|l| l == want), "{want} in\n{files}");
    }
    // systemd-analyze verify exits non-zero on a unit it cannot load or run.
    node.run(
        "systemd-analyze verify /etc/systemd/system/crust.service",
        60,
    )
    .unwrap();
    node.run(
        "/usr/local/bin/crustd config check /etc/crust/crust.toml",
        30,
    )
    .unwrap();

    step("an edited config survives a second install");
    node.write(
        "/etc/crust/crust.toml.d/10-node.toml",
        "[cgroup]\ndriver = \"systemd\"\n",
    )
    .unwrap();
    node.run("echo '# edited' >> /etc/crust/crust.toml", 30)
        .unwrap();
    let again = node
        .run(&format!("BIN_DIR={bin_dir} {repo}/scripts/install.sh"), 120)
        .unwrap();
    assert!(again.contains("kept /etc/crust/crust.toml"), "{again}");
    assert!(
        node.run("tail -1 /etc/crust/crust.toml", 30)
            .unwrap()
            .trim()
            == "# edited",
        "crust.toml overwritten"
    );

    step("systemctl start");
    // No retry loop: Type=notify means start returns once crustd has loaded its
    // state, so the very next call must be answered (not UNAVAILABLE, not refused).
    let version = node
        .run(
            "systemctl daemon-reload && systemctl start crust && /usr/local/bin/crustctl version",
            180,
        )
        .unwrap();
    assert!(version.contains("RuntimeName:  crust"), "{version}");
    let props = node
        .run(
            "systemctl show crust -p Type -p ActiveState -p KillMode -p Delegate",
            30,
        )
        .unwrap();
    for want in [
        "Type=notify",
        "ActiveState=active",
        "KillMode=process",
        "Delegate=yes",
    ] {
        assert!(props.lines().any(|l| l == want), "{want} in\n{props}");
    }
    // The drop-in was read: Status lists the files crustd loaded.
    let info = node
        .run("/usr/local/bin/crustctl info -o json", 60)
        .unwrap();
    assert!(
        info.contains("/etc/crust/crust.toml.d/10-node.toml"),
        "{info}"
    );

    step("a container across restart and stop");
    node.write(
        "/root/pod.json",
        &serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "install-1"},
            "linux": {"security_context": {"namespace_options": {"network": 2}}}
        })
        .to_string(),
    )
    .unwrap();
    node.write(
        "/root/sleep.json",
        &serde_json::json!({
            "metadata": {"name": "sleep"},
            "image": {"image": BUSYBOX},
            "command": ["/bin/sleep", "3600"]
        })
        .to_string(),
    )
    .unwrap();
    let ctl = "/usr/local/bin/crustctl -t 120s";
    let ctr = node
        .run(
            &format!(
                "set -e; pod=$({ctl} runp /root/pod.json)
                 ctr=$({ctl} create $pod /root/sleep.json /root/pod.json)
                 {ctl} start $ctr >/dev/null; echo $ctr"
            ),
            300,
        )
        .unwrap();
    let ctr = ctr.trim();
    let pid = |node: &GuestCrustd| -> String {
        let out = node.run(&format!("{ctl} inspect {ctr}"), 60).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(v["status"]["state"], "CONTAINER_RUNNING", "{out}");
        v["info"]["pid"].to_string()
    };
    let before = pid(&node);
    assert!(before.parse::<u32>().is_ok(), "pid {before}");
    node.run("systemctl restart crust", 180).unwrap();
    assert_eq!(pid(&node), before, "same process after restart");
    node.run("systemctl stop crust", 180).unwrap();
    node.run(&format!("kill -0 {before}"), 30)
        .expect("the container outlives a stopped crust.service");
    node.run("systemctl start crust", 180).unwrap();
    assert_eq!(pid(&node), before, "and is recovered");
    node.run(&format!("{ctl} rmp -f $({ctl} pods -q)"), 180)
        .unwrap();
    node.run("systemctl stop crust", 180).unwrap();
}
