//! Checks that need more than types: paths, handler names, cross-references.

use std::path::Path;

use super::{Config, HandlerKind};

/// Returns every problem as `(key, message)`, in key order of the reference.
pub(super) fn validate(c: &Config) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    let mut absolute = |key: &str, path: &Path| {
        if !path.is_absolute() {
            errors.push((
                key.to_string(),
                format!("{} must be an absolute path", path.display()),
            ));
        }
    };
    absolute("root", &c.root);
    absolute("state", &c.state);
    if let Some(socket) = &c.socket {
        absolute("socket", socket);
    }
    if let Some(file) = &c.image.registries_conf {
        absolute("image.registries_conf", file);
    }
    absolute("network.cni_conf_dir", &c.network.cni_conf_dir);
    for (i, dir) in c.network.cni_bin_dirs.iter().enumerate() {
        absolute(&format!("network.cni_bin_dirs[{i}]"), dir);
    }
    absolute("cgroup.root", &c.cgroup.root);
    if let Some(path) = &c.runtime.monitor_path {
        absolute("runtime.monitor_path", path);
    }
    for (i, dir) in c.runtime.cdi_spec_dirs.iter().enumerate() {
        absolute(&format!("runtime.cdi_spec_dirs[{i}]"), dir);
    }
    for (name, handler) in &c.runtime.handlers {
        let key = format!("runtime.handlers.{name}");
        if let (HandlerKind::Oci, Some(path)) = (handler.kind, &handler.path) {
            absolute(&format!("{key}.path"), path);
        }
    }

    if c.network.cni_bin_dirs.is_empty() {
        errors.push(("network.cni_bin_dirs".into(), "must not be empty".into()));
    }
    for (key, path) in [
        ("cgroup.monitor_cgroup", &c.cgroup.monitor_cgroup),
        ("cgroup.pod_parent", &c.cgroup.pod_parent),
    ] {
        if let Err(e) = crust_runtime::cgroup::validate_path(path) {
            errors.push((key.into(), e.to_string()));
        }
    }
    if c.runtime.shm_size < 4096 {
        errors.push((
            "runtime.shm_size".into(),
            "must be at least one page (4096 bytes)".into(),
        ));
    }
    // Small enough that a record is not a sliver; at most 1 MiB because the monitor
    // holds up to this much of each stream of every container while a line is open.
    if !(64..=1 << 20).contains(&c.runtime.max_log_line_size) {
        errors.push((
            "runtime.max_log_line_size".into(),
            "must be between 64 and 1048576 bytes".into(),
        ));
    }
    if c.runtime.pids_limit < -1 {
        errors.push((
            "runtime.pids_limit".into(),
            "must be -1 (unlimited), 0 (not set) or a positive number".into(),
        ));
    }
    let limit = crust_runtime::container::EXEC_OUTPUT_LIMIT;
    if c.runtime.exec_sync_output_limit == 0 || c.runtime.exec_sync_output_limit > limit {
        errors.push((
            "runtime.exec_sync_output_limit".into(),
            format!("must be between 1 and {limit} bytes (both streams fit in 16 MiB)"),
        ));
    }
    if c.image.pull_progress_timeout.is_zero() {
        errors.push((
            "image.pull_progress_timeout".into(),
            "must be greater than zero".into(),
        ));
    }
    if c.image.max_concurrent_downloads == 0 {
        errors.push((
            "image.max_concurrent_downloads".into(),
            "must be at least 1".into(),
        ));
    }
    if c.image.max_layer_unpacked_bytes == 0 {
        errors.push((
            "image.max_layer_unpacked_bytes".into(),
            "must be at least 1".into(),
        ));
    }
    if c.network.plugin_timeout.is_zero() {
        errors.push((
            "network.plugin_timeout".into(),
            "must be greater than zero".into(),
        ));
    }
    for (key, value) in [
        ("streaming.token_timeout", c.streaming.token_timeout),
        ("streaming.idle_timeout", c.streaming.idle_timeout),
    ] {
        if value.is_zero() {
            errors.push((key.into(), "must be greater than 0".into()));
        }
    }
    if c.shutdown_timeout.is_zero() {
        errors.push((
            "shutdown_timeout".into(),
            "must be greater than zero".into(),
        ));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&c.log_level) {
        errors.push((
            "log_level".into(),
            format!("invalid log filter {:?}: {e}", c.log_level),
        ));
    }
    for (name, handler) in &c.runtime.handlers {
        let key = format!("runtime.handlers.{name}");
        if !is_dns_label(name) {
            // RuntimeClass.handler must be a DNS label (Kubernetes API validation).
            errors.push((
                key.clone(),
                format!("handler name {name:?} is not a DNS label (a-z, 0-9, '-', at most 63)"),
            ));
        }
        match (handler.kind, &handler.path) {
            (HandlerKind::Oci, None) => errors.push((
                format!("{key}.path"),
                "is required for type = \"oci\" (the OCI runtime binary)".into(),
            )),
            (HandlerKind::Builtin, Some(_)) => errors.push((
                format!("{key}.path"),
                "is only valid for type = \"oci\"".into(),
            )),
            _ => {}
        }
    }
    if !c.runtime.handlers.contains_key(&c.runtime.default_handler) {
        errors.push((
            "runtime.default_handler".into(),
            format!(
                "{:?} is not a configured handler (have: {})",
                c.runtime.default_handler,
                c.runtime
                    .handlers
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    errors
}

/// RFC 1123 label: 1-63 of `[a-z0-9-]`, starting and ending alphanumeric.
fn is_dns_label(s: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| alnum(b) || b == b'-')
        && s.bytes().next().is_some_and(alnum)
        && s.bytes().last().is_some_and(alnum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for (name, ok) in [
            ("runc", true),
            ("kata-qemu", true),
            ("a", true),
            ("", false),
            ("-a", false),
            ("a-", false),
            ("Runc", false),
            ("a_b", false),
            (&"a".repeat(64) as &str, false),
        ] {
            assert_eq!(is_dns_label(name), ok, "{name:?}");
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(validate(&Config::default()), Vec::<(String, String)>::new());
    }

    #[test]
    fn log_line_and_exec_output_bounds() {
        for (line, exec, bad) in [
            (16384, 8_323_072, vec![]),
            (64, 1, vec![]),
            (63, 1, vec!["runtime.max_log_line_size"]),
            ((1 << 20) + 1, 1, vec!["runtime.max_log_line_size"]),
            (64, 0, vec!["runtime.exec_sync_output_limit"]),
            (64, 8_323_073, vec!["runtime.exec_sync_output_limit"]),
        ] {
            let mut c = Config::default();
            c.runtime.max_log_line_size = line;
            c.runtime.exec_sync_output_limit = exec;
            let keys: Vec<String> = validate(&c).into_iter().map(|(k, _)| k).collect();
            assert_eq!(
                keys, bad,
                "max_log_line_size {line}, exec_sync_output_limit {exec}"
            );
        }
    }
}
