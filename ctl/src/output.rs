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
    /// Go text/template (a subset, see `template`) over the JSON document, with
    /// `--template`.
    GoTemplate,
}

/// `--template`'s text, set once from the command line.
static TEMPLATE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the template `-o go-template` runs (crustctl's global `--template`).
pub fn set_template(template: String) {
    let _ = TEMPLATE.set(template);
}

/// Checks that a template was given and parses: before any call, so a bad one fails
/// as crictl's "failed to parse go-template" does, not after the runtime acted.
pub fn check_template() -> anyhow::Result<()> {
    let Some(t) = TEMPLATE.get() else {
        anyhow::bail!("-o go-template needs --template");
    };
    crate::template::Template::parse(t)
        .map_err(|e| anyhow::anyhow!("failed to parse go-template: {e}"))?;
    Ok(())
}

/// Renders a JSON value as pretty JSON, YAML, or through `--template` (followed by a
/// newline, as crictl's `fmt.Println`). (Tables are verb-specific.)
pub fn render(value: &Value, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Yaml => {
            serde_yaml::to_string(value).expect("a JSON value always serializes to YAML")
        }
        Format::Json | Format::Table => {
            let mut s =
                serde_json::to_string_pretty(value).expect("a JSON value always serializes");
            s.push('\n');
            s
        }
        Format::GoTemplate => {
            let Some(t) = TEMPLATE.get() else {
                anyhow::bail!("-o go-template needs --template");
            };
            let mut s = crate::template::Template::parse(t)?.execute(value)?;
            s.push('\n');
            s
        }
    })
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

/// Rows as crictl prints its tables: Go's `tabwriter.NewWriter(w, 20, 1, 3, ' ', 0)`,
/// so every column but the last is at least 20 wide and 3 wider than its widest cell;
/// the last column is not padded.
pub fn table<S: AsRef<str>>(rows: &[Vec<S>]) -> String {
    const MIN_WIDTH: usize = 20;
    const PADDING: usize = 3;
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            let widest = rows
                .iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.as_ref().chars().count())
                .max()
                .unwrap_or(0);
            (widest + PADDING).max(MIN_WIDTH)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let cell = cell.as_ref();
            out.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// go-units' `HumanDuration`, which crictl prints ages with ("About a minute").
pub fn human_duration(d: std::time::Duration) -> String {
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    // Go rounds the hours half away from zero.
    let hours = (seconds + 1800) / 3600;
    match () {
        _ if seconds < 1 => "Less than a second".into(),
        _ if seconds == 1 => "1 second".into(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// crictl's CREATED column: the age of a CRI timestamp (nanoseconds since the epoch)
/// at `now`, as "5 seconds ago".
pub fn ago(created_at: i64, now: std::time::SystemTime) -> String {
    let created = std::time::UNIX_EPOCH
        + std::time::Duration::from_nanos(u64::try_from(created_at).unwrap_or(0));
    let age = now.duration_since(created).unwrap_or_default();
    format!("{} ago", human_duration(age))
}

/// A CRI timestamp (nanoseconds since the epoch) in RFC 3339, UTC, as crictl's
/// `inspect` prints them. Negative (unset) times print as the epoch.
pub fn rfc3339(nanos: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(u64::try_from(nanos).unwrap_or(0));
    if nanos % 1_000_000_000 == 0 {
        humantime::format_rfc3339_seconds(t).to_string()
    } else {
        humantime::format_rfc3339_nanos(t).to_string()
    }
}

/// Replaces the CRI timestamps (protojson: int64 as a string) at `fields` of the
/// object `status` by their RFC 3339 form.
pub fn timestamps_rfc3339(status: &mut Value, fields: &[&str]) {
    for field in fields {
        if let Some(v) = status.get_mut(*field) {
            let nanos = match v {
                Value::String(s) => s.parse::<i64>().ok(),
                Value::Number(n) => n.as_i64(),
                _ => None,
            };
            if let Some(nanos) = nanos {
                *v = Value::String(rfc3339(nanos));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_as_go_tabwriter_does() {
        let rows = vec![
            vec!["CONTAINER", "NAME", "POD"],
            vec!["abc", "a-rather-long-container-name", "p"],
        ];
        assert_eq!(
            table(&rows),
            "CONTAINER           NAME                           POD\n\
             abc                 a-rather-long-container-name   p\n",
            "min width 20, else widest + 3; the last column unpadded"
        );
        assert_eq!(table::<&str>(&[]), "");
    }

    #[test]
    fn durations_like_go_units() {
        use std::time::Duration;
        for (secs, want) in [
            (0, "Less than a second"),
            (1, "1 second"),
            (5, "5 seconds"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (119, "About a minute"),
            (120, "2 minutes"),
            (59 * 60, "59 minutes"),
            (60 * 60, "About an hour"),
            (90 * 60 - 1, "About an hour"),
            (90 * 60, "2 hours"),
            (47 * 3600, "47 hours"),
            (48 * 3600, "2 days"),
            (14 * 86400, "2 weeks"),
            (60 * 86400, "2 months"),
            (2 * 365 * 86400, "2 years"),
        ] {
            assert_eq!(human_duration(Duration::from_secs(secs)), want, "{secs} s");
        }
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(ago(995_000_000_000, now), "5 seconds ago");
        assert_eq!(
            ago(2_000_000_000_000, now),
            "Less than a second ago",
            "clock skew"
        );
    }

    #[test]
    fn timestamps_in_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(
            rfc3339(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        let mut status = serde_json::json!({"createdAt": "1700000000000000000", "exitCode": 3});
        timestamps_rfc3339(&mut status, &["createdAt", "finishedAt"]);
        assert_eq!(status["createdAt"], "2023-11-14T22:13:20Z");
        assert_eq!(status["exitCode"], 3);
        assert!(status.get("finishedAt").is_none());
    }
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
        let yaml = render(&info_value(&status(), true), Format::Yaml).unwrap();
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
