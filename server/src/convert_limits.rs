//! Bounds and checks on CRI input, applied before anything is created.
//!
//! Every string a request carries ends up somewhere with a limit of its own: a 1 MiB pod
//! name went into `CNI_ARGS`, whose ADD and rollback DEL then failed with E2BIG (Linux's
//! `MAX_ARG_STRLEN` is 128 KiB per env string), leaving a record retried at every start
//! forever. So each field is bounded up front, by Kubernetes' own limit where there is
//! one, else by the kernel's (paths, argv) or a generous one, and the answer is
//! INVALID_ARGUMENT naming the field. Values are quoted through [`excerpt`] only.
//! Enum fields must hold a value the CRI defines: an unknown one is refused rather than
//! read as the default.

use std::net::IpAddr;

use crust_proto::runtime::v1 as cri;
use crust_runtime::excerpt;

use crate::error::ApiError;

/// A DNS subdomain (RFC 1123), Kubernetes' bound on object names: pod and container
/// metadata names, and uid (a UUID; static pods' are hashes).
pub const NAME_MAX: usize = 253;
/// A DNS label, Kubernetes' bound on namespace names.
pub const NAMESPACE_MAX: usize = 63;
/// The kernel's `HOST_NAME_MAX`.
pub const HOSTNAME_MAX: usize = 64;
/// The kernel's `PATH_MAX`.
pub const PATH_MAX: usize = 4096;
/// A qualified label or annotation key: a 253-byte DNS-subdomain prefix, `/` and a
/// 63-byte name (Kubernetes `IsQualifiedName`).
pub const KEY_MAX: usize = 253 + 1 + 63;
/// Label values. Kubernetes allows 63 for user labels, but kubelet's own CRI labels
/// carry full pod names (`io.kubernetes.pod.name`, up to 253), so a generous bound.
pub const LABEL_VALUE_MAX: usize = 4096;
/// Kubernetes' `TotalAnnotationSizeLimitB` (256 KiB): keys plus values of all of a
/// pod's annotations in the API server.
pub const ANNOTATIONS_API_MAX: usize = 256 * 1024;
/// What kubelet adds on top of the API object's labels and annotations when it makes
/// the CRI config (`io.kubernetes.*` names, hashes, the container ports JSON, the
/// termination message path...): a pod at the API limit must still run.
pub const KUBELET_HEADROOM: usize = 64 * 1024;
/// Keys plus values of one object's labels and annotations together, and so of each
/// map alone. Both are stored in the object's record and sent back in every List and
/// Status answer, so together they are bounded, not each on its own (2 × 256 KiB got
/// in before).
pub const MAP_TOTAL_MAX: usize = ANNOTATIONS_API_MAX + KUBELET_HEADROOM;
/// An image name or reference as PullImage, ImageStatus and RemoveImage take it: the
/// length `Reference::parse` accepts (docker's reference grammar has no bound; names
/// are at most 255 bytes, tags 128, digests ~135). Longer ones are refused before
/// they reach a log line or a span.
pub const IMAGE_NAME_MAX: usize = 4096;
/// The kernel's `MAX_ARG_STRLEN`: one argv or envp string.
pub const ARG_MAX: usize = 128 * 1024;
/// argv plus envp together: Linux's default `ARG_MAX` (a quarter of the 8 MiB stack);
/// more fails at exec with E2BIG anyway.
pub const ARGV_TOTAL_MAX: usize = 2 * 1024 * 1024;
/// resolv.conf entries: kubelet's `MaxDNSSearchPaths`, also used for servers and options.
pub const DNS_ENTRIES_MAX: usize = 32;
/// Other short strings (capability names, SELinux parts, hugepage sizes, usernames:
/// `LOGIN_NAME_MAX` is 256).
pub const SHORT_MAX: usize = 256;
/// Entries of a repeated field (mounts, devices, port mappings, paths, groups).
pub const LIST_MAX: usize = 1024;

fn invalid(field: &'static str, reason: String) -> ApiError {
    ApiError::InvalidArgument { field, reason }
}

/// `value` is at most `max` bytes and free of NUL and other control characters.
pub fn text(field: &'static str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        return Err(invalid(
            field,
            format!(
                "{} bytes, more than {max}: {:?}",
                value.len(),
                excerpt(value)
            ),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(invalid(
            field,
            format!("{:?} contains the control character {c:?}", excerpt(value)),
        ));
    }
    Ok(())
}

