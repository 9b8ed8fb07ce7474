//! CDI (Container Device Interface) devices, as DRA drivers and device plugins ask for
//! them (`ContainerConfig.CDI_devices`, fully qualified names `vendor.com/class=name`):
//! the specs are read from the configured directories (`/etc/cdi`, `/var/run/cdi`; a
//! later directory overrides an earlier one, as in the CDI reference library) and each
//! requested device's `containerEdits`, plus its spec's own once, are applied to the
//! container: environment, device nodes (with the device cgroup rules), bind mounts and
//! additional groups, and OCI hooks (run by either launcher from the OCI spec). Edits
//! crust cannot apply (network devices, Intel RDT, mounts other than binds) are refused
//! naming the device, never dropped.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::{ContainerSpec, DeviceSpec, HookSpec, HookStage, MountSpec, Propagation};

/// A CDI spec file is small; a larger one is refused rather than read into memory.
const MAX_SPEC_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CdiError {
    #[error("CDI device name {name:?} is not fully qualified (vendor.com/class=name)")]
    BadName { name: String },
    #[error("CDI device {name} is not defined by any spec in {dirs}")]
    Unresolved { name: String, dirs: String },
    #[error("CDI spec {path}: {reason}")]
    BadSpec { path: PathBuf, reason: String },
    #[error("CDI device {name} is defined twice in {dir}: {first} and {second}")]
    Conflict {
        name: String,
        dir: PathBuf,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("CDI device {name} ({path}): {what} are not supported by crust yet")]
    Unsupported {
        name: String,
        path: PathBuf,
        what: &'static str,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    cdi_version: String,
    kind: String,
    #[serde(default)]
    devices: Vec<Device>,
    #[serde(default)]
    container_edits: Option<Edits>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Device {
    name: String,
    #[serde(default)]
    container_edits: Edits,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Edits {
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    mounts: Vec<CdiMount>,
    #[serde(default)]
    hooks: Vec<CdiHook>,
    #[serde(default)]
    net_devices: Vec<serde_json::Value>,
    #[serde(default)]
    intel_rdt: Option<serde_json::Value>,
    #[serde(default)]
    additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceNode {
    path: String,
    #[serde(default)]
    host_path: Option<String>,
    #[serde(default)]
    permissions: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CdiMount {
    host_path: String,
    container_path: String,
    #[serde(default)]
    options: Vec<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// CDI's `Hook`: the OCI hook plus the stage it belongs to.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CdiHook {
    hook_name: String,
    path: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    timeout: Option<i64>,
}

/// CDI hook names are the OCI stage names (CDI spec: `hookName`).
fn stage(name: &str) -> Option<HookStage> {
    Some(match name {
        "prestart" => HookStage::Prestart,
        "createRuntime" => HookStage::CreateRuntime,
        "createContainer" => HookStage::CreateContainer,
        "startContainer" => HookStage::StartContainer,
        "poststart" => HookStage::Poststart,
        "poststop" => HookStage::Poststop,
        _ => return None,
    })
}

/// Checks a spec's hooks when it is read, so a bad one names its file.
fn check_hooks(e: &Edits) -> Result<(), String> {
    for h in &e.hooks {
        if stage(&h.hook_name).is_none() {
            return Err(format!(
                "hook {}: unknown hookName {:?}",
                h.path, h.hook_name
            ));
        }
        if !h.path.starts_with('/') {
            return Err(format!("hook path {:?} is not absolute", h.path));
        }
        if h.timeout.is_some_and(|t| t <= 0) {
            return Err(format!("hook {}: timeout must be positive", h.path));
        }
    }
    Ok(())
}

/// One spec file's devices, by qualified name.
struct Loaded {
    path: PathBuf,
    devices: HashMap<String, Edits>,
    spec_edits: Edits,
}

/// Applies the CDI devices `names` (in order, each once) to `spec`, from the specs in
/// `dirs`. Nothing is changed when an error is returned. Reads only the directories.
///
/// ```
/// use crust_runtime::container::{ContainerSpec, apply_cdi_devices};
/// let mut spec = ContainerSpec::default();
/// // No devices asked: nothing is read, nothing changes.
/// apply_cdi_devices(&mut spec, &[], &["/nonexistent/cdi".into()]).unwrap();
/// assert!(spec.devices.is_empty());
/// ```
pub fn apply_cdi_devices(
    spec: &mut ContainerSpec,
    names: &[String],
    dirs: &[PathBuf],
) -> Result<(), CdiError> {
    if names.is_empty() {
        return Ok(());
    }
    for name in names {
        qualified(name)?;
    }
    let registry = load(dirs)?;
    let mut out = spec.clone();
    let mut specs_applied: Vec<&Path> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for name in names {
        if seen.contains(&name.as_str()) {
            continue;
        }
        seen.push(name);
        let Some(loaded) = registry.iter().rev().find(|l| l.devices.contains_key(name)) else {
            return Err(CdiError::Unresolved {
                name: name.clone(),
                dirs: dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        // A spec's own edits apply once, however many of its devices are asked for.
        if !specs_applied.contains(&loaded.path.as_path()) {
            specs_applied.push(&loaded.path);
            apply(&mut out, name, &loaded.path, &loaded.spec_edits)?;
        }
        apply(&mut out, name, &loaded.path, &loaded.devices[name])?;
    }
    *spec = out;
    Ok(())
}

/// `vendor.com/class=name`: a vendor with a dot-free or dotted domain, a class, a name.
fn qualified(name: &str) -> Result<(), CdiError> {
    let bad = || CdiError::BadName { name: name.into() };
    let (kind, device) = name.split_once('=').ok_or_else(bad)?;
    let (vendor, class) = kind.split_once('/').ok_or_else(bad)?;
    let ok_part = |s: &str, extra: &[char]| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
    };
    if ok_part(vendor, &['.', '-', '_'])
        && ok_part(class, &['-', '_'])
        && ok_part(device, &['-', '_', '.', ':'])
    {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Every spec in `dirs`, in directory order (a later one overrides); files in one
/// directory in name order. A missing directory has no specs.
fn load(dirs: &[PathBuf]) -> Result<Vec<Loaded>, CdiError> {
    let mut out: Vec<Loaded> = Vec::new();
    for dir in dirs {
        let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("json" | "yaml" | "yml")
                    )
                })
                .collect(),
            Err(_) => continue,
        };
        files.sort();
        let first_of_dir = out.len();
        for path in files {
            let loaded = load_file(&path)?;
            for name in loaded.devices.keys() {
                if let Some(other) = out[first_of_dir..]
                    .iter()
                    .find(|l| l.devices.contains_key(name))
                {
                    return Err(CdiError::Conflict {
                        name: name.clone(),
                        dir: dir.clone(),
                        first: other.path.clone(),
                        second: path.clone(),
                    });
                }
            }
            out.push(loaded);
        }
    }
    Ok(out)
}

fn load_file(path: &Path) -> Result<Loaded, CdiError> {
    let bad = |reason: String| CdiError::BadSpec {
        path: path.to_path_buf(),
        reason,
    };
    let meta = fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() || meta.len() > MAX_SPEC_BYTES {
        return Err(bad(format!(
            "not a regular file of at most {MAX_SPEC_BYTES} bytes"
        )));
    }
    let text = fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let spec: Spec = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?
    } else {
        serde_yaml::from_str(&text).map_err(|e| bad(e.to_string()))?
    };
    if !spec.cdi_version.starts_with("0.") {
        return Err(bad(format!(
            "cdiVersion {} is not supported (0.x)",
            spec.cdi_version
        )));
    }
    let mut devices = HashMap::new();
    if let Some(e) = &spec.container_edits {
        check_hooks(e).map_err(bad)?;
    }
    for d in spec.devices {
        check_hooks(&d.container_edits).map_err(bad)?;
        let name = format!("{}={}", spec.kind, d.name);
        qualified(&name).map_err(|e| bad(e.to_string()))?;
        if devices.insert(name.clone(), d.container_edits).is_some() {
            return Err(bad(format!("device {name} is defined twice")));
        }
    }
    Ok(Loaded {
        path: path.to_path_buf(),
        devices,
        spec_edits: spec.container_edits.unwrap_or_default(),
    })
}

fn apply(out: &mut ContainerSpec, name: &str, path: &Path, e: &Edits) -> Result<(), CdiError> {
    let unsupported = |what| CdiError::Unsupported {
        name: name.into(),
        path: path.to_path_buf(),
        what,
    };
    if !e.net_devices.is_empty() {
        return Err(unsupported("network devices"));
    }
    if e.intel_rdt.is_some() {
        return Err(unsupported("Intel RDT settings"));
    }
    for kv in &e.env {
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        // CDI: a device's variable replaces one of the same name.
        out.envs.retain(|(k, _)| k != key);
        out.envs.push((key.to_string(), value.to_string()));
    }
    for d in &e.device_nodes {
        out.devices.retain(|o| o.container_path != d.path);
        out.devices.push(DeviceSpec {
            container_path: d.path.clone(),
            host_path: d.host_path.clone().unwrap_or_else(|| d.path.clone()),
            permissions: d.permissions.clone().unwrap_or_default(),
        });
    }
    for m in &e.mounts {
        let bind = m.kind.as_deref().is_none_or(|k| k == "bind")
            && (m.kind.is_some() || m.options.iter().any(|o| o == "bind" || o == "rbind"));
        if !bind {
            return Err(unsupported("mounts other than bind mounts"));
        }
        out.mounts.retain(|o| o.container_path != m.container_path);
        out.mounts.push(MountSpec {
            container_path: m.container_path.clone(),
            host_path: m.host_path.clone(),
            readonly: m.options.iter().any(|o| o == "ro"),
            propagation: Propagation::Private,
            recursive_read_only: false,
            image: None,
            idmap: None,
        });
    }
    for h in &e.hooks {
        out.hooks.push(HookSpec {
            stage: stage(&h.hook_name).expect("checked when the spec was read"),
            path: h.path.clone(),
            // OCI: args holds argv[0]; CDI specs usually repeat the path there.
            args: h.args.clone(),
            env: h.env.clone(),
            timeout: h.timeout,
        });
    }
    for &gid in &e.additional_gids {
        let gid = i64::from(gid);
        if !out.security.supplemental_groups.contains(&gid) {
            out.security.supplemental_groups.push(gid);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(name), text).unwrap();
    }

    const GPU: &str = r#"{
        "cdiVersion": "0.6.0", "kind": "vendor.test/gpu",
        "containerEdits": {"env": ["SPEC=once"]},
        "devices": [
            {"name": "gpu0", "containerEdits": {
                "env": ["GPU=0"],
                "deviceNodes": [{"path": "/dev/gpu0", "hostPath": "/dev/null", "permissions": "rw"}],
                "mounts": [{"hostPath": "/opt/lib", "containerPath": "/usr/lib/gpu", "options": ["ro", "bind"]}],
                "additionalGids": [44]}},
            {"name": "gpu1", "containerEdits": {"env": ["GPU=1"], "deviceNodes": [{"path": "/dev/zero"}]}}
        ]}"#;

    #[test]
    fn devices_resolve_and_edits_apply() {
        let tmp = tempfile::tempdir().unwrap();
        let etc = tmp.path().join("etc");
        write(&etc, "gpu.json", GPU);
        let mut spec = ContainerSpec::default();
        spec.envs.push(("GPU".into(), "none".into()));
        let names = vec!["vendor.test/gpu=gpu0".into(), "vendor.test/gpu=gpu1".into()];
        apply_cdi_devices(&mut spec, &names, &[etc]).unwrap();
        let env: Vec<_> = spec.envs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            env,
            ["SPEC=once", "GPU=1"],
            "later devices override, spec edits once"
        );
        assert_eq!(spec.devices.len(), 2);
        assert_eq!(spec.devices[0].host_path, "/dev/null");
        assert_eq!(
            spec.devices[1].host_path, "/dev/zero",
            "hostPath defaults to path"
        );
        assert_eq!(spec.mounts[0].container_path, "/usr/lib/gpu");
        assert!(spec.mounts[0].readonly);
        assert_eq!(spec.security.supplemental_groups, [44]);
    }

    #[test]
    fn hooks_are_carried_in_order_with_their_stage() {
        let tmp = tempfile::tempdir().unwrap();
        let etc = tmp.path().join("etc");
        write(
            &etc,
            "h.json",
            r#"{"cdiVersion":"0.6.0","kind":"vendor.test/h","containerEdits":{"hooks":[{"hookName":"poststop","path":"/bin/stop"}]},
               "devices":[{"name":"d","containerEdits":{"hooks":[
                 {"hookName":"createContainer","path":"/bin/ldcache","args":["ldcache","--folder","/usr/lib"],"env":["A=1"],"timeout":5},
                 {"hookName":"startContainer","path":"/bin/start"}]}}]}"#,
        );
        let mut spec = ContainerSpec::default();
        apply_cdi_devices(&mut spec, &["vendor.test/h=d".into()], &[etc]).unwrap();
        let got: Vec<_> = spec
            .hooks
            .iter()
            .map(|h| (h.stage, h.path.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (HookStage::Poststop, "/bin/stop"),
                (HookStage::CreateContainer, "/bin/ldcache"),
                (HookStage::StartContainer, "/bin/start"),
            ],
            "spec edits first, then the device's, each in order"
        );
        assert_eq!(spec.hooks[1].args, ["ldcache", "--folder", "/usr/lib"]);
        assert_eq!(spec.hooks[1].env, ["A=1"]);
        assert_eq!(spec.hooks[1].timeout, Some(5));
    }

    #[test]
    fn a_bad_hook_fails_its_spec_file() {
        for (hook, says) in [
            (
                r#"{"hookName":"prestop","path":"/bin/x"}"#,
                "unknown hookName",
            ),
            (r#"{"hookName":"poststart","path":"bin/x"}"#, "not absolute"),
            (
                r#"{"hookName":"poststart","path":"/bin/x","timeout":0}"#,
                "timeout must be positive",
            ),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let etc = tmp.path().join("etc");
            let text = format!(
                r#"{{"cdiVersion":"0.6.0","kind":"vendor.test/h","devices":[{{"name":"d","containerEdits":{{"hooks":[{hook}]}}}}]}}"#
            );
            write(&etc, "h.json", &text);
            let err = apply_cdi_devices(
                &mut ContainerSpec::default(),
                &["vendor.test/h=d".into()],
                &[etc],
            )
            .unwrap_err();
            assert!(matches!(err, CdiError::BadSpec { .. }), "{hook}: {err}");
            assert!(err.to_string().contains(says), "{hook}: {err}");
            assert!(err.to_string().contains("h.json"), "{hook}: {err}");
        }
    }

    #[test]
    fn a_later_directory_overrides_and_yaml_works() {
        let tmp = tempfile::tempdir().unwrap();
        let (etc, run) = (tmp.path().join("etc"), tmp.path().join("run"));
        write(&etc, "gpu.json", GPU);
        write(
            &run,
            "gpu.yaml",
            "cdiVersion: 0.8.0\nkind: vendor.test/gpu\ndevices:\n- name: gpu0\n  containerEdits:\n    env: [GPU=run]\n",
        );
        let mut spec = ContainerSpec::default();
        apply_cdi_devices(&mut spec, &["vendor.test/gpu=gpu0".into()], &[etc, run]).unwrap();
        assert_eq!(spec.envs, [("GPU".to_string(), "run".to_string())]);
    }

    #[test]
    fn errors_name_the_device_or_file_and_change_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let etc = tmp.path().join("etc");
        write(&etc, "a.json", GPU);
        let net = r#"{"cdiVersion":"0.6.0","kind":"vendor.test/net","devices":[{"name":"n","containerEdits":{"netDevices":[{"hostInterfaceName":"x","name":"y"}]}}]}"#;
        write(&etc, "b.json", net);
        type Check = Box<dyn Fn(&CdiError) -> bool>;
        let cases: Vec<(&str, Check)> = vec![
            ("gpu0", Box::new(|e| matches!(e, CdiError::BadName { .. }))),
            (
                "vendor.test/gpu=nope",
                Box::new(|e| matches!(e, CdiError::Unresolved { .. })),
            ),
            (
                "vendor.test/net=n",
                Box::new(|e| {
                    matches!(
                        e,
                        CdiError::Unsupported {
                            what: "network devices",
                            ..
                        }
                    )
                }),
            ),
        ];
        for (name, check) in cases {
            let mut spec = ContainerSpec::default();
            let err = apply_cdi_devices(
                &mut spec,
                &["vendor.test/gpu=gpu0".into(), name.into()],
                std::slice::from_ref(&etc),
            )
            .unwrap_err();
            assert!(check(&err), "{name}: {err}");
            assert!(
                err.to_string()
                    .contains(name.split('=').next_back().unwrap()),
                "{err}"
            );
            assert_eq!(spec, ContainerSpec::default(), "{name}: nothing applied");
        }
        write(&etc, "c.json", GPU);
        let err = apply_cdi_devices(
            &mut ContainerSpec::default(),
            &["vendor.test/gpu=gpu0".into()],
            std::slice::from_ref(&etc),
        )
        .unwrap_err();
        assert!(matches!(err, CdiError::Conflict { .. }), "{err}");
        fs::remove_file(etc.join("c.json")).unwrap();
        write(&etc, "d.json", "{\"cdiVersion\": \"0.6.0\", \"kind\": ");
        let err = apply_cdi_devices(
            &mut ContainerSpec::default(),
            &["vendor.test/gpu=gpu0".into()],
            std::slice::from_ref(&etc),
        )
        .unwrap_err();
        assert!(err.to_string().contains("d.json"), "{err}");
    }
}
