//! The Kubernetes remote-command protocol's vocabulary (k8s.io/apimachinery
//! `pkg/util/remotecommand`, kubelet `cri/streaming/remotecommand`): protocol names,
//! how an exit is reported on the error stream, and resize messages.

use crust_runtime::container::TerminalSize;
use serde::Deserialize;

/// SPDY remote-command protocols (`X-Stream-Protocol-Version`), newest first.
pub const SPDY_PROTOCOLS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// The SPDY port-forward protocol.
pub const PORTFORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// How the error stream reports the end of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFormat {
    /// v4 and v5: a `metav1.Status` JSON object, also for success.
    Json,
    /// v1–v3: the error text, and nothing on success.
    Text,
}

impl StatusFormat {
    /// The format of a negotiated protocol (`""` is the pre-negotiation v1).
    pub fn of(protocol: &str) -> StatusFormat {
        if protocol.starts_with("v4.") || protocol.starts_with("v5.") {
            StatusFormat::Json
        } else {
            StatusFormat::Text
        }
    }
}

/// How a session ended, as far as the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The command exited non-zero.
    ExitCode(i32),
    /// It could not run, or the session broke.
    Error(String),
}

impl Outcome {
    pub fn of_exit(code: i32) -> Outcome {
        if code == 0 {
            Outcome::Success
        } else {
            Outcome::ExitCode(code)
        }
    }

    /// What goes on the error stream; `None` means nothing (v1–v3 success).
    pub fn encode(&self, format: StatusFormat) -> Option<Vec<u8>> {
        let message = match self {
            Outcome::Success => None,
            Outcome::ExitCode(code) => Some(format!(
                "command terminated with non-zero exit code: exit status {code}"
            )),
            Outcome::Error(e) => Some(format!("error executing command in container: {e}")),
        };
        match format {
            StatusFormat::Text => message.map(String::into_bytes),
            StatusFormat::Json => {
                // metav1.Status as kubelet marshals it (no TypeMeta); kubectl reads the
                // exit code from details.causes[reason=ExitCode].message.
                let value = match self {
                    Outcome::Success => serde_json::json!({"metadata": {}, "status": "Success"}),
                    Outcome::ExitCode(code) => serde_json::json!({
                        "metadata": {},
                        "status": "Failure",
                        "message": message,
                        "reason": "NonZeroExitCode",
                        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
                    }),
                    Outcome::Error(_) => serde_json::json!({
                        "metadata": {},
                        "status": "Failure",
                        "message": message,
                        "reason": "InternalError",
                        "details": {"causes": [{"message": message}]},
                        "code": 500,
                    }),
                };
                Some(value.to_string().into_bytes())
            }
        }
    }
}

#[derive(Deserialize)]
struct Resize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Splits a resize stream (concatenated JSON objects `{"Width":80,"Height":24}`) into
/// sizes; `buf` keeps an incomplete trailing object for the next call.
pub fn parse_resizes(buf: &mut Vec<u8>) -> Vec<TerminalSize> {
    let mut sizes = Vec::new();
    let mut consumed = 0;
    let mut stream = serde_json::Deserializer::from_slice(buf).into_iter::<Resize>();
    loop {
        match stream.next() {
            Some(Ok(r)) => {
                consumed = stream.byte_offset();
                sizes.push(TerminalSize {
                    width: r.width,
                    height: r.height,
                });
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(_)) => {
                // Garbage: drop it all rather than wedge the stream.
                consumed = buf.len();
                break;
            }
            None => {
                consumed = buf.len();
                break;
            }
        }
    }
    buf.drain(..consumed);
    sizes
}

/// The first protocol the client offers that we speak (the client's order wins, as in
/// `httpstream.Handshake`). Header values may hold comma-separated lists.
pub fn negotiate<'a>(offered: impl Iterator<Item = &'a str>, ours: &[&str]) -> Option<String> {
    offered
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| ours.contains(p))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_become_v4_status() {
        let json: serde_json::Value =
            serde_json::from_slice(&Outcome::of_exit(3).encode(StatusFormat::Json).unwrap())
                .unwrap();
        assert_eq!(json["status"], "Failure");
        assert_eq!(json["reason"], "NonZeroExitCode");
        assert_eq!(json["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(json["details"]["causes"][0]["message"], "3");
        assert_eq!(
            Outcome::of_exit(0).encode(StatusFormat::Json).unwrap(),
            br#"{"metadata":{},"status":"Success"}"#
        );
        assert_eq!(Outcome::Success.encode(StatusFormat::Text), None);
        assert!(
            String::from_utf8(Outcome::of_exit(2).encode(StatusFormat::Text).unwrap())
                .unwrap()
                .contains("non-zero exit code")
        );
    }

    #[test]
    fn resize_messages_split_across_reads() {
        let mut buf = br#"{"Width":100,"Height":40}{"Width":8"#.to_vec();
        assert_eq!(
            parse_resizes(&mut buf),
            vec![TerminalSize {
                width: 100,
                height: 40
            }]
        );
        buf.extend_from_slice(br#"0,"Height":24}"#);
        assert_eq!(
            parse_resizes(&mut buf),
            vec![TerminalSize {
                width: 80,
                height: 24
            }]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn negotiation_prefers_the_clients_order() {
        let ours = &SPDY_PROTOCOLS;
        assert_eq!(
            negotiate(["v4.channel.k8s.io, v5.channel.k8s.io"].into_iter(), ours).as_deref(),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(negotiate(["v9.channel.k8s.io"].into_iter(), ours), None);
        assert_eq!(
            StatusFormat::of("v5.channel.k8s.io"),
            StatusFormat::Json,
            "v5 keeps v4's status"
        );
        assert_eq!(StatusFormat::of("channel.k8s.io"), StatusFormat::Text);
    }
}
