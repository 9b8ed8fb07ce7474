//! CRI `UserNamespace` (KEP-127) -> the runtime's [`UserNamespace`], checked.
//!
//! What crust accepts is what kubelet sends for `hostUsers: false` (cri-api
//! api.proto: "POD: a user namespace for the pod"; "NODE: the host's user
//! namespace", "CONTAINER and TARGET are not supported"): one uid and one gid
//! mapping, each starting at container id 0. Everything else is INVALID_ARGUMENT
//! naming the field, as containerd's `WithUserNamespace` refuses it (its errors for
//! more than one mapping and for an unmapped container root are client errors).

use crust_proto::runtime::v1 as cri;
use crust_runtime::sandbox::{IdMapping, UserNamespace};

use crate::error::ApiError;

fn invalid(field: &'static str, reason: String) -> ApiError {
    ApiError::InvalidArgument { field, reason }
}

/// `ns` as the pod's (or a container's) user namespace; `None` for the host's.
/// `field` names `userns_options` in the request.
pub fn userns(
    field: &'static str,
    ns: Option<&cri::UserNamespace>,
) -> Result<Option<UserNamespace>, ApiError> {
    let Some(ns) = ns else { return Ok(None) };
    match cri::NamespaceMode::try_from(ns.mode) {
        Ok(cri::NamespaceMode::Node) => {
            // api.proto: "uids/gids ... Only valid with mode POD". Ignoring them
            // would run the pod as host root while the caller thinks it is mapped.
            if !ns.uids.is_empty() || !ns.gids.is_empty() {
                return Err(invalid(
                    field,
                    "mode NODE takes no uids/gids mappings (they are for mode POD)".into(),
                ));
            }
            Ok(None)
        }
        Ok(cri::NamespaceMode::Pod) => Ok(Some(UserNamespace {
            uids: mappings(field, "uids", &ns.uids)?,
            gids: mappings(field, "gids", &ns.gids)?,
        })),
        Ok(mode @ (cri::NamespaceMode::Container | cri::NamespaceMode::Target)) => Err(invalid(
            field,
            format!(
                "mode {} is not supported for user namespaces (only POD or NODE)",
                mode.as_str_name()
            ),
        )),
        Err(_) => Err(invalid(
            field,
            format!("unknown namespace mode {}", ns.mode),
        )),
    }
}

/// CRI `Mount.uidMappings`/`gidMappings` of `config.mounts[i]`: none, or both in
/// the pod's shape (CreateContainer checks they are the pod's own).
pub fn mount_idmap(
    i: usize,
    uids: &[cri::IdMapping],
    gids: &[cri::IdMapping],
) -> Result<Option<UserNamespace>, ApiError> {
    const FIELD: &str = "config.mounts[].uidMappings";
    match (uids.is_empty(), gids.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some(UserNamespace {
            uids: mappings(FIELD, &format!("mounts[{i}].uidMappings"), uids)?,
            gids: mappings(FIELD, &format!("mounts[{i}].gidMappings"), gids)?,
        })),
        _ => Err(invalid(
            FIELD,
            format!("mounts[{i}]: uidMappings and gidMappings go together (OCI: both or neither)"),
        )),
    }
}

