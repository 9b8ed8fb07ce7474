//! Reading, merging and checking configuration files.

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

use toml::{Table, Value};

use super::{Config, LogFormat, validate::validate};

/// Values given on the command line; they win over every file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub root: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
}

/// A configuration problem. The message names the file (or "command line", or
/// "defaults") and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("read drop-in directory {path}: {source}")]
    DropInDir { path: PathBuf, source: io::Error },
    #[error("{origin}: invalid TOML: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: key `{key}`: {message}")]
    Key {
        origin: String,
        key: String,
        message: String,
    },
}

/// The merged configuration and the files it came from, in the order applied.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub files: Vec<PathBuf>,
}

const COMMAND_LINE: &str = "command line";

/// Loads `path`, its drop-ins (`<path>.d/*.toml`, lexical order) and `overrides`.
///
/// A missing main file means built-in defaults when `required` is false (the default
/// path); when the operator named the file (`required`), it must exist.
pub fn load(path: &Path, required: bool, overrides: &Overrides) -> Result<Loaded, ConfigError> {
    let mut files = Vec::new();
    match fs::metadata(path) {
        Ok(_) => files.push(path.to_path_buf()),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !required => {}
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    files.extend(drop_ins(path)?);

    // Files merge over the defaults, so a drop-in that adds a handler keeps the
    // built-in one rather than replacing the whole table.
    let mut merged = match Value::try_from(Config::default()) {
        Ok(Value::Table(table)) => table,
        _ => unreachable!("Config serializes to a TOML table"),
    };
    let mut origins = BTreeMap::new();
    for file in &files {
        let text = fs::read_to_string(file).map_err(|source| ConfigError::Read {
            path: file.clone(),
            source,
        })?;
        let origin = file.display().to_string();
        let table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax {
                origin: origin.clone(),
                message: e.to_string(),
            })?;
        // Check each file on its own first, so an unknown key or a bad value is blamed
        // on the file that has it rather than on the merge.
        deserialize(&table, |_| origin.clone())?;
        merge(&mut merged, table, "", &origin, &mut origins);
    }
    apply_overrides(&mut merged, overrides, &mut origins);

    let blame = |key: &str| origin_of(&origins, key);
    let config = deserialize(&merged, blame)?;
    if let Some((key, message)) = validate(&config).into_iter().next() {
        return Err(ConfigError::Key {
            origin: blame(&key),
            key,
            message,
        });
    }
    // The files crustd reads because the config names them are checked here too, so
    // `crustd config check` and start-up refuse them rather than every pull failing
    // later.
    if let Some(conf) = &config.image.registries_conf {
        let key = "image.registries_conf";
        crust_image::Registries::load(conf).map_err(|e| ConfigError::Key {
            origin: blame(key),
            key: key.into(),
            message: e.to_string(),
        })?;
        files.push(conf.clone());
    }
    Ok(Loaded { config, files })
}

/// Drop-in files of `path`, sorted by name. A missing directory has none.
fn drop_ins(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let mut dir = path.as_os_str().to_owned();
    dir.push(".d");
    let dir = PathBuf::from(dir);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ConfigError::DropInDir { path: dir, source }),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ConfigError::DropInDir {
            path: dir.clone(),
            source,
        })?;
        let file = entry.path();
        if file.extension().is_some_and(|e| e == "toml") && file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

fn deserialize(table: &Table, blame: impl Fn(&str) -> String) -> Result<Config, ConfigError> {
    serde_path_to_error::deserialize(Value::Table(table.clone())).map_err(|e| {
        let key = e.path().to_string();
        let message = e.inner().message().to_string();
        ConfigError::Key {
            origin: blame(&key),
            key,
            message,
        }
    })
}

/// Merges `from` into `into`: tables key by key, everything else replaced. Records
/// which origin set each leaf so later errors can name the file.
fn merge(
    into: &mut Table,
    from: Table,
    prefix: &str,
    origin: &str,
    origins: &mut BTreeMap<String, String>,
) {
    for (key, value) in from {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (into.get_mut(&key), value) {
            (Some(Value::Table(existing)), Value::Table(table)) => {
                merge(existing, table, &path, origin, origins)
            }
            (_, value) => {
                if let Value::Table(table) = &value {
                    record_origins(table, &path, origin, origins);
                }
                origins.insert(path, origin.to_string());
                into.insert(key, value);
            }
        }
    }
}

fn record_origins(
    table: &Table,
    prefix: &str,
    origin: &str,
    origins: &mut BTreeMap<String, String>,
) {
    for (key, value) in table {
        let path = format!("{prefix}.{key}");
        if let Value::Table(t) = value {
            record_origins(t, &path, origin, origins);
        }
        origins.insert(path, origin.to_string());
    }
}

