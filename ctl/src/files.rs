//! Reading CRI objects from files and resolving id prefixes, shared by every verb.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;

/// Parses a CRI object from a JSON or YAML file (by extension), in crictl's format:
/// both snake_case names (what Go's JSON decoder reads) and protojson camelCase work.
/// A syntax error names the file, line and column; a wrong value also names the field
/// (`metadata.attempt`), so a hand-written config says where it is wrong.
pub fn parse_cri_file<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    parse_cri_text(&text, yaml)
        .map_err(|e| anyhow::anyhow!("{} is not a {what}: {e}", path.display()))
}

/// The text of a JSON (or, with `yaml`, YAML) document as a `T`; the error says where.
pub fn parse_cri_text<T: serde::de::DeserializeOwned>(text: &str, yaml: bool) -> Result<T, String> {
    // Read to a generic value first: a syntax error is then told apart from a wrong
    // field, and YAML reaches the protojson deserializers as JSON would.
    let value: Value = if yaml {
        serde_yaml::from_str(text).map_err(|e| format!("YAML syntax: {e}"))?
    } else {
        serde_json::from_str(text).map_err(|e| format!("JSON syntax: {e}"))?
    };
    // The line of a JSON value error: the same document read straight from the text,
    // which keeps positions (the generic value has none). serde_yaml places errors
    // raised by the protojson deserializers at the enclosing mapping, a wrong line, so
    // YAML value errors name the field only.
    let line = if yaml {
        None
    } else {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize::<_, T>(&mut de)
            .err()
            .map(|e| e.inner().line())
    };
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let field = e.path().to_string();
        let at = match line {
            Some(l) if l > 0 => format!(" (line {l})"),
            _ => String::new(),
        };
        if field == "." {
            format!("{}{at}", e.inner())
        } else {
            format!("field {field}{at}: {}", e.inner())
        }
    })
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

    use crust_proto::runtime::v1::{ContainerConfig, PodSandboxConfig};

    #[test]
    fn both_name_styles_and_yaml_parse() {
        let json = r#"{"metadata": {"name": "p", "namespace": "n", "uid": "u", "attempt": 1},
                       "log_directory": "/tmp/x", "linux": {"securityContext": {"namespaceOptions": {"network": "NODE"}}}}"#;
        let pod: PodSandboxConfig = parse_cri_text(json, false).unwrap();
        assert_eq!(pod.metadata.as_ref().unwrap().attempt, 1);
        assert_eq!(pod.log_directory, "/tmp/x");
        let yaml = "metadata:\n  name: c\nimage:\n  image: busybox\ncommand: [sh]\n";
        let c: ContainerConfig = parse_cri_text(yaml, true).unwrap();
        assert_eq!(c.image.unwrap().image, "busybox");
        assert_eq!(c.command, ["sh"]);
    }

    #[test]
    fn errors_say_where() {
        let err =
            parse_cri_text::<PodSandboxConfig>("{\n \"metadata\": {\"name\": \"p\",}\n}", false)
                .unwrap_err();
        assert!(
            err.starts_with("JSON syntax:") && err.contains("line 2"),
            "{err}"
        );
        let err = parse_cri_text::<PodSandboxConfig>(
            "{\"metadata\": {\"name\": \"p\",\n \"attempt\": \"x\"}}",
            false,
        )
        .unwrap_err();
        assert!(err.contains("field metadata.attempt (line 2)"), "{err}");
        let err =
            parse_cri_text::<ContainerConfig>("metadata:\n  name: c\nimage:\n  image: [1]\n", true)
                .unwrap_err();
        assert!(err.contains("field image.image: invalid type"), "{err}");
        let err = parse_cri_text::<ContainerConfig>("metadata: [\n", true).unwrap_err();
        assert!(
            err.starts_with("YAML syntax:") && err.contains("line"),
            "{err}"
        );
        let err = parse_cri_text::<PodSandboxConfig>("[1]", false).unwrap_err();
        assert!(!err.contains("field"), "{err}");
    }

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