/// An argv/envp string: bounded, and without NUL (which exec cannot pass). Newlines
/// and tabs are fine in arguments.
fn arg(field: &'static str, what: &str, value: &str) -> Result<(), ApiError> {
    if value.len() > ARG_MAX {
        return Err(invalid(
            field,
            format!("{what} is {} bytes, more than {ARG_MAX}", value.len()),
        ));
    }
    if value.contains('\0') {
        return Err(invalid(
            field,
            format!("{what} {:?} contains a NUL byte", excerpt(value)),
        ));
    }
    Ok(())
}

/// An object name or uid: bounded, printable, and without `;`, which separates
/// `CNI_ARGS` entries (a name with one could add arguments of its own).
/// A field the runtime cannot do without (kubelet always sets it; a hand-written
/// config may not): named exactly, so `crictl runp` says which one is missing.
fn required(field: &'static str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(invalid(field, "is required".into()));
    }
    Ok(())
}

fn name(field: &'static str, value: &str, max: usize) -> Result<(), ApiError> {
    text(field, value, max)?;
    if value.contains(';') {
        return Err(invalid(field, format!("{:?} contains ';'", excerpt(value))));
    }
    Ok(())
}

fn list<T>(field: &'static str, items: &[T], max: usize) -> Result<(), ApiError> {
    if items.len() > max {
        return Err(invalid(
            field,
            format!("{} entries, more than {max}", items.len()),
        ));
    }
    Ok(())
}

/// A host or container path: bounded, no NUL.
fn path(field: &'static str, value: &str) -> Result<(), ApiError> {
    if value.len() > PATH_MAX {
        return Err(invalid(
            field,
            format!(
                "{} bytes, more than PATH_MAX ({PATH_MAX}): {:?}",
                value.len(),
                excerpt(value)
            ),
        ));
    }
    if value.contains('\0') {
        return Err(invalid(
            field,
            format!("{:?} contains a NUL byte", excerpt(value)),
        ));
    }
    Ok(())
}

/// Labels or annotations: bounded keys and values, and all of them together. Returns
/// the bytes of keys and values.
fn map<'a>(
    field: &'static str,
    entries: impl Iterator<Item = (&'a String, &'a String)>,
    value_max: usize,
) -> Result<usize, ApiError> {
    let mut total = 0usize;
    for (k, v) in entries {
        if k.is_empty() {
            return Err(invalid(field, "empty key".into()));
        }
        text(field, k, KEY_MAX).map_err(|e| invalid(field, format!("key: {}", reason(e))))?;
        if v.len() > value_max {
            return Err(invalid(
                field,
                format!(
                    "value of {:?} is {} bytes, more than {value_max}",
                    excerpt(k),
                    v.len()
                ),
            ));
        }
        if v.contains('\0') {
            return Err(invalid(
                field,
                format!("value of {:?} contains a NUL byte", excerpt(k)),
            ));
        }
        total += k.len() + v.len();
    }
    if total > MAP_TOTAL_MAX {
        return Err(invalid(
            field,
            format!("{total} bytes in all, more than {MAP_TOTAL_MAX}"),
        ));
    }
    Ok(total)
}

/// An object's labels and annotations, each bounded and both together
/// ([`MAP_TOTAL_MAX`]). The error names the annotations (what grows in practice) and
/// says the labels count too.
fn labels_and_annotations(
    labels: &std::collections::HashMap<String, String>,
    annotations: &std::collections::HashMap<String, String>,
) -> Result<(), ApiError> {
    let l = map("config.labels", labels.iter(), LABEL_VALUE_MAX)?;
    let a = map("config.annotations", annotations.iter(), MAP_TOTAL_MAX)?;
    if l + a > MAP_TOTAL_MAX {
        return Err(invalid(
            "config.annotations",
            format!(
                "labels ({l} bytes) and annotations ({a} bytes) are {} bytes in all, more than {MAP_TOTAL_MAX}",
                l + a
            ),
        ));
    }
    Ok(())
}

/// An image name a request carries (`image.image`, `config.image.image`): bounded,
/// no control characters.
pub fn image_name(field: &'static str, name: &str) -> Result<(), ApiError> {
    text(field, name, IMAGE_NAME_MAX)
}

fn reason(e: ApiError) -> String {
    match e {
        ApiError::InvalidArgument { reason, .. } => reason,
        e => e.to_string(),
    }
}

/// A CRI enum field holds a value the proto defines.
fn known<E: TryFrom<i32>>(field: &'static str, value: i32) -> Result<(), ApiError> {
    E::try_from(value)
        .map(|_| ())
        .map_err(|_| invalid(field, format!("unknown value {value}")))
}

