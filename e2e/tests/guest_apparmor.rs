//! AppArmor on a real node (the guest: AppArmor enabled, apparmor_parser installed),
//! what critest's AppArmor specs check, with both launchers: a RuntimeDefault
//! container runs under `crust-default (enforce)` (loaded by crustd on first use) and
//! cannot write /proc/sysrq-trigger; an Unconfined one can (the control: the denial is
//! the profile's, not something else); a Localhost profile the test loads blocks the
//! one write it denies; an unloaded Localhost profile fails CreateContainer with
//! FAILED_PRECONDITION naming it; execs join the container's profile; the deprecated
//! `apparmor_profile` string still works.
//!
//! crustd runs inside the guest (systemd-run), driven by crustctl there; the test
//! image comes from a registry the host filled, whose storage the guest serves with
//! its own docker-registry on loopback (the guest has no network).

use std::{collections::HashMap, path::PathBuf};

use crust_e2e::{
    guest::{Guest, in_guest, workspace_root},
    registry::Registry,
    world::busybox_image,
};

const APPLETS: &[&str] = &["sh", "sleep", "cat", "echo"];
/// Port 5000 is taken in the guest by the packaged docker-registry service.
const IMAGE: &str = "127.0.0.1:5055/test/aa:v1";

/// The registry storage copied under the workspace (the guest sees only that), removed
/// on drop.
struct SharedDir(PathBuf);

