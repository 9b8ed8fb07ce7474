//! Running one CNI plugin binary (CNI spec 1.0 "execution protocol"): parameters in
//! `CNI_*` environment variables, the network configuration on stdin, the result or a
//! structured error on stdout.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use tokio::{io::AsyncWriteExt, process::Command};

use crate::NetworkError;

/// The parameters of one invocation.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub command: &'static str,
    pub container_id: &'a str,
    pub netns: &'a Path,
    pub ifname: &'a str,
    /// `CNI_ARGS` pairs.
    pub args: &'a [(String, String)],
    pub bin_dirs: &'a [PathBuf],
    pub timeout: Duration,
}

/// Runs `plugin` with `config` on stdin. Returns its stdout parsed as JSON (`Null` for
/// an empty reply, as DEL gives). A non-zero exit becomes [`NetworkError::Plugin`] with
/// the plugin's own error message and its stderr; a plugin that does not finish in
/// time is killed.
pub async fn exec(
    plugin: &Path,
    config: &Value,
    inv: &Invocation<'_>,
) -> Result<Value, NetworkError> {
    let name = plugin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fail = |message: String| NetworkError::Plugin {
        plugin: name.clone(),
        command: inv.command,
        message,
    };
    let cni_args = inv
        .args
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";");
    let cni_path = inv
        .bin_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let mut child = Command::new(plugin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", inv.command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", cni_args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("start {}: {e}", plugin.display())))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = serde_json::to_vec(config).expect("config serializes");
    let run = async {
        stdin
            .write_all(&input)
            .await
            .map_err(|e| fail(format!("write config: {e}")))?;
        drop(stdin);
        child
            .wait_with_output()
            .await
            .map_err(|e| fail(format!("wait: {e}")))
    };
    let output = tokio::time::timeout(inv.timeout, run)
        .await
        .map_err(|_| fail(format!("did not finish within {:?} (killed)", inv.timeout)))??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        // CNI errors are JSON on stdout: {"code": 7, "msg": "...", "details": "..."}.
        let message = match serde_json::from_str::<Value>(stdout.trim()) {
            Ok(err) => {
                let msg = err
                    .get("msg")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let details = err.get("details").and_then(Value::as_str).unwrap_or("");
                let code = err.get("code").and_then(Value::as_u64).unwrap_or(0);
                if details.is_empty() {
                    format!("{msg} (code {code})")
                } else {
                    format!("{msg}: {details} (code {code})")
                }
            }
            Err(_) => format!("exited with {}: {}", output.status, stdout.trim()),
        };
        let stderr = stderr.trim();
        return Err(fail(if stderr.is_empty() {
            message
        } else {
            format!("{message}; stderr: {stderr}")
        }));
    }
    if stdout.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(stdout.trim())
        .map_err(|e| fail(format!("invalid result JSON: {e}: {stdout}")))
}
