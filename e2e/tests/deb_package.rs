//! The Debian package (scripts/build-deb.sh, cargo-deb): built from this tree's debug
//! binaries, its contents and control data read back with dpkg-deb, then installed by
//! dpkg into an empty root (`--root`, maintainer scripts run with DPKG_ROOT set, which
//! keeps them off systemctl) and removed again, conffile kept until purge.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn have_cargo_deb() -> bool {
    Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn debian_package_contents_and_install() {
    if !have_cargo_deb() {
        // scripts/test.sh installs cargo-deb: in CI its absence is a failure.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cargo-deb is missing under CI=true: scripts/test.sh installs it \
             (cargo install cargo-deb --locked)"
        );
        eprintln!("SKIPPED: cargo-deb is not installed (cargo install cargo-deb --locked)");
        return;
    }
    let root = repo();
    let out_dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let deb = out_dir.path().join("crust.deb");
    run(Command::new(root.join("scripts/build-deb.sh"))
        .env("PROFILE", "dev")
        .arg("--output")
        .arg(&deb));

    let info = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    for want in [
        "Package: crust",
        "Architecture: amd64",
        "Section: admin",
        "Recommends: containernetworking-plugins",
        "postinst",
        "prerm",
        "postrm",
        "conffiles",
    ] {
        assert!(info.contains(want), "dpkg-deb -I lacks {want:?}:\n{info}");
    }
    let depends = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("no Depends:\n{info}"));
    assert!(depends.contains("libc6"), "{depends}");
    let package = run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Package"));
    assert_eq!(package.trim(), "crust");
    let ctrl = tempfile::tempdir_in("/var/tmp").unwrap();
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(ctrl.path()));
    assert_eq!(
        std::fs::read_to_string(ctrl.path().join("conffiles"))
            .unwrap()
            .trim(),
        "/etc/crust/crust.toml"
    );

    // Paths, modes and owner (cargo-deb writes uid/gid 0 without names): `-rwxr-xr-x 0/0 ... ./usr/bin/crustd`.
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let entry = |path: &str| -> (String, String) {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" .{path}")))
            .unwrap_or_else(|| panic!("{path} not in the package:\n{listing}"));
        let cells: Vec<&str> = line.split_whitespace().collect();
        (cells[0].to_string(), cells[1].to_string())
    };
    for bin in ["crustd", "crust-monitor", "crustctl"] {
        assert_eq!(
            entry(&format!("/usr/bin/{bin}")),
            ("-rwxr-xr-x".into(), "0/0".into()),
            "{bin}"
        );
    }
    for file in [
        "/lib/systemd/system/crust.service",
        "/etc/crust/crust.toml",
        "/usr/share/doc/crust/examples/crictl.yaml",
        "/usr/share/doc/crust/operations.md",
    ] {
        assert_eq!(entry(file).0, "-rw-r--r--", "{file}");
    }

    // dpkg into an empty root: its database made as dpkg expects, scripts chrootless.
    let target = tempfile::tempdir_in("/var/tmp").unwrap();
    let t = target.path();
    for dir in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        std::fs::create_dir_all(t.join(dir)).unwrap();
    }
    std::fs::write(t.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(t.join("var/lib/dpkg/available"), "").unwrap();
    let dpkg = |args: &[&str]| {
        run(Command::new("dpkg")
            .arg(format!("--root={}", t.display()))
            .args([
                "--force-script-chrootless",
                "--force-depends",
                "--log=/dev/null",
            ])
            .args(args)
            // dpkg looks for its helpers on PATH; a PATH without /sbin fails.
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
    };
    dpkg(&["-i", deb.to_str().unwrap()]);
    let unit = std::fs::read_to_string(t.join("lib/systemd/system/crust.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/crustd --config /etc/crust/crust.toml"),
        "{unit}"
    );
    assert!(!unit.contains("@PREFIX@"), "{unit}");
    let version = run(Command::new(t.join("usr/bin/crustctl")).arg("--version"));
    assert!(version.starts_with("crustctl "), "{version}");
    run(Command::new(t.join("usr/bin/crustd")).args([
        "config",
        "check",
        t.join("etc/crust/crust.toml").to_str().unwrap(),
    ]));
    let status = run(Command::new("dpkg-query")
        .arg(format!("--admindir={}", t.join("var/lib/dpkg").display()))
        .args(["-W", "-f", "${Status}", "crust"]));
    assert_eq!(status, "install ok installed");

    // An edited conffile survives removal; purge takes it.
    std::fs::write(t.join("etc/crust/crust.toml"), "# edited\n").unwrap();
    dpkg(&["-r", "crust"]);
    assert!(!t.join("usr/bin/crustd").exists(), "binaries removed");
    assert_eq!(
        std::fs::read_to_string(t.join("etc/crust/crust.toml")).unwrap(),
        "# edited\n"
    );
    dpkg(&["-P", "crust"]);
    assert!(!t.join("etc/crust/crust.toml").exists(), "purged");
}
