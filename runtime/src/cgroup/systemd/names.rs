//! systemd unit names and the cgroup paths they stand for.
//!
//! kubelet's systemd driver passes a pod's `cgroup_parent` as a slice *name*
//! (`kubepods-burstable-pod<uid>.slice`); systemd nests slices by the dashes in their
//! names, so that slice lives at `/kubepods.slice/kubepods-burstable.slice/
//! kubepods-burstable-pod<uid>.slice` (systemd.slice(5); runc's `ExpandSlice`).

use crate::cgroup::CgroupError;

const SLICE: &str = ".slice";

/// The slice that holds every monitor scope and the pods crust names itself
/// (crictl without `cgroup_parent`): outside every kubelet slice, so no pod limit
/// reaches a monitor.
pub const CRUST_SLICE: &str = "crust.slice";

/// The cgroup path of slice `name`, as runc's `ExpandSlice`: every dash-separated
/// prefix is a parent slice; `-.slice` is the root.
pub fn expand_slice(name: &str) -> Result<String, CgroupError> {
    let invalid = |reason| {
        Err(CgroupError::InvalidPath {
            path: name.to_string(),
            reason,
        })
    };
    let Some(stem) = name.strip_suffix(SLICE) else {
        return invalid("a systemd cgroup parent is a slice name ending in .slice");
    };
    if name.contains('/') {
        return invalid("a slice name has no '/' (the systemd driver takes names, not paths)");
    }
    if stem == "-" {
        return Ok("/".to_string());
    }
    if !stem
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'))
    {
        return invalid("only letters, digits and -_.:@ are allowed in slice names");
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for component in stem.split('-') {
        if component.is_empty() {
            return invalid("empty component (leading, trailing or doubled '-')");
        }
        path.push('/');
        path.push_str(&prefix);
        path.push_str(component);
        path.push_str(SLICE);
        prefix.push_str(component);
        prefix.push('-');
    }
    Ok(path)
}

/// The scope of container `id`.
pub fn container_scope(id: &str) -> String {
    format!("crust-{id}.scope")
}

/// The scope of pod `id`'s init (the PID 1 of a pod PID namespace), in the pod slice.
pub fn init_scope(pod_id: &str) -> String {
    format!("crust-init-{pod_id}.scope")
}

/// The scope of pod `id`'s monitor, in [`CRUST_SLICE`].
pub fn monitor_scope(pod_id: &str) -> String {
    format!("crust-monitor-{pod_id}.scope")
}

/// The slice of a pod that names no `cgroup_parent`, below [`CRUST_SLICE`].
pub fn own_pod_slice(pod_id: &str) -> String {
    format!("crust-pod{pod_id}.slice")
}

/// The unit a cgroup path belongs to: its last component when that is a slice or a
/// scope. Recovery finds units this way, from the paths in the records.
pub fn unit_of(path: &str) -> Option<&str> {
    let leaf = path.rsplit('/').next()?;
    (leaf.ends_with(SLICE) || leaf.ends_with(".scope")).then_some(leaf)
}

/// The name of the slice a cgroup path is in (its parent component), `-.slice` at
/// the root.
pub fn parent_slice(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some((parent, _)) if !parent.is_empty() => parent.rsplit('/').next().unwrap_or("-.slice"),
        _ => "-.slice",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_expand_like_runc() {
        let cases = [
            ("-.slice", Some("/")),
            ("system.slice", Some("/system.slice")),
            (
                "kubepods-burstable-pod1234_abcd.slice",
                Some(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_abcd.slice",
                ),
            ),
            (
                "kubepods-pod1.slice",
                Some("/kubepods.slice/kubepods-pod1.slice"),
            ),
            ("kubepods.slice", Some("/kubepods.slice")),
            ("kubepods", None),
            ("kubepods-.slice", None),
            ("-kubepods.slice", None),
            ("kube--pods.slice", None),
            ("/kubepods.slice", None),
            ("kubepods.slice/x.slice", None),
            ("kube pods.slice", None),
            (".slice", None),
        ];
        for (name, want) in cases {
            assert_eq!(expand_slice(name).ok().as_deref(), want, "{name}");
        }
    }

    #[test]
    fn expanded_slices_are_valid_cgroup_paths() {
        let path = expand_slice("kubepods-besteffort-podx.slice").unwrap();
        crate::cgroup::validate_path(&path).unwrap();
        let scope = format!("{path}/{}", container_scope("abc"));
        crate::cgroup::validate_path(&scope).unwrap();
    }

    #[test]
    fn units_and_parents_from_paths() {
        let p =
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/crust-c1.scope";
        assert_eq!(unit_of(p), Some("crust-c1.scope"));
        assert_eq!(parent_slice(p), "kubepods-burstable-pod1.slice");
        assert_eq!(unit_of("/kubepods.slice"), Some("kubepods.slice"));
        assert_eq!(parent_slice("/kubepods.slice"), "-.slice");
        assert_eq!(
            unit_of("/crust/pods/x"),
            None,
            "cgroupfs paths are no units"
        );
        assert_eq!(
            unit_of("/crust.slice/crust-c1.scope/exec-1"),
            None,
            "exec cgroups inside a delegated scope are plain directories"
        );
    }

    #[test]
    fn unit_names() {
        assert_eq!(container_scope("c1"), "crust-c1.scope");
        assert_eq!(init_scope("p1"), "crust-init-p1.scope");
        assert_eq!(monitor_scope("p1"), "crust-monitor-p1.scope");
        assert_eq!(
            expand_slice(&own_pod_slice("p1")).unwrap(),
            "/crust.slice/crust-podp1.slice"
        );
    }
}
