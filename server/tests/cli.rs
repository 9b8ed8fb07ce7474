//! The `crustd` command line, without starting the daemon.

use std::{fs, process::Command};

fn crustd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_crustd"))
        .args(args)
        .output()
        .expect("run crustd")
}

#[test]
fn config_default_is_accepted_by_config_check() {
    let out = crustd(&["config", "default"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for key in [
        "root = ",
        "state = ",
        "[image]",
        "registries_conf",
        "cni_conf_dir",
        "cni_bin_dirs",
        "[cgroup]",
        "driver = \"cgroupfs\"",
        "[streaming]",
        "default_handler",
        "[runtime.handlers.crust]",
        "[metrics]",
    ] {
        assert!(text.contains(key), "default config lacks {key:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("crust.toml");
    fs::write(&file, &text).unwrap();
    let out = crustd(&["config", "check", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("crust.toml: ok"));
}

#[test]
fn config_check_reads_drop_ins_and_names_the_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("crust.toml");
    fs::write(&file, "root = \"/var/lib/crust-test\"\n").unwrap();
    fs::create_dir(dir.path().join("crust.toml.d")).unwrap();
    fs::write(
        dir.path().join("crust.toml.d/10-ok.toml"),
        "[cgroup]\ndriver = \"systemd\"\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("crust.toml.d/20-bad.toml"),
        "[streaming]\nadress = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let out = crustd(&["config", "check", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("20-bad.toml") && err.contains("adress"),
        "{err}"
    );
}

#[test]
fn config_check_and_start_refuse_a_misspelt_registries_conf() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("registries.conf");
    fs::write(
        &conf,
        "[[registry]]\nlocation = \"docker.io\"\n[[registry.mirrors]]\nlocation = \"127.0.0.1:5000\"\n",
    )
    .unwrap();
    let file = dir.path().join("crust.toml");
    let root = dir.path().join("root");
    let state = dir.path().join("state");
    fs::write(
        &file,
        format!(
            "root = \"{}\"\nstate = \"{}\"\n[image]\nregistries_conf = \"{}\"\n",
            root.display(),
            state.display(),
            conf.display()
        ),
    )
    .unwrap();
    let names_it = |out: &std::process::Output| {
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("registries.conf") && err.contains("mirrors"),
            "{err}"
        );
    };
    names_it(&crustd(&["config", "check", file.to_str().unwrap()]));
    // The daemon refuses to start on it rather than failing every pull later.
    let socket = dir.path().join("crust.sock");
    names_it(&crustd(&[
        "--config",
        file.to_str().unwrap(),
        "--socket",
        socket.to_str().unwrap(),
    ]));
    assert!(!socket.exists());

    fs::write(
        &conf,
        "[[registry]]\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"127.0.0.1:5000\"\n",
    )
    .unwrap();
    let out = crustd(&["config", "check", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("registries.conf: ok"));
}

#[test]
fn config_check_of_a_missing_file_fails() {
    let out = crustd(&["config", "check", "/nonexistent/crust.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/crust.toml"));
}

#[test]
fn help_lists_the_flags() {
    let out = crustd(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--root",
        "--state",
        "--socket",
        "--log-level",
        "--log-format",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}: {text}");
    }
}

/// docs/configuration.md's reference table names every key `crustd config default`
/// prints (set or commented out), so a new key cannot land undocumented.
#[test]
fn every_config_key_is_documented() {
    let out = crustd(&["config", "default"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let docs = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/configuration.md"
    ))
    .expect("read docs/configuration.md");
    let mut section = String::new();
    let mut missing = Vec::new();
    let mut checked = 0;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            // Handler tables are documented once for every handler name.
            section = match name.strip_prefix("runtime.handlers.") {
                Some(_) => "runtime.handlers.<name>".to_string(),
                None => name.to_string(),
            };
            continue;
        }
        let setting = line.strip_prefix("# ").unwrap_or(line);
        let Some((key, _)) = setting.split_once(" = ") else {
            continue;
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            continue;
        }
        let cell = if section.is_empty() {
            format!("| `{key}` |")
        } else {
            format!("| `[{section}] {key}` |")
        };
        checked += 1;
        if !docs.contains(&cell) {
            missing.push(cell);
        }
    }
    assert!(checked >= 25, "parsed only {checked} keys from:\n{text}");
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks rows for {missing:?}"
    );
}
