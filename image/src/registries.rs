//! containers-registries.conf v2 (`man 5 containers-registries.conf`): mirrors,
//! location rewrites, insecure and blocked registries.
//!
//! For a reference, the entry with the longest matching `prefix` applies: its
//! `location` replaces the prefix, its mirrors are tried first (in order), then the
//! (rewritten) origin. Unqualified short names always resolve to docker.io;
//! `unqualified-search-registries`, `short-name-mode`, `[aliases]` and
//! `credential-helpers` are checked but not consulted (kubelet sends qualified names
//! and the pull's credentials). Every other key is refused, naming it: a misspelt
//! `mirrors` that silently meant "no mirror" turned into failed pulls much later.

use std::path::Path;

use serde::Deserialize;

use crate::{ImageError, Reference, registry::Endpoint};

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Registries {
    #[serde(default)]
    pub unqualified_search_registries: Vec<String>,
    #[serde(default)]
    pub short_name_mode: Option<ShortNameMode>,
    #[serde(default)]
    pub aliases: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub credential_helpers: Vec<String>,
    #[serde(default)]
    pub registry: Vec<RegistryEntry>,
    /// The v1 format's tables (`[registries.search]`...): only there to be refused
    /// with a message saying so rather than "unknown field".
    #[serde(default, rename = "registries", deserialize_with = "present")]
    v1_tables: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d)?;
    Ok(true)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShortNameMode {
    Enforcing,
    Permissive,
    Disabled,
}

/// Which references a mirror serves (`pull-from-mirror`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullFromMirror {
    #[default]
    All,
    DigestOnly,
    TagOnly,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RegistryEntry {
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub blocked: bool,
    /// Mirrors are used only for pulls by digest (a tag may move between them).
    #[serde(default)]
    pub mirror_by_digest_only: bool,
    #[serde(default)]
    pub mirror: Vec<Mirror>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Mirror {
    pub location: String,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub pull_from_mirror: PullFromMirror,
}

/// Where to try a pull: the reference as that endpoint names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub endpoint: Endpoint,
    pub reference: Reference,
}

impl Registries {
    /// Reads a registries.conf file. The file must exist: it was configured.
    pub fn load(path: &Path) -> Result<Registries, ImageError> {
        let text =
            std::fs::read_to_string(path).map_err(ImageError::io("read registries.conf", path))?;
        Registries::parse(&text).map_err(|reason| ImageError::RegistriesConf {
            path: path.to_path_buf(),
            reason,
        })
    }

    pub fn parse(text: &str) -> Result<Registries, String> {
        let mut parsed: Registries = toml::from_str(text).map_err(|e| e.to_string())?;
        if parsed.v1_tables {
            return Err(
                "[registries.*] is the v1 format, which crust does not read; \
                 write [[registry]] tables (containers-registries.conf v2)"
                    .into(),
            );
        }
        for entry in &mut parsed.registry {
            if entry.prefix.is_empty() {
                entry.prefix = entry.location.clone();
            }
            if entry.prefix.is_empty() {
                return Err("a [[registry]] needs a prefix or a location".into());
            }
        }
        Ok(parsed)
    }

    fn matching(&self, name: &str) -> Option<&RegistryEntry> {
        self.registry
            .iter()
            .filter(|e| {
                if let Some(domain) = e.prefix.strip_prefix("*.") {
                    let host = name.split('/').next().unwrap_or("");
                    host.ends_with(&format!(".{domain}"))
                } else {
                    name == e.prefix || name.starts_with(&format!("{}/", e.prefix))
                }
            })
            .max_by_key(|e| e.prefix.len())
    }

