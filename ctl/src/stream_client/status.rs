//! What the error stream (SPDY) or channel 3 (WebSocket) says at the end of a session.

use serde::Deserialize;

use super::StreamError;

/// `metav1.Status`, the fields kubectl reads (`remotecommand.errorDecoderV4`).
#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    status: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    causes: Vec<Cause>,
}

#[derive(Deserialize)]
struct Cause {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

/// The exit code the error stream's content reports.
///
/// `json` is true for the v4/v5 protocols, whose server always ends with a
/// `metav1.Status`: `Success` is 0, `Failure` with reason `NonZeroExitCode` carries the
/// code in the `ExitCode` cause, any other failure is [`StreamError::Remote`]. Older
/// protocols send plain text, and nothing on success; their
/// "... exit status N" text is read as exit code N, as kubectl's `exec.CodeExitError`.
pub fn decode_status(data: &[u8], json: bool) -> Result<i32, StreamError> {
    let text = String::from_utf8_lossy(data);
    let text = text.trim();
    if !json {
        if text.is_empty() {
            return Ok(0);
        }
        return match text.rsplit_once("exit status ") {
            Some((_, code)) if code.parse::<i32>().is_ok() => Ok(code.parse().unwrap_or(1)),
            _ => Err(StreamError::Remote {
                message: text.to_string(),
            }),
        };
    }
    if text.is_empty() {
        return Err(StreamError::NoStatus);
    }
    let status: Status = serde_json::from_str(text).map_err(|_| StreamError::BadStatus {
        text: text.to_string(),
    })?;
    match status.status.as_str() {
        "Success" => Ok(0),
        "Failure" => {
            if status.reason == "NonZeroExitCode"
                && let Some(cause) = status
                    .details
                    .iter()
                    .flat_map(|d| &d.causes)
                    .find(|c| c.reason == "ExitCode")
            {
                return cause
                    .message
                    .trim()
                    .parse::<i32>()
                    .map_err(|_| StreamError::BadStatus {
                        text: text.to_string(),
                    });
            }
            let message = if status.message.is_empty() {
                format!("remote failure ({})", status.reason)
            } else {
                status.message
            };
            Err(StreamError::Remote { message })
        }
        _ => Err(StreamError::BadStatus {
            text: text.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_exit_codes() {
        let ok: &[(&str, bool, i32, &str)] = &[
            (
                r#"{"metadata":{},"status":"Success"}"#,
                true,
                0,
                "v4 success",
            ),
            (
                r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#,
                true,
                3,
                "v4 non-zero exit",
            ),
            ("", false, 0, "v1-v3 success is silence"),
            (
                "command terminated with non-zero exit code: exit status 42",
                false,
                42,
                "v1-v3 exit text",
            ),
        ];
        for (data, json, code, what) in ok {
            match decode_status(data.as_bytes(), *json) {
                Ok(c) => assert_eq!(c, *code, "{what}"),
                Err(e) => panic!("{what}: {e}"),
            }
        }
    }

    #[test]
    fn other_failures_carry_the_message() {
        let internal = r#"{"metadata":{},"status":"Failure","message":"error executing command in container: no such file","reason":"InternalError","details":{"causes":[{"message":"x"}]},"code":500}"#;
        match decode_status(internal.as_bytes(), true) {
            Err(StreamError::Remote { message }) => {
                assert!(message.contains("no such file"), "{message}")
            }
            other => panic!("internal error should be Remote, got {other:?}"),
        }
        match decode_status(b"error executing command: boom", false) {
            Err(StreamError::Remote { message }) => assert!(message.contains("boom")),
            other => panic!("v1-v3 text should be Remote, got {other:?}"),
        }
        assert!(
            matches!(decode_status(b"", true), Err(StreamError::NoStatus)),
            "v4 without a status is an error"
        );
        assert!(
            matches!(
                decode_status(b"not json", true),
                Err(StreamError::BadStatus { .. })
            ),
            "v4 garbage is a bad status"
        );
        let bad_code = r#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"x"}]}}"#;
        assert!(
            matches!(
                decode_status(bad_code.as_bytes(), true),
                Err(StreamError::BadStatus { .. })
            ),
            "an unparsable exit code is a bad status"
        );
    }
}