fn profile(field: &'static str, p: Option<&cri::SecurityProfile>) -> Result<(), ApiError> {
    let Some(p) = p else { return Ok(()) };
    known::<cri::security_profile::ProfileType>(field, p.profile_type)?;
    path(field, &p.localhost_ref)
}

fn namespaces(field: &'static str, ns: Option<&cri::NamespaceOption>) -> Result<(), ApiError> {
    let Some(ns) = ns else { return Ok(()) };
    for mode in [ns.network, ns.pid, ns.ipc] {
        known::<cri::NamespaceMode>(field, mode)?;
    }
    if let Some(u) = &ns.userns_options {
        known::<cri::NamespaceMode>(field, u.mode)?;
    }
    text(field, &ns.target_id, NAME_MAX)
}

/// The bandwidth annotations the CNI `bandwidth` plugin gets, parsed here so a bad one
/// is the caller's INVALID_ARGUMENT, not a failed network setup (INTERNAL) after the
/// pod's namespaces were made.
pub const BANDWIDTH_ANNOTATIONS: [&str; 2] = [
    "kubernetes.io/ingress-bandwidth",
    "kubernetes.io/egress-bandwidth",
];

/// `LinuxContainerResources` (container resources, pod overhead and resources): no
/// negative quantities. CRI/cgroup meanings: 0 is "unset" for all of them; CFS quota
/// -1 is "unlimited", as is swap -1; `oom_score_adj` is the kernel's -1000..=1000.
pub fn resources(field: &'static str, r: &cri::LinuxContainerResources) -> Result<(), ApiError> {
    let checks: [(&str, i64, i64); 5] = [
        ("cpu_period", r.cpu_period, 0),
        ("cpu_quota", r.cpu_quota, -1),
        ("cpu_shares", r.cpu_shares, 0),
        ("memory_limit_in_bytes", r.memory_limit_in_bytes, 0),
        (
            "memory_swap_limit_in_bytes",
            r.memory_swap_limit_in_bytes,
            -1,
        ),
    ];
    for (name, value, min) in checks {
        if value < min {
            return Err(invalid(
                field,
                format!("{name} is {value}, less than {min}"),
            ));
        }
    }
    if !(-1000..=1000).contains(&r.oom_score_adj) {
        return Err(invalid(
            field,
            format!("oom_score_adj is {}, outside -1000..=1000", r.oom_score_adj),
        ));
    }
    text(field, &r.cpuset_cpus, PATH_MAX)?;
    text(field, &r.cpuset_mems, PATH_MAX)?;
    list(field, &r.hugepage_limits, LIST_MAX)?;
    for h in &r.hugepage_limits {
        text(field, &h.page_size, SHORT_MAX)?;
    }
    map(field, r.unified.iter(), PATH_MAX).map(|_| ())
}

/// `PodSandboxConfig`, before conversion.
pub fn pod_config(c: &cri::PodSandboxConfig) -> Result<(), ApiError> {
    if let Some(m) = &c.metadata {
        required("config.metadata.name", &m.name)?;
        required("config.metadata.namespace", &m.namespace)?;
        required("config.metadata.uid", &m.uid)?;
        name("config.metadata.name", &m.name, NAME_MAX)?;
        name("config.metadata.namespace", &m.namespace, NAMESPACE_MAX)?;
        name("config.metadata.uid", &m.uid, NAME_MAX)?;
    }
    text("config.hostname", &c.hostname, HOSTNAME_MAX)?;
    path("config.log_directory", &c.log_directory)?;
    // CRI: the host directory of the pod's logs; container log paths are relative to
    // it, so a relative one would put logs wherever crustd's cwd is.
    if !c.log_directory.is_empty() && !c.log_directory.starts_with('/') {
        return Err(invalid(
            "config.log_directory",
            format!("{:?} is not an absolute path", excerpt(&c.log_directory)),
        ));
    }
    if c.log_directory.split('/').any(|p| p == "..") {
        return Err(invalid(
            "config.log_directory",
            format!("{:?} contains \"..\"", excerpt(&c.log_directory)),
        ));
    }
    if let Some(dns) = &c.dns_config {
        for (field, entries) in [
            ("config.dns_config.servers", &dns.servers),
            ("config.dns_config.searches", &dns.searches),
            ("config.dns_config.options", &dns.options),
        ] {
            list(field, entries, DNS_ENTRIES_MAX)?;
            for e in entries {
                text(field, e, NAME_MAX)?;
            }
        }
    }
    list("config.port_mappings", &c.port_mappings, LIST_MAX)?;
    for (i, p) in c.port_mappings.iter().enumerate() {
        port_mapping(i, p)?;
    }
    labels_and_annotations(&c.labels, &c.annotations)?;
    for key in BANDWIDTH_ANNOTATIONS {
        if let Some(v) = c.annotations.get(key) {
            crust_network::parse_quantity(v).map_err(|_| {
                invalid(
                    "config.annotations",
                    format!(
                        "{key}: {:?} is not a quantity (such as 10M or 1Gi)",
                        excerpt(v)
                    ),
                )
            })?;
        }
    }
    if let Some(l) = &c.linux {
        path("config.linux.cgroup_parent", &l.cgroup_parent)?;
        map("config.linux.sysctls", l.sysctls.iter(), PATH_MAX)?;
        if let Some(o) = &l.overhead {
            resources("config.linux.overhead", o)?;
        }
        if let Some(r) = &l.resources {
            resources("config.linux.resources", r)?;
        }
        if let Some(sc) = &l.security_context {
            shared_security(SharedSecurity {
                namespace_options: sc.namespace_options.as_ref(),
                supplemental_groups_policy: sc.supplemental_groups_policy,
                supplemental_groups: &sc.supplemental_groups,
                seccomp: sc.seccomp.as_ref(),
                apparmor: sc.apparmor.as_ref(),
            })?;
        }
    }
    Ok(())
}

