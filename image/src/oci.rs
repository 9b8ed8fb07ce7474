//! The OCI / Docker v2 JSON documents crust reads: indexes, manifests, image configs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// What the manifest endpoint is asked for, most preferred first.
pub const MANIFEST_ACCEPT: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this node runs (GOARCH naming, as registries use).
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            architecture: architecture.into(),
            os: "linux".into(),
            variant: variant.map(Into::into),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Either kind of document the manifest endpoint returns.
#[derive(Debug)]
pub enum ManifestKind {
    Index(Index),
    Manifest(Manifest),
}

impl ManifestKind {
    /// Decides by content, not only by the Content-Type header: some registries label
    /// OCI documents loosely, and a body is what we verified by digest.
    pub fn parse(media_type: &str, body: &[u8]) -> Result<ManifestKind, String> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        if value.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
            return Err("Docker schema 1 manifests are not supported".into());
        }
        let is_index = value.get("manifests").is_some()
            || media_type == OCI_INDEX
            || media_type == DOCKER_LIST;
        if is_index {
            serde_json::from_value(value)
                .map(ManifestKind::Index)
                .map_err(|e| format!("index: {e}"))
        } else {
            serde_json::from_value(value)
                .map(ManifestKind::Manifest)
                .map_err(|e| format!("manifest: {e}"))
        }
    }
}

/// Picks the manifest for `want` from an index: same os and architecture, and the same
/// variant when the index names one (an entry without a variant matches any).
pub fn select_platform<'a>(index: &'a Index, want: &Platform) -> Option<&'a Descriptor> {
    let candidates = || {
        index.manifests.iter().filter(move |d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == want.os && p.architecture == want.architecture)
        })
    };
    candidates()
        .find(|d| d.platform.as_ref().and_then(|p| p.variant.as_ref()) == want.variant.as_ref())
        .or_else(|| candidates().find(|d| d.platform.as_ref().is_some_and(|p| p.variant.is_none())))
        .or_else(|| {
            if want.variant.is_none() {
                candidates().next()
            } else {
                None
            }
        })
}

/// The image config blob (`application/vnd.oci.image.config.v1+json`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub stop_signal: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// Chain IDs (OCI image spec, "Layer ChainID"): `chain[0] = diff[0]`,
/// `chain[n] = sha256(chain[n-1] + " " + diff[n])`. A layer directory is keyed by its
/// chain ID because its meaning depends on everything below it.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {diff}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, variant: Option<&str>, digest: &str) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: digest.into(),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(Into::into),
            }),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn selects_platform_variant_aware() {
        let index = Index {
            manifests: vec![
                desc("arm", Some("v6"), "arm6"),
                desc("arm", Some("v7"), "arm7"),
                desc("arm64", None, "arm64"),
                desc("amd64", None, "amd64"),
            ],
        };
        let p = |a: &str, v: Option<&str>| Platform {
            architecture: a.into(),
            os: "linux".into(),
            variant: v.map(Into::into),
        };
        let cases = [
            (p("amd64", None), Some("amd64")),
            (p("arm", Some("v7")), Some("arm7")),
            (p("arm", Some("v6")), Some("arm6")),
            (p("arm64", Some("v8")), Some("arm64")),
            (p("arm", Some("v5")), None),
            (p("s390x", None), None),
        ];
        for (want, expect) in cases {
            assert_eq!(
                select_platform(&index, &want).map(|d| d.digest.as_str()),
                expect,
                "{want}"
            );
        }
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = "sha256:aaaa".to_string();
        let b = "sha256:bbbb".to_string();
        let chains = chain_ids(&[a.clone(), b]);
        assert_eq!(chains[0], a);
        // sha256("sha256:aaaa sha256:bbbb")
        use sha2::{Digest, Sha256};
        let want = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(b"sha256:aaaa sha256:bbbb"))
        );
        assert_eq!(chains[1], want);
    }

    #[test]
    fn parses_by_content() {
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            ManifestKind::parse("", index),
            Ok(ManifestKind::Index(_))
        ));
        let m = br#"{"schemaVersion":2,"config":{"digest":"sha256:x","size":1},"layers":[]}"#;
        assert!(matches!(
            ManifestKind::parse(DOCKER_MANIFEST, m),
            Ok(ManifestKind::Manifest(_))
        ));
        let v1 = br#"{"schemaVersion":1,"fsLayers":[]}"#;
        assert!(
            ManifestKind::parse("", v1)
                .unwrap_err()
                .contains("schema 1")
        );
    }
}
