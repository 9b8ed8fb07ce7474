//! Reading CRI objects from files and resolving id prefixes, shared by every verb.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;

/// Parses a CRI object from a JSON or YAML file (by extension), in crictl's format:
/// both snake_case names (what Go's JSON decoder reads) and protojson camelCase work.
pub fn parse_cri_file<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let value: Value =
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => serde_yaml::from_str(&text)
                .with_context(|| format!("parse YAML {}", path.display()))?,
            _ => serde_json::from_str(&text)
                .with_context(|| format!("parse JSON {}", path.display()))?,
        };
    serde_json::from_value(value).with_context(|| format!("{} is not a {what}", path.display()))
}

/// The objects of `all` that `ids` (full ids or unique prefixes) name, in order.
/// `kind` names the objects in errors ("pod", "container").
pub fn by_prefixes<T: Clone>(
    all: &[T],
    ids: &[String],
    id_of: impl Fn(&T) -> &str,
    kind: &str,
) -> anyhow::Result<Vec<T>> {
    let mut picked = Vec::new();
    for id in ids {
        let matching: Vec<&T> = all
            .iter()
            .filter(|x| id_of(x).starts_with(id.as_str()))
            .collect();
        match matching.as_slice() {
            [] => bail!("{kind} {id:?} not found"),
            [one] => picked.push((*one).clone()),
            many => bail!(
                "{kind} id prefix {id:?} is ambiguous ({} {kind}s)",
                many.len()
            ),
        }
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_resolve_uniquely() {
        let all = vec!["abc1".to_string(), "abc2".to_string(), "def".to_string()];
        let got = by_prefixes(&all, &["d".into(), "abc2".into()], |s| s.as_str(), "pod").unwrap();
        assert_eq!(got, vec!["def".to_string(), "abc2".to_string()]);
        let err = by_prefixes(&all, &["abc".into()], |s| s.as_str(), "pod")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ambiguous (2 pods)"), "{err}");
        assert!(
            by_prefixes(&all, &["x".into()], |s| s.as_str(), "pod")
                .unwrap_err()
                .to_string()
                .contains("not found")
        );
    }
}
