//! OCI hooks for the built-in launcher (an `oci` handler's runtime runs its own): each
//! hook is a program run with the container's state JSON on stdin
//! (runtime-spec runtime.md#state), its own argv and environment, and an optional
//! timeout after which it is killed and fails. Called from the single-threaded monitor
//! and from the container process before its exec (a single-threaded copy of it), so
//! this waits with poll(2) on a pidfd rather than with a helper thread.
#![allow(unsafe_code)]

use std::{
    collections::HashMap,
    io::Write,
    os::{
        fd::{AsFd, OwnedFd},
        unix::process::CommandExt,
    },
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    fcntl::OFlag,
    poll::{PollFd, PollFlags, PollTimeout, poll},
    unistd::pipe2,
};
use oci_spec::runtime::{Hook, Spec};

/// How much of a failed hook's output its error keeps (the end of it).
const OUTPUT_TAIL: usize = 2048;

/// What a hook is told about the container.
pub(crate) struct HookState<'a> {
    pub id: &'a str,
    /// `creating`, `created`, `running` or `stopped`.
    pub status: &'static str,
    /// The container process as seen from the /proc the hook sees; 0 once it is gone.
    pub pid: i32,
    /// The directory holding the container's config.json.
    pub bundle: &'a Path,
}

impl HookState<'_> {
    fn json(&self, spec: &Spec) -> Vec<u8> {
        let empty = HashMap::new();
        let mut state = serde_json::json!({
            "ociVersion": spec.version(),
            "id": self.id,
            "status": self.status,
            "bundle": self.bundle,
            "annotations": spec.annotations().as_ref().unwrap_or(&empty),
        });
        if self.pid > 0 {
            state["pid"] = self.pid.into();
        }
        serde_json::to_vec(&state).unwrap_or_default()
    }
}

/// Which of the spec's hook lists a stage reads.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stage {
    /// `prestart` (deprecated) then `createRuntime`, as runc runs them.
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Stage {
    fn hooks(self, spec: &Spec) -> Vec<(&'static str, Hook)> {
        let Some(h) = spec.hooks() else {
            return Vec::new();
        };
        let tag = |name: &'static str, list: &Option<Vec<Hook>>| {
            list.iter()
                .flatten()
                .map(move |hook| (name, hook.clone()))
                .collect::<Vec<_>>()
        };
        match self {
            #[allow(deprecated)]
            Stage::CreateRuntime => {
                let mut all = tag("prestart", h.prestart());
                all.extend(tag("createRuntime", h.create_runtime()));
                all
            }
            Stage::CreateContainer => tag("createContainer", h.create_container()),
            Stage::StartContainer => tag("startContainer", h.start_container()),
            Stage::Poststart => tag("poststart", h.poststart()),
            Stage::Poststop => tag("poststop", h.poststop()),
        }
    }

    /// Whether the spec has any hook for this stage.
    pub(crate) fn wanted(self, spec: &Spec) -> bool {
        !self.hooks(spec).is_empty()
    }

    /// Runs the stage's hooks in order; the first failure ends the stage with an error
    /// naming the hook.
    pub(crate) fn run(self, spec: &Spec, state: &HookState<'_>) -> Result<(), String> {
        let hooks = self.hooks(spec);
        if hooks.is_empty() {
            return Ok(());
        }
        let input = state.json(spec);
        for (name, hook) in hooks {
            run_one(&hook, &input)
                .map_err(|e| format!("{name} hook {}: {e}", hook.path().display()))?;
        }
        Ok(())
    }
}