/// A port mapping: CRI's "host port 1-65535; 0 means do not publish", a container
/// port 1-65535 (Kubernetes `containerPort`), a protocol the CRI defines and an IP (or
/// nothing) as host IP. Ports above 65535 went to the portmap plugin and came back
/// INTERNAL; negative ones were silently not published.
fn port_mapping(i: usize, p: &cri::PortMapping) -> Result<(), ApiError> {
    const F: &str = "config.port_mappings";
    if !(0..=65535).contains(&p.host_port) {
        return Err(invalid(
            F,
            format!("[{i}].host_port {} is outside 0..=65535", p.host_port),
        ));
    }
    if !(1..=65535).contains(&p.container_port) {
        return Err(invalid(
            F,
            format!(
                "[{i}].container_port {} is outside 1..=65535",
                p.container_port
            ),
        ));
    }
    if cri::Protocol::try_from(p.protocol).is_err() {
        return Err(invalid(
            F,
            format!("[{i}].protocol: unknown value {}", p.protocol),
        ));
    }
    if !p.host_ip.is_empty() && p.host_ip.parse::<IpAddr>().is_err() {
        return Err(invalid(
            F,
            format!(
                "[{i}].host_ip {:?} is not an IP address",
                excerpt(&p.host_ip)
            ),
        ));
    }
    Ok(())
}

/// argv and envp strings, and all of them together.
fn argv<'a>(
    field: &'static str,
    strings: impl Iterator<Item = &'a str>,
    mut total: usize,
) -> Result<usize, ApiError> {
    for (i, s) in strings.enumerate() {
        arg(field, &format!("[{i}]"), s)?;
        total += s.len() + 1;
        if total > ARGV_TOTAL_MAX {
            return Err(invalid(
                field,
                format!("more than {ARGV_TOTAL_MAX} bytes of command, args and env in all"),
            ));
        }
    }
    Ok(total)
}

/// An ExecSync or Exec command: at least one word, exec-able strings, bounded.
pub fn exec_cmd(cmd: &[String]) -> Result<(), ApiError> {
    if cmd.is_empty() || cmd[0].is_empty() {
        return Err(invalid("cmd", "is required".into()));
    }
    list("cmd", cmd, ARGV_TOTAL_MAX)?;
    argv("cmd", cmd.iter().map(String::as_str), 0).map(|_| ())
}