fn apply_overrides(table: &mut Table, o: &Overrides, origins: &mut BTreeMap<String, String>) {
    let path_str = |p: &PathBuf| Value::String(p.display().to_string());
    let values = [
        ("root", o.root.as_ref().map(path_str)),
        ("state", o.state.as_ref().map(path_str)),
        ("socket", o.socket.as_ref().map(path_str)),
        ("log_level", o.log_level.clone().map(Value::String)),
        (
            "log_format",
            o.log_format.map(|f| {
                Value::String(match f {
                    LogFormat::Text => "text".into(),
                    LogFormat::Json => "json".into(),
                })
            }),
        ),
    ];
    for (key, value) in values {
        if let Some(value) = value {
            table.insert(key.into(), value);
            origins.insert(key.into(), COMMAND_LINE.into());
        }
    }
}

/// The origin of `key` or of its closest parent that has one; "defaults" otherwise.
fn origin_of(origins: &BTreeMap<String, String>, key: &str) -> String {
    let mut key = key;
    loop {
        if let Some(origin) = origins.get(key) {
            return origin.clone();
        }
        match key.rfind(['.', '[']) {
            Some(i) => key = &key[..i],
            None => return "defaults".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CgroupDriver, DEFAULT_TOML, HandlerKind};

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new(main: Option<&str>, drop_ins: &[(&str, &str)]) -> Files {
            let dir = tempfile::tempdir().unwrap();
            if let Some(main) = main {
                fs::write(dir.path().join("crust.toml"), main).unwrap();
            }
            if !drop_ins.is_empty() {
                fs::create_dir(dir.path().join("crust.toml.d")).unwrap();
            }
            for (name, text) in drop_ins {
                fs::write(dir.path().join("crust.toml.d").join(name), text).unwrap();
            }
            Files { dir }
        }
        fn main(&self) -> PathBuf {
            self.dir.path().join("crust.toml")
        }
        fn load(&self, required: bool, o: &Overrides) -> Result<Loaded, ConfigError> {
            load(&self.main(), required, o)
        }
    }

    #[test]
    fn default_template_is_exactly_the_defaults() {
        let table: Table = DEFAULT_TOML.parse().unwrap();
        let parsed: Config = Value::Table(table.clone()).try_into().unwrap();
        assert_eq!(parsed, Config::default());
        // Every key the defaults serialize is present in the template (nothing left out).
        let defaults: Table = Value::try_from(Config::default())
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(table, defaults, "template and Config::default() differ");
    }

    #[test]
    fn missing_default_file_means_defaults() {
        let f = Files::new(None, &[]);
        let loaded = f.load(false, &Overrides::default()).unwrap();
        assert_eq!(loaded.config, Config::default());
        assert!(loaded.files.is_empty());
    }

    #[test]
    fn a_broken_registries_conf_is_a_config_error() {
        let f = Files::new(None, &[]);
        let conf = f.dir.path().join("registries.conf");
        fs::write(&conf, "unqualified-search-registry = [\"docker.io\"]\n").unwrap();
        fs::write(
            f.main(),
            format!("[image]\nregistries_conf = \"{}\"\n", conf.display()),
        )
        .unwrap();
        let msg = f.load(true, &Overrides::default()).unwrap_err().to_string();
        for part in [
            "crust.toml",
            "image.registries_conf",
            "registries.conf",
            "unqualified-search-registry",
        ] {
            assert!(msg.contains(part), "{part}: {msg}");
        }
        fs::remove_file(&conf).unwrap();
        let msg = f.load(true, &Overrides::default()).unwrap_err().to_string();
        assert!(msg.contains("read registries.conf"), "{msg}");
    }

    #[test]
    fn missing_named_file_is_an_error() {
        let f = Files::new(None, &[]);
        let err = f.load(true, &Overrides::default()).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
        assert!(err.to_string().contains("crust.toml"), "{err}");
    }

    #[test]
    fn drop_ins_merge_in_lexical_order_and_flags_win() {
        let f = Files::new(
            Some(
                "root = \"/srv/a\"\nlog_level = \"debug\"\n[network]\ncni_bin_dirs = [\"/x\", \"/y\"]\n",
            ),
            &[
                (
                    "20-later.toml",
                    "root = \"/srv/c\"\n[runtime.handlers.runc]\ntype = \"oci\"\npath = \"/usr/bin/runc\"\n",
                ),
                (
                    "10-first.toml",
                    "root = \"/srv/b\"\n[network]\ncni_bin_dirs = [\"/z\"]\n[cgroup]\ndriver = \"systemd\"\n",
                ),
                ("30-ignored.conf", "this is not toml and is not a drop-in"),
            ],
        );
        let overrides = Overrides {
            state: Some("/run/other".into()),
            ..Overrides::default()
        };
        let loaded = f.load(true, &overrides).unwrap();
        let c = &loaded.config;
        assert_eq!(c.root, PathBuf::from("/srv/c"), "last drop-in wins");
        assert_eq!(c.state, PathBuf::from("/run/other"), "flag wins");
        assert_eq!(c.log_level, "debug", "main file value kept");
        assert_eq!(
            c.network.cni_bin_dirs,
            vec![PathBuf::from("/z")],
            "arrays are replaced, not appended"
        );
        assert_eq!(
            c.network.cni_conf_dir,
            PathBuf::from("/etc/cni/net.d"),
            "untouched keys keep defaults"
        );
        assert_eq!(c.cgroup.driver, CgroupDriver::Systemd);
        assert_eq!(
            c.runtime.handlers.len(),
            2,
            "handler tables merge: {:?}",
            c.runtime.handlers
        );
        assert_eq!(c.runtime.handlers["runc"].kind, HandlerKind::Oci);
        let names: Vec<_> = loaded
            .files
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, vec!["crust.toml", "10-first.toml", "20-later.toml"]);
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        // (main file, drop-ins, overrides, file blamed, key named, text in message)
        let bad_flag = Overrides {
            log_level: Some("[[[".into()),
            ..Overrides::default()
        };
        let none = Overrides::default();
        type Case<'a> = (
            Option<&'a str>,
            &'a [(&'a str, &'a str)],
            &'a Overrides,
            &'a str,
            &'a str,
            &'a str,
        );
        let cases: &[Case] = &[
            (
                Some("bogus = 1\n"),
                &[],
                &none,
                "crust.toml",
                "bogus",
                "unknown field",
            ),
            (
                Some("[network]\ncni_conf_dirr = \"/x\"\n"),
                &[],
                &none,
                "crust.toml",
                "network",
                "cni_conf_dirr",
            ),
            (
                None,
                &[("50-x.toml", "[cgroup]\ndriver = \"systemdd\"\n")],
                &none,
                "50-x.toml",
                "cgroup.driver",
                "systemdd",
            ),
            (
                Some("shutdown_timeout = \"soon\"\n"),
                &[],
                &none,
                "crust.toml",
                "shutdown_timeout",
                "invalid duration",
            ),
            (
                Some("[streaming]\naddress = \"localhost\"\n"),
                &[],
                &none,
                "crust.toml",
                "streaming.address",
                "invalid",
            ),
            (
                Some("root = \"relative/dir\"\n"),
                &[],
                &none,
                "crust.toml",
                "root",
                "absolute",
            ),
            (
                Some("[runtime]\ndefault_handler = \"nope\"\n"),
                &[],
                &none,
                "crust.toml",
                "runtime.default_handler",
                "nope",
            ),
            (
                None,
                &[("10.toml", "[runtime.handlers.runc]\ntype = \"oci\"\n")],
                &none,
                "10.toml",
                "runtime.handlers.runc.path",
                "required",
            ),
            (
                Some("[runtime.handlers.Bad_Name]\ntype = \"builtin\"\n"),
                &[],
                &none,
                "crust.toml",
                "runtime.handlers.Bad_Name",
                "DNS label",
            ),
            (
                Some("[network]\ncni_bin_dirs = []\n"),
                &[],
                &none,
                "crust.toml",
                "network.cni_bin_dirs",
                "empty",
            ),
            (
                Some("[image]\nregistries_conf = \"r.conf\"\n"),
                &[],
                &none,
                "crust.toml",
                "image.registries_conf",
                "absolute",
            ),
            (None, &[], &bad_flag, "command line", "log_level", "filter"),
            (
                Some("root = [\n"),
                &[],
                &none,
                "crust.toml",
                "",
                "invalid TOML",
            ),
        ];
        for (main, drop_ins, overrides, file, key, text) in cases {
            let f = Files::new(*main, drop_ins);
            let err = f.load(false, overrides).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(file),
                "{main:?} {drop_ins:?}: {msg:?} should blame {file:?}"
            );
            assert!(
                msg.contains(&format!("`{key}")) || key.is_empty(),
                "{msg:?} should name key {key:?}"
            );
            assert!(msg.contains(text), "{msg:?} should contain {text:?}");
        }
    }

    #[test]
    fn origin_falls_back_to_parents() {
        let origins = BTreeMap::from([("network".to_string(), "a.toml".to_string())]);
        assert_eq!(origin_of(&origins, "network.cni_bin_dirs[0]"), "a.toml");
        assert_eq!(origin_of(&origins, "root"), "defaults");
    }
}