fn run_one(hook: &Hook, input: &[u8]) -> Result<(), String> {
    let args = hook.args().clone().unwrap_or_default();
    let mut cmd = Command::new(hook.path());
    if let Some((argv0, rest)) = args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    // The OCI hook's env is its whole environment (runc: cmd.Env = h.Env).
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        cmd.env(k, v);
    }
    let (out_r, out_w) =
        pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|e| format!("pipe: {e}"))?;
    let out_w2 = out_w.try_clone().map_err(|e| format!("dup: {e}"))?;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(out_w2));
    let mut child = cmd.spawn().map_err(|e| format!("start: {e}"))?;
    // The write ends live in `cmd`: dropped, so EOF comes when the hook exits.
    drop(cmd);
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that exits without reading gets EPIPE here: not an error of ours.
        let _ = stdin.write_all(input);
    }
    let pidfd =
        crate::proc::pidfd_open(child.id() as i32).map_err(|e| format!("pidfd_open: {e}"))?;
    let deadline = hook
        .timeout()
        .map(|s| Instant::now() + Duration::from_secs(s.max(1) as u64));
    let mut output = Vec::new();
    let mut open = true;
    loop {
        let wait = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
                    .unwrap_or(PollTimeout::ZERO)
            }
        };
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        if open {
            fds.push(PollFd::new(out_r.as_fd(), PollFlags::POLLIN));
        }
        let ready = match poll(&mut fds, wait) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        };
        let exited = fds[0].any().unwrap_or(false);
        let readable = open && fds.get(1).and_then(PollFd::any).unwrap_or(false);
        drop(fds);
        if readable {
            open = drain(&out_r, &mut output);
        }
        if exited {
            break;
        }
        if ready == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "timed out after {} s (killed)",
                hook.timeout().unwrap_or_default()
            ));
        }
    }
    let status = child.wait().map_err(|e| format!("wait: {e}"))?;
    // What is left in the pipe; a daemon the hook left behind may hold it open.
    drain(&out_r, &mut output);
    if status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&output);
    let text = text.trim();
    Err(if text.is_empty() {
        status.to_string()
    } else {
        format!("{status}: {text}")
    })
}

/// Reads what the pipe holds into `out` (keeping its last [`OUTPUT_TAIL`] bytes);
/// false at end of file.
fn drain(pipe: &OwnedFd, out: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(pipe, &mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > OUTPUT_TAIL {
                    out.drain(..out.len() - OUTPUT_TAIL);
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Hooks;

    fn spec_with(stage: &str, hooks: Vec<Hook>) -> Spec {
        let mut h = Hooks::default();
        match stage {
            "createRuntime" => h.set_create_runtime(Some(hooks)),
            "poststop" => h.set_poststop(Some(hooks)),
            _ => unreachable!(),
        };
        let mut spec = Spec::default();
        spec.set_hooks(Some(h));
        spec
    }

    fn sh(script: &str, timeout: Option<i64>) -> Hook {
        let mut h = Hook::default();
        h.set_path("/bin/sh".into());
        h.set_args(Some(vec!["sh".into(), "-c".into(), script.into()]));
        h.set_env(Some(vec!["MARK=from-env".into()]));
        h.set_timeout(timeout);
        h
    }

    fn state(bundle: &Path) -> HookState<'_> {
        HookState {
            id: "c1",
            status: "creating",
            pid: 42,
            bundle,
        }
    }

    #[test]
    fn a_hook_reads_the_state_and_its_own_env() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let script = format!("cat > {0}.json; echo $MARK > {0}.env", out.display());
        let spec = spec_with("createRuntime", vec![sh(&script, Some(10))]);
        Stage::CreateRuntime.run(&spec, &state(tmp.path())).unwrap();
        let got: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.with_extension("json")).unwrap()).unwrap();
        assert_eq!(got["id"], "c1");
        assert_eq!(got["status"], "creating");
        assert_eq!(got["pid"], 42);
        assert_eq!(got["bundle"], tmp.path().display().to_string());
        assert_eq!(
            std::fs::read_to_string(out.with_extension("env")).unwrap(),
            "from-env\n"
        );
        assert!(!Stage::Poststop.wanted(&spec), "no poststop hooks");
    }

    #[test]
    fn failures_and_timeouts_name_the_hook_and_keep_its_output() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec_with("poststop", vec![sh("echo broken >&2; exit 3", None)]);
        let err = Stage::Poststop.run(&spec, &state(tmp.path())).unwrap_err();
        assert!(err.contains("poststop hook /bin/sh"), "{err}");
        assert!(
            err.contains("exit status: 3") && err.contains("broken"),
            "{err}"
        );

        let spec = spec_with("createRuntime", vec![sh("exec sleep 30", Some(1))]);
        let err = Stage::CreateRuntime
            .run(&spec, &state(tmp.path()))
            .unwrap_err();
        assert!(err.contains("timed out after 1 s"), "{err}");

        let mut missing = Hook::default();
        missing.set_path("/nonexistent/hook".into());
        let spec = spec_with("createRuntime", vec![missing]);
        let err = Stage::CreateRuntime
            .run(&spec, &state(tmp.path()))
            .unwrap_err();
        assert!(err.contains("/nonexistent/hook: start"), "{err}");
    }
}