/// One mapping from container id 0: kubelet's shape, and the one the idmapped
/// rootfs assumes (the image's root-owned files become the container's root).
fn mappings(
    field: &'static str,
    which: &str,
    maps: &[cri::IdMapping],
) -> Result<Vec<IdMapping>, ApiError> {
    let [m] = maps else {
        return Err(invalid(
            field,
            format!(
                "{which}: exactly one mapping is supported (kubelet sends one, from container id 0), got {}",
                maps.len()
            ),
        ));
    };
    if m.container_id != 0 {
        return Err(invalid(
            field,
            format!(
                "{which}[0].container_id is {}: the mapping must start at 0 (the container's root must be mapped)",
                m.container_id
            ),
        ));
    }
    if m.length == 0 {
        return Err(invalid(field, format!("{which}[0].length is 0")));
    }
    // ids are 32 bits and (u32)-1 is the kernel's "no id": the last mapped id on
    // either side must stay below it.
    for (side, start) in [("host_id", m.host_id), ("container_id", m.container_id)] {
        if u64::from(start) + u64::from(m.length) > u64::from(u32::MAX) {
            return Err(invalid(
                field,
                format!(
                    "{which}[0].{side} {start} + length {} overflows the 32-bit id range",
                    m.length
                ),
            ));
        }
    }
    // Mapping host root into the pod would make its root the host's: the one thing
    // a pod user namespace is there to prevent.
    if m.host_id == 0 {
        return Err(invalid(
            field,
            format!("{which}[0].host_id is 0: host root cannot be mapped into a pod"),
        ));
    }
    Ok(vec![IdMapping {
        host_id: m.host_id,
        container_id: m.container_id,
        length: m.length,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELD: &str = "config.linux.security_context.namespace_options.userns_options";

    fn map(host_id: u32, container_id: u32, length: u32) -> cri::IdMapping {
        cri::IdMapping {
            host_id,
            container_id,
            length,
        }
    }

    fn ns(mode: i32, uids: Vec<cri::IdMapping>, gids: Vec<cri::IdMapping>) -> cri::UserNamespace {
        cri::UserNamespace { mode, uids, gids }
    }

    const POD: i32 = cri::NamespaceMode::Pod as i32;
    const NODE: i32 = cri::NamespaceMode::Node as i32;

    #[test]
    fn accepted_forms() {
        assert_eq!(userns(FIELD, None).unwrap(), None, "absent");
        assert_eq!(
            userns(FIELD, Some(&ns(NODE, vec![], vec![]))).unwrap(),
            None,
            "NODE"
        );
        let got = userns(
            FIELD,
            Some(&ns(
                POD,
                vec![map(100000, 0, 65536)],
                vec![map(200000, 0, 65536)],
            )),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            got.uids,
            vec![IdMapping {
                host_id: 100000,
                container_id: 0,
                length: 65536
            }]
        );
        assert_eq!(got.gids[0].host_id, 200000);
        assert_eq!(got.host_root(), Some((100000, 200000)));
    }

    #[test]
    fn mount_mappings_both_or_neither() {
        let ok = || vec![map(100000, 0, 65536)];
        assert_eq!(mount_idmap(0, &[], &[]).unwrap(), None, "none");
        let got = mount_idmap(0, &ok(), &ok()).unwrap().unwrap();
        assert_eq!(got.host_root(), Some((100000, 100000)));
        for (name, uids, gids, want) in [
            ("uids only", ok(), vec![], "go together"),
            ("gids only", vec![], ok(), "go together"),
            (
                "shifted",
                vec![map(100000, 1, 10)],
                ok(),
                "mounts[3].uidMappings[0]",
            ),
            (
                "length 0",
                ok(),
                vec![map(100000, 0, 0)],
                "mounts[3].gidMappings[0].length",
            ),
        ] {
            match mount_idmap(3, &uids, &gids) {
                Err(ApiError::InvalidArgument { field, reason }) => {
                    assert_eq!(field, "config.mounts[].uidMappings", "{name}");
                    assert!(reason.contains(want), "{name}: {reason}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn refused_forms_name_the_field() {
        let ok = || vec![map(100000, 0, 65536)];
        let cases: Vec<(&str, cri::UserNamespace, &str)> = vec![
            (
                "CONTAINER",
                ns(cri::NamespaceMode::Container as i32, ok(), ok()),
                "CONTAINER",
            ),
            (
                "TARGET",
                ns(cri::NamespaceMode::Target as i32, ok(), ok()),
                "TARGET",
            ),
            ("unknown mode", ns(42, ok(), ok()), "unknown"),
            ("NODE with mappings", ns(NODE, ok(), vec![]), "NODE"),
            (
                "POD without uids",
                ns(POD, vec![], ok()),
                "uids: exactly one",
            ),
            (
                "POD without gids",
                ns(POD, ok(), vec![]),
                "gids: exactly one",
            ),
            (
                "two uid mappings",
                ns(POD, vec![map(100000, 0, 10), map(200000, 10, 10)], ok()),
                "got 2",
            ),
            (
                "container root unmapped",
                ns(POD, vec![map(100000, 1, 65536)], ok()),
                "must start at 0",
            ),
            (
                "length 0",
                ns(POD, ok(), vec![map(100000, 0, 0)]),
                "length is 0",
            ),
            (
                "host overflow",
                ns(POD, vec![map(u32::MAX - 10, 0, 65536)], ok()),
                "overflows",
            ),
            (
                "ends at (u32)-1",
                ns(POD, vec![map(1, 0, u32::MAX)], ok()),
                "overflows",
            ),
            (
                "host root mapped",
                ns(POD, vec![map(0, 0, 65536)], ok()),
                "host root",
            ),
        ];
        for (name, sent, want) in cases {
            match userns(FIELD, Some(&sent)) {
                Err(ApiError::InvalidArgument { field, reason }) => {
                    assert_eq!(field, FIELD, "{name}");
                    assert!(reason.contains(want), "{name}: {reason}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}
