//! Discovery of the default CNI network, as libcni's `ConfFiles` and the kubelet-era
//! runtimes do it: the lexically first valid `.conf`, `.conflist` or `.json` file in the
//! configuration directory names the pod network.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use serde_json::Value;

/// The network a pod would join.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CniNetwork {
    pub name: String,
    pub cni_version: String,
    /// The file it was read from.
    pub file: PathBuf,
    /// Plugin `type`s in chain order.
    pub plugins: Vec<String>,
    /// Where each plugin binary was found, in chain order.
    pub plugin_paths: Vec<PathBuf>,
    /// The whole configuration as a conflist (a single-plugin `.conf` is wrapped into
    /// one), which is what plugins are fed from.
    #[serde(skip)]
    pub config: Value,
}

/// Why there is no usable pod network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("read CNI config directory {dir}: {source}")]
    ConfDir { dir: PathBuf, source: io::Error },
    #[error("no valid CNI network config in {dir}{}", skipped_text(.skipped))]
    NoConfig {
        dir: PathBuf,
        skipped: Vec<(PathBuf, String)>,
    },
    #[error("CNI plugin {plugin:?} used by {file} not found in {dirs:?}")]
    PluginMissing {
        plugin: String,
        file: PathBuf,
        dirs: Vec<PathBuf>,
    },
    #[error("CNI plugin {plugin} {command}: {message}")]
    Plugin {
        plugin: String,
        command: &'static str,
        message: String,
    },
    #[error("CNI result cache {path}: {source}")]
    Cache { path: PathBuf, source: io::Error },
    #[error("annotation {key}: {reason}")]
    InvalidAnnotation { key: String, reason: String },
    #[error("interface counters: {op} network namespace {netns}: {source}")]
    NetDev {
        op: &'static str,
        netns: PathBuf,
        source: io::Error,
    },
}

fn skipped_text(skipped: &[(PathBuf, String)]) -> String {
    skipped
        .iter()
        .map(|(file, why)| format!("; skipped {}: {why}", file.display()))
        .collect()
}

/// Finds the default CNI network in `conf_dir` and checks that every plugin it chains
/// is an executable file in one of `bin_dirs` (searched in order). Invalid files are
/// skipped, as libcni does; they are named in the error if nothing valid remains.
/// Reads the filesystem only; safe to call on every `Status`.
pub fn default_network(conf_dir: &Path, bin_dirs: &[PathBuf]) -> Result<CniNetwork, NetworkError> {
    let mut files: Vec<PathBuf> = fs::read_dir(conf_dir)
        .and_then(|entries| entries.map(|e| e.map(|e| e.path())).collect())
        .map_err(|source| NetworkError::ConfDir {
            dir: conf_dir.to_path_buf(),
            source,
        })?;
    files.retain(|f| {
        f.is_file()
            && matches!(
                f.extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist" | "json")
            )
    });
    files.sort();

    let mut skipped = Vec::new();
    for file in files {
        match parse(&file) {
            Ok((name, cni_version, plugins, config)) => {
                let plugin_paths = plugins
                    .iter()
                    .map(|plugin| {
                        find_plugin(plugin, bin_dirs).ok_or_else(|| NetworkError::PluginMissing {
                            plugin: plugin.clone(),
                            file: file.clone(),
                            dirs: bin_dirs.to_vec(),
                        })
                    })
                    .collect::<Result<_, _>>()?;
                return Ok(CniNetwork {
                    name,
                    cni_version,
                    file,
                    plugins,
                    plugin_paths,
                    config,
                });
            }
            Err(why) => skipped.push((file, why)),
        }
    }
    Err(NetworkError::NoConfig {
        dir: conf_dir.to_path_buf(),
        skipped,
    })
}