/// `ContainerConfig`, before conversion.
pub fn container_config(c: &cri::ContainerConfig) -> Result<(), ApiError> {
    if let Some(m) = &c.metadata {
        required("config.metadata.name", &m.name)?;
        name("config.metadata.name", &m.name, NAME_MAX)?;
    }
    if let Some(i) = &c.image {
        image_name("config.image.image", &i.image)?;
    }
    let total = argv("config.command", c.command.iter().map(String::as_str), 0)?;
    let total = argv("config.args", c.args.iter().map(String::as_str), total)?;
    for (i, kv) in c.envs.iter().enumerate() {
        if kv.key.contains('=') {
            return Err(invalid(
                "config.envs",
                format!("[{i}] key {:?} contains '='", excerpt(&kv.key)),
            ));
        }
    }
    argv(
        "config.envs",
        c.envs
            .iter()
            .flat_map(|kv| [kv.key.as_str(), kv.value.as_str()]),
        total,
    )?;
    path("config.working_dir", &c.working_dir)?;
    list("config.mounts", &c.mounts, LIST_MAX)?;
    for m in &c.mounts {
        path("config.mounts.container_path", &m.container_path)?;
        path("config.mounts.host_path", &m.host_path)?;
        known::<cri::MountPropagation>("config.mounts.propagation", m.propagation)?;
    }
    list("config.devices", &c.devices, LIST_MAX)?;
    for d in &c.devices {
        path("config.devices.container_path", &d.container_path)?;
        path("config.devices.host_path", &d.host_path)?;
        text("config.devices.permissions", &d.permissions, SHORT_MAX)?;
    }
    labels_and_annotations(&c.labels, &c.annotations)?;
    log_path(&c.log_path)?;
    known::<cri::Signal>("config.stop_signal", c.stop_signal)?;
    if let Some(l) = &c.linux {
        if let Some(r) = &l.resources {
            resources("config.linux.resources", r)?;
        }
        if let Some(sc) = &l.security_context {
            container_security(sc)?;
        }
    }
    Ok(())
}

/// CRI: "Path relative to PodSandboxConfig.LogDirectory". An absolute path or one
/// with `..` wrote the log outside the pod's log directory.
fn log_path(p: &str) -> Result<(), ApiError> {
    const F: &str = "config.log_path";
    path(F, p)?;
    if p.starts_with('/') {
        return Err(invalid(
            F,
            format!(
                "{:?} is absolute; it must be relative to the pod's log_directory",
                excerpt(p)
            ),
        ));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(invalid(
            F,
            format!("{:?} leaves the pod's log_directory (\"..\")", excerpt(p)),
        ));
    }
    Ok(())
}

/// The fields pod and container security contexts share (two proto types, one check).
struct SharedSecurity<'a> {
    namespace_options: Option<&'a cri::NamespaceOption>,
    supplemental_groups_policy: i32,
    supplemental_groups: &'a [i64],
    seccomp: Option<&'a cri::SecurityProfile>,
    apparmor: Option<&'a cri::SecurityProfile>,
}

fn shared_security(sc: SharedSecurity<'_>) -> Result<(), ApiError> {
    namespaces(
        "config.linux.security_context.namespace_options",
        sc.namespace_options,
    )?;
    known::<cri::SupplementalGroupsPolicy>(
        "config.linux.security_context.supplemental_groups_policy",
        sc.supplemental_groups_policy,
    )?;
    list(
        "config.linux.security_context.supplemental_groups",
        sc.supplemental_groups,
        LIST_MAX,
    )?;
    profile("config.linux.security_context.seccomp", sc.seccomp)?;
    profile("config.linux.security_context.apparmor", sc.apparmor)
}

fn container_security(sc: &cri::LinuxContainerSecurityContext) -> Result<(), ApiError> {
    shared_security(SharedSecurity {
        namespace_options: sc.namespace_options.as_ref(),
        supplemental_groups_policy: sc.supplemental_groups_policy,
        supplemental_groups: &sc.supplemental_groups,
        seccomp: sc.seccomp.as_ref(),
        apparmor: sc.apparmor.as_ref(),
    })?;
    text(
        "config.linux.security_context.run_as_username",
        &sc.run_as_username,
        SHORT_MAX,
    )?;
    for (field, paths) in [
        (
            "config.linux.security_context.masked_paths",
            &sc.masked_paths,
        ),
        (
            "config.linux.security_context.readonly_paths",
            &sc.readonly_paths,
        ),
    ] {
        list(field, paths, LIST_MAX)?;
        for p in paths {
            path(field, p)?;
        }
    }
    if let Some(c) = &sc.capabilities {
        for (field, caps) in [
            (
                "config.linux.security_context.capabilities.add_capabilities",
                &c.add_capabilities,
            ),
            (
                "config.linux.security_context.capabilities.drop_capabilities",
                &c.drop_capabilities,
            ),
            (
                "config.linux.security_context.capabilities.add_ambient_capabilities",
                &c.add_ambient_capabilities,
            ),
        ] {
            list(field, caps, LIST_MAX)?;
            for cap in caps {
                text(field, cap, SHORT_MAX)?;
            }
        }
    }
    if let Some(o) = &sc.selinux_options {
        for part in [&o.user, &o.role, &o.r#type, &o.level] {
            text(
                "config.linux.security_context.selinux_options",
                part,
                SHORT_MAX,
            )?;
        }
    }
    Ok(())
}