    /// Sources to try for `reference`, in order. Empty when the registry is blocked.
    pub fn sources(&self, reference: &Reference) -> Vec<Source> {
        let name = reference.name();
        let Some(entry) = self.matching(&name) else {
            return vec![Source {
                endpoint: Endpoint::for_registry(reference.registry(), false),
                reference: reference.clone(),
            }];
        };
        if entry.blocked {
            return Vec::new();
        }
        // The part of the name after the prefix ("" or "/rest").
        let rest = if entry.prefix.starts_with("*.") {
            ""
        } else {
            &name[entry.prefix.len()..]
        };
        let at = |location: &str, insecure: bool| -> Option<Source> {
            let full = if entry.prefix.starts_with("*.") {
                name.clone()
            } else {
                format!("{location}{rest}")
            };
            let (registry, repository) = full.split_once('/')?;
            Some(Source {
                endpoint: Endpoint::for_registry(registry, insecure),
                reference: reference.with_location(registry, repository),
            })
        };
        let by_digest = reference.digest().is_some();
        let mut out: Vec<Source> = entry
            .mirror
            .iter()
            .filter(|m| match m.pull_from_mirror {
                _ if entry.mirror_by_digest_only => by_digest,
                PullFromMirror::All => true,
                PullFromMirror::DigestOnly => by_digest,
                PullFromMirror::TagOnly => !by_digest,
            })
            .filter_map(|m| at(&m.location, m.insecure))
            .collect();
        let origin = if entry.location.is_empty() {
            entry.prefix.as_str()
        } else {
            entry.location.as_str()
        };
        out.extend(at(origin, entry.insecure));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = r#"
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "127.0.0.1:5001/hub"
[[registry.mirror]]
location = "mirror.example.com"
insecure = true

[[registry]]
prefix = "quay.io/team"
location = "internal.example.com:5000/quay-team"
insecure = true

[[registry]]
location = "evil.example.com"
blocked = true
"#;

    fn bases(sources: &[Source]) -> Vec<(String, String)> {
        sources
            .iter()
            .map(|s| (s.endpoint.base.clone(), s.reference.to_string()))
            .collect()
    }

    #[test]
    fn mirrors_rewrites_blocks() {
        let r = Registries::parse(CONF).unwrap();
        let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
            (
                "busybox:1.36",
                vec![
                    (
                        "http://127.0.0.1:5001",
                        "127.0.0.1:5001/hub/library/busybox:1.36",
                    ),
                    (
                        "http://mirror.example.com",
                        "mirror.example.com/library/busybox:1.36",
                    ),
                    (
                        "https://registry-1.docker.io",
                        "docker.io/library/busybox:1.36",
                    ),
                ],
            ),
            (
                "quay.io/team/app:v1",
                vec![(
                    "http://internal.example.com:5000",
                    "internal.example.com:5000/quay-team/app:v1",
                )],
            ),
            (
                "quay.io/teammate/app:v1",
                vec![("https://quay.io", "quay.io/teammate/app:v1")],
            ),
            ("evil.example.com/x", vec![]),
        ];
        for (image, want) in cases {
            let got = bases(&r.sources(&Reference::parse(image).unwrap()));
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(a, b)| (a.into(), b.into()))
                .collect();
            assert_eq!(got, want, "{image}");
        }
    }

    #[test]
    fn rejects_bad_files() {
        assert!(
            Registries::parse("[[registry]]\ninsecure = true\n")
                .unwrap_err()
                .contains("prefix")
        );
        assert!(Registries::parse("nonsense = [").is_err());
    }

    #[test]
    fn misspelt_keys_are_named() {
        for (text, key) in [
            (
                "unqualified-search-registry = []\n",
                "unqualified-search-registry",
            ),
            (
                "[[registry]]\nlocation = \"a.io\"\nmirrors = []\n",
                "mirrors",
            ),
            (
                "[[registry]]\nlocation = \"a.io\"\n[[registry.mirror]]\nlocation = \"b.io\"\ninsecur = true\n",
                "insecur",
            ),
            ("short-name-mode = \"strict\"\n", "strict"),
        ] {
            let err = Registries::parse(text).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
        let v1 = Registries::parse("[registries.search]\nregistries = [\"docker.io\"]\n");
        assert!(v1.unwrap_err().contains("v1 format"));
    }

    #[test]
    fn known_keys_crust_does_not_consult_are_accepted() {
        let text = r#"
unqualified-search-registries = ["docker.io", "quay.io"]
short-name-mode = "enforcing"
credential-helpers = ["containers-auth.json"]
[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
"#;
        let r = Registries::parse(text).unwrap();
        assert_eq!(r.short_name_mode, Some(ShortNameMode::Enforcing));
        assert_eq!(r.aliases.len(), 1);
    }

    #[test]
    fn mirrors_for_digests_or_tags_only() {
        let text = r#"
[[registry]]
location = "a.io"
[[registry.mirror]]
location = "digests.io"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "tags.io"
pull-from-mirror = "tag-only"

[[registry]]
location = "b.io"
mirror-by-digest-only = true
[[registry.mirror]]
location = "m.io"
pull-from-mirror = "tag-only"
"#;
        let r = Registries::parse(text).unwrap();
        let digest = format!("@sha256:{}", "0".repeat(64));
        let hosts = |image: &str| -> Vec<String> {
            r.sources(&Reference::parse(image).unwrap())
                .iter()
                .map(|s| s.reference.registry().to_string())
                .collect()
        };
        assert_eq!(hosts("a.io/x:1"), ["tags.io", "a.io"]);
        assert_eq!(hosts(&format!("a.io/x{digest}")), ["digests.io", "a.io"]);
        // mirror-by-digest-only wins over the mirror's own setting.
        assert_eq!(hosts("b.io/x:1"), ["b.io"]);
        assert_eq!(hosts(&format!("b.io/x{digest}")), ["m.io", "b.io"]);
    }
}