/// Parses a `.conflist` (`plugins` array) or a single-plugin `.conf` (`type` at the top).
fn parse(file: &Path) -> Result<(String, String, Vec<String>, Value), String> {
    let bytes = fs::read(file).map_err(|e| e.to_string())?;
    let json: Value = serde_json::from_slice(&bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    let text = |key: &str| json.get(key).and_then(Value::as_str).map(str::to_string);
    let name = text("name")
        .filter(|n| !n.is_empty())
        .ok_or("missing \"name\"")?;
    let cni_version = text("cniVersion").unwrap_or_default();
    let plugins = match json.get("plugins") {
        Some(Value::Array(list)) => list
            .iter()
            .map(|p| {
                p.get("type")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or("a plugin has no \"type\"")
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("\"plugins\" is not an array".into()),
        None => vec![text("type").ok_or("neither \"plugins\" nor \"type\"")?],
    };
    if plugins.is_empty() {
        return Err("\"plugins\" is empty".into());
    }
    let config = if json.get("plugins").is_some() {
        json
    } else {
        let mut plugin = json.clone();
        if let Some(map) = plugin.as_object_mut() {
            map.remove("name");
            map.remove("cniVersion");
        }
        serde_json::json!({"cniVersion": cni_version, "name": name, "plugins": [plugin]})
    };
    Ok((name, cni_version, plugins, config))
}

pub(crate) fn find_plugin(plugin: &str, bin_dirs: &[PathBuf]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    // A plugin type is a bare file name; anything with a slash would escape the dirs.
    if plugin.contains('/') || plugin.is_empty() {
        return None;
    }
    bin_dirs.iter().map(|d| d.join(plugin)).find(|p| {
        fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Fixture {
        _dir: tempfile::TempDir,
        conf: PathBuf,
        bins: Vec<PathBuf>,
    }

    fn fixture(files: &[(&str, &str)], plugins: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("net.d");
        let bin = dir.path().join("bin");
        fs::create_dir_all(&conf).unwrap();
        fs::create_dir_all(&bin).unwrap();
        for (name, content) in files {
            fs::write(conf.join(name), content).unwrap();
        }
        for plugin in plugins {
            let path = bin.join(plugin);
            fs::write(&path, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        Fixture {
            bins: vec![dir.path().join("missing-bin"), bin],
            conf,
            _dir: dir,
        }
    }

    const CONFLIST: &str = r#"{"cniVersion":"1.0.0","name":"podnet","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#;

    #[test]
    fn first_valid_file_wins() {
        let f = fixture(
            &[
                ("10-podnet.conflist", CONFLIST),
                (
                    "20-other.conf",
                    r#"{"cniVersion":"0.4.0","name":"other","type":"bridge"}"#,
                ),
            ],
            &["bridge", "portmap"],
        );
        let net = default_network(&f.conf, &f.bins).unwrap();
        assert_eq!(net.name, "podnet");
        assert_eq!(net.cni_version, "1.0.0");
        assert_eq!(net.plugins, vec!["bridge", "portmap"]);
        assert_eq!(
            net.plugin_paths,
            vec![f.bins[1].join("bridge"), f.bins[1].join("portmap")]
        );
    }

    #[test]
    fn single_plugin_conf_is_a_one_plugin_chain() {
        let f = fixture(
            &[(
                "99.conf",
                r#"{"cniVersion":"0.4.0","name":"solo","type":"bridge"}"#,
            )],
            &["bridge"],
        );
        let net = default_network(&f.conf, &f.bins).unwrap();
        assert_eq!(
            (net.name.as_str(), net.plugins.clone()),
            ("solo", vec!["bridge".to_string()])
        );
    }

    #[test]
    fn invalid_files_are_skipped() {
        let f = fixture(
            &[
                ("00-broken.conflist", "{not json"),
                ("01-noname.conflist", r#"{"plugins":[{"type":"bridge"}]}"#),
                ("02-readme.txt", "ignored: wrong extension"),
                ("10-podnet.conflist", CONFLIST),
            ],
            &["bridge", "portmap"],
        );
        assert_eq!(default_network(&f.conf, &f.bins).unwrap().name, "podnet");
    }

    #[test]
    fn errors_name_what_is_wrong() {
        // (files, plugins installed, text the error must contain)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
        let cases: &[Case] = &[
            (&[], &[], "no valid CNI network config"),
            (&[("a.conflist", "{")], &[], "skipped"),
            (
                &[("a.conflist", r#"{"name":"n","plugins":[]}"#)],
                &[],
                "\"plugins\" is empty",
            ),
            (
                &[("a.conflist", r#"{"name":"n","plugins":[{}]}"#)],
                &[],
                "no \"type\"",
            ),
            (&[("a.conflist", CONFLIST)], &["bridge"], "\"portmap\""),
            (
                &[("a.conflist", r#"{"name":"n","type":"../../bin/sh"}"#)],
                &[],
                "not found",
            ),
        ];
        for (files, plugins, text) in cases {
            let f = fixture(files, plugins);
            let err = default_network(&f.conf, &f.bins).unwrap_err().to_string();
            assert!(
                err.contains(text),
                "files {files:?}: error {err:?} should contain {text:?}"
            );
        }
    }

    #[test]
    fn missing_conf_dir_is_reported() {
        let err = default_network(Path::new("/nonexistent/net.d"), &[]).unwrap_err();
        assert!(matches!(err, NetworkError::ConfDir { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/net.d"));
    }

    #[test]
    fn non_executable_plugin_is_not_found() {
        let f = fixture(&[("a.conflist", CONFLIST)], &["bridge", "portmap"]);
        fs::set_permissions(f.bins[1].join("portmap"), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            default_network(&f.conf, &f.bins),
            Err(NetworkError::PluginMissing { .. })
        ));
    }
}
