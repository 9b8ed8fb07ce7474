//! Printing CRI responses as crictl does: JSON (protojson field names), YAML, or a
//! human table.

use crust_proto::runtime::v1::{StatusResponse, VersionResponse};
use serde_json::{Map, Value};

/// Output format chosen with `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Yaml,
    Table,
}

/// Renders a JSON value as pretty JSON or YAML. (Tables are verb-specific.)
pub fn render(value: &Value, format: Format) -> String {
    match format {
        Format::Yaml => {
            serde_yaml::to_string(value).expect("a JSON value always serializes to YAML")
        }
        Format::Json | Format::Table => {
            let mut s =
                serde_json::to_string_pretty(value).expect("a JSON value always serializes");
            s.push('\n');
            s
        }
    }
}

/// `crictl version`'s text output.
pub fn version_table(v: &VersionResponse) -> String {
    format!(
        "Version:  {}\nRuntimeName:  {}\nRuntimeVersion:  {}\nRuntimeApiVersion:  {}\n",
        v.version, v.runtime_name, v.runtime_version, v.runtime_api_version
    )
}

/// `crictl info`'s JSON document: `status` and the handler list, with every verbose
/// info entry (each a JSON string from the runtime) merged in at the top level under
/// its key. An entry that is not valid JSON is kept as a string.
pub fn info_value(resp: &StatusResponse, quiet: bool) -> Value {
    let mut doc = Map::new();
    doc.insert(
        "status".into(),
        serde_json::to_value(&resp.status).expect("protojson serialization"),
    );
    if !quiet {
        doc.insert(
            "runtimeHandlers".into(),
            serde_json::to_value(&resp.runtime_handlers).expect("protojson serialization"),
        );
        if let Some(features) = &resp.features {
            doc.insert(
                "features".into(),
                serde_json::to_value(features).expect("protojson serialization"),
            );
        }
        let mut keys: Vec<_> = resp.info.keys().collect();
        keys.sort();
        for key in keys {
            let raw = &resp.info[key];
            doc.insert(
                key.clone(),
                serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone())),
            );
        }
    }
    Value::Object(doc)
}

/// `info -o table`: one line per condition.
pub fn info_table(resp: &StatusResponse) -> String {
    let mut out = format!(
        "{:<16} {:<7} {:<24} {}\n",
        "CONDITION", "STATUS", "REASON", "MESSAGE"
    );
    for c in resp.status.iter().flat_map(|s| &s.conditions) {
        out.push_str(&format!(
            "{:<16} {:<7} {:<24} {}\n",
            c.r#type, c.status, c.reason, c.message
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_proto::runtime::v1::{RuntimeCondition, RuntimeStatus};

    fn status() -> StatusResponse {
        StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![
                    RuntimeCondition {
                        r#type: "RuntimeReady".into(),
                        status: true,
                        ..Default::default()
                    },
                    RuntimeCondition {
                        r#type: "NetworkReady".into(),
                        status: false,
                        reason: "NetworkPluginNotReady".into(),
                        message: "no config".into(),
                    },
                ],
            }),
            info: [
                (
                    "config".to_string(),
                    r#"{"root":"/var/lib/crust"}"#.to_string(),
                ),
                ("raw".into(), "not json".into()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn info_merges_verbose_json_and_keeps_false_conditions() {
        let v = info_value(&status(), false);
        assert_eq!(v["config"]["root"], "/var/lib/crust");
        assert_eq!(v["raw"], "not json");
        let conditions = v["status"]["conditions"].as_array().unwrap();
        assert_eq!(
            conditions[1]["status"], false,
            "false must be printed, not omitted: {v}"
        );
        assert_eq!(conditions[1]["reason"], "NetworkPluginNotReady");
        let quiet = info_value(&status(), true);
        assert!(quiet.get("config").is_none());
    }

    #[test]
    fn yaml_and_table() {
        let yaml = render(&info_value(&status(), true), Format::Yaml);
        assert!(yaml.contains("type: NetworkReady"), "{yaml}");
        let table = info_table(&status());
        assert!(
            table
                .lines()
                .nth(2)
                .unwrap()
                .starts_with("NetworkReady     false"),
            "{table}"
        );
    }

    #[test]
    fn version_text_matches_crictl() {
        let v = VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "crust".into(),
            runtime_version: "0.1.0".into(),
            runtime_api_version: "v1".into(),
        };
        assert_eq!(
            version_table(&v),
            "Version:  0.1.0\nRuntimeName:  crust\nRuntimeVersion:  0.1.0\nRuntimeApiVersion:  v1\n"
        );
    }
}