impl Drop for SharedDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn registry_storage_in_workspace() -> SharedDir {
    let registry = Registry::start().await.expect("start the host registry");
    registry
        .push_image("test/aa", &["v1"], &busybox_image(APPLETS, |_| {}))
        .await
        .expect("push the test image");
    let dir = workspace_root().join(format!("target/guest-apparmor-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(registry.storage())
        .arg(dir.join("storage"))
        .status()
        .unwrap();
    assert!(status.success(), "copy the registry storage");
    SharedDir(dir)
}

/// What the script runs for one container: its name, the security context JSON and
/// the shell script it runs (its output goes to its log, which the script prints).
fn container(name: &str, security: &str, script: &str) -> String {
    format!(
        r#"{{"metadata":{{"name":"{name}"}},"image":{{"image":"{IMAGE}"}},"command":["sh","-c",{script:?}],"log_path":"{name}.log","linux":{{"security_context":{security}}}}}"#
    )
}

/// The checks each container makes: its label, and whether the writes the profiles
/// deny went through. `readonly_paths` is set so /proc/sysrq-trigger is not a
/// read-only bind (the default): only AppArmor stands between it and a write.
const PROBE: &str = "cat /proc/self/attr/current; \
    if echo h > /proc/sysrq-trigger; then echo sysrq=written; else echo sysrq=denied; fi; \
    if echo x > /tmp/blocked; then echo blocked=written; else echo blocked=denied; fi; \
    if echo x > /tmp/other; then echo other=written; else echo other=denied; fi; \
    echo probe-done; sleep 3600";

/// The script for one run; `n` keeps each run's crustd, state and cgroups apart.
fn guest_script(storage: &str, handler: &str, n: usize) -> String {
    let bin = in_guest(&workspace_root().join("target/debug")).unwrap();
    let ro = r#""readonly_paths":["/proc/bus"]"#;
    let containers = [
        (
            "default",
            format!(r#"{{"apparmor":{{"profile_type":0}},{ro}}}"#),
        ),
        (
            "unconfined",
            format!(r#"{{"apparmor":{{"profile_type":1}},{ro}}}"#),
        ),
        (
            "localhost",
            format!(
                r#"{{"apparmor":{{"profile_type":2,"localhost_ref":"crust-test-deny-write"}},{ro}}}"#
            ),
        ),
        (
            "deprecated",
            format!(r#"{{"apparmor_profile":"localhost/crust-test-deny-write",{ro}}}"#),
        ),
        ("nothing", format!("{{{ro}}}")),
    ];
    // Under TCG a container costs ~40 s: runc gets the two that show it is handed the
    // profile (default and Localhost) and the control.
    let containers: Vec<_> = containers
        .into_iter()
        .filter(|(name, _)| {
            handler.is_empty() || ["default", "unconfined", "localhost"].contains(name)
        })
        .collect();
    let mut files = String::new();
    for (name, sc) in &containers {
        files.push_str(&format!(
            "cat > $D/{name}.json <<'EOF'\n{}\nEOF\n",
            container(name, sc, PROBE)
        ));
    }
    files.push_str(&format!(
        "cat > $D/unloaded.json <<'EOF'\n{}\nEOF\n",
        container(
            "unloaded",
            r#"{"apparmor":{"profile_type":2,"localhost_ref":"crust-test-not-loaded"}}"#,
            "sleep 1"
        )
    ));
    let names: Vec<&str> = containers.iter().map(|(n, _)| *n).collect();
    format!(
        r#"set -u
B={bin}
D=/var/lib/crust-aa-{n}
mkdir -p $D/root $D/state $D/net.d $D/logs /var/lib/aa-reg
cat > /etc/aa-registry.yml <<'EOF'
version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/aa-reg
http:
  addr: 127.0.0.1:5055
EOF
systemctl is-active -q aa-registry || {{ cp -a {storage}/. /var/lib/aa-reg/ && systemd-run --quiet --unit=aa-registry docker-registry serve /etc/aa-registry.yml; }}
cat > $D/crust.toml <<EOF
[network]
cni_conf_dir = "$D/net.d"
cni_bin_dirs = ["/usr/lib/cni"]
[cgroup]
monitor_cgroup = "/crust-aa-{n}/monitors"
pod_parent = "/crust-aa-{n}/pods"
[runtime.handlers.runc]
type = "oci"
path = "/usr/sbin/runc"
EOF
systemd-run --quiet --unit=aa-crustd-{n} $B/crustd --config $D/crust.toml --root $D/root --state $D/state --socket $D/state/crust.sock --log-level debug
ctl() {{ $B/crustctl -r unix://$D/state/crust.sock -t 120s "$@"; }}
for i in $(seq 240); do ctl version >/dev/null 2>&1 && break; sleep 0.5; done
ok=0; for i in $(seq 10); do ctl pull {IMAGE} >/dev/null 2>/tmp/err && {{ ok=1; break; }}; sleep 1; done; [ $ok = 1 ] || echo "pull-failed: $(cat /tmp/err)"
echo "default-loaded-before=$(grep -c '^crust-default ' /sys/kernel/security/apparmor/profiles)"
cat > /tmp/deny.aa <<'EOF'
profile crust-test-deny-write flags=(attach_disconnected,mediate_deleted) {{
  file,
  capability,
  network,
  signal,
  umount,
  deny /tmp/blocked w,
}}
EOF
apparmor_parser -Kr /tmp/deny.aa || echo "load-test-profile-failed"
cat > $D/pod.json <<EOF
{{"metadata":{{"name":"aa","namespace":"e2e","uid":"uid-aa"}},"log_directory":"$D/logs","linux":{{"security_context":{{"namespace_options":{{"network":2}}}}}}}}
EOF
{files}
POD=$(ctl runp {runtime} $D/pod.json) || {{ echo "runp-failed"; journalctl -u aa-crustd-{n} --no-pager | tail -40; exit 1; }}
for c in {names}; do
  id=$(ctl create $POD $D/$c.json $D/pod.json 2>/tmp/err) || {{ echo "create-$c-failed: $(cat /tmp/err)"; continue; }}
  ctl start $id >/dev/null 2>/tmp/err || echo "start-$c-failed: $(cat /tmp/err)"
  for i in $(seq 120); do grep -q probe-done $D/logs/$c.log 2>/dev/null && break; sleep 0.5; done
  sed -n 's/^[^ ]* [a-z]* [FP] /'$c': /p' $D/logs/$c.log
  echo "$c: exec-current=$(ctl exec -s $id cat /proc/self/attr/current 2>&1)"
  echo "$c: exec-sysrq=$(ctl exec -s $id sh -c 'echo h > /proc/sysrq-trigger && echo written || echo denied' 2>&1)"
done
ctl create $POD $D/unloaded.json $D/pod.json >/dev/null 2>/tmp/err && echo "unloaded: created" || echo "unloaded: error=$(tr '\n' ' ' </tmp/err)"
echo "default-loaded-after=$(grep -c '^crust-default ' /sys/kernel/security/apparmor/profiles)"
echo "crustd-log-loaded=$(journalctl -u aa-crustd-{n} --no-pager | grep -c 'loaded the default AppArmor profile')"
ctl rmp -f $POD >/dev/null 2>&1 || echo "remove-pod-failed"
systemctl stop aa-crustd-{n}
"#,
        names = names.join(" "),
        runtime = if handler.is_empty() {
            String::new()
        } else {
            format!("--runtime {handler}")
        },
    )
}

/// `name: key=value` and `name: text` lines per container.
fn lines_of(out: &str) -> HashMap<String, Vec<String>> {
    let mut by = HashMap::<String, Vec<String>>::new();
    for line in out.lines() {
        if let Some((name, rest)) = line.split_once(": ") {
            by.entry(name.to_string())
                .or_default()
                .push(rest.trim().to_string());
        }
    }
    by
}

fn check(out: &str, handler_label: &str, all: bool) {
    let by = lines_of(out);
    let has = |name: &str, want: &str| {
        let lines = by.get(name).cloned().unwrap_or_default();
        assert!(
            lines.iter().any(|l| l == want),
            "{handler_label}: {name}: no line {want:?} in {lines:?}\n--- output\n{out}"
        );
    };
    for line in out.lines() {
        assert!(
            !line.contains("-failed"),
            "{handler_label}: {line}\n--- output\n{out}"
        );
    }
    // RuntimeDefault, and no profile at all (CRI: the runtime's default).
    let some = |names: &'static [&'static str]| {
        names
            .iter()
            .copied()
            .filter(move |n| all || !["nothing", "deprecated"].contains(n))
    };
    for name in some(&["default", "nothing"]) {
        has(name, "crust-default (enforce)");
        has(name, "sysrq=denied");
        has(name, "other=written");
        has(name, "exec-current=crust-default (enforce)");
        has(name, "exec-sysrq=denied");
    }
    // The control: the same writes succeed without a profile.
    has("unconfined", "unconfined");
    has("unconfined", "sysrq=written");
    has("unconfined", "blocked=written");
    has("unconfined", "exec-current=unconfined");
    has("unconfined", "exec-sysrq=written");
    for name in some(&["localhost", "deprecated"]) {
        has(name, "crust-test-deny-write (enforce)");
        has(name, "blocked=denied");
        has(name, "other=written");
        has(name, "exec-current=crust-test-deny-write (enforce)");
    }
    let unloaded = by.get("unloaded").cloned().unwrap_or_default().join(" ");
    // crustctl prints the status as crictl (grpc-go) does.
    for want in [
        "rpc error: code = FailedPrecondition desc = ",
        "crust-test-not-loaded",
        "apparmor.localhost_ref",
        "is not loaded",
    ] {
        assert!(
            unloaded.contains(want),
            "{handler_label}: unloaded profile: {want:?} missing in {unloaded:?}\n--- output\n{out}"
        );
    }
}

#[tokio::test]
async fn apparmor_profiles_are_enforced_in_a_real_node() {
    let shared = registry_storage_in_workspace().await;
    let storage = in_guest(&shared.0.join("storage")).unwrap();
    let guest = tokio::task::spawn_blocking(|| Guest::boot("apparmor").expect("boot guest"))
        .await
        .unwrap();
    let guest = std::sync::Arc::new(guest);
    for (n, (handler, label)) in [("", "built-in launcher"), ("runc", "runc")]
        .into_iter()
        .enumerate()
    {
        let script = guest_script(&storage, handler, n);
        let g = guest.clone();
        let out = tokio::task::spawn_blocking(move || g.run_ok(&script, 900))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        eprintln!("--- {label}\n{out}");
        check(&out, label, handler.is_empty());
        if handler.is_empty() {
            assert!(
                out.lines().any(|l| l == "default-loaded-before=0"),
                "the guest starts without crust-default: {out}"
            );
            assert!(
                out.lines().any(|l| l == "default-loaded-after=1")
                    && out.lines().any(|l| l == "crustd-log-loaded=1"),
                "crustd loaded crust-default once: {out}"
            );
        }
    }
}
