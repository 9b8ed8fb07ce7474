//! `CheckpointContainer`: a running container of an `oci` handler (runc or crun with
//! CRIU) into a tar archive at `location`, while it keeps running. Built-in launcher
//! containers are refused (FAILED_PRECONDITION); restore is CreateContainer from
//! the archive ([`super::create_container_restore`]).

use std::{path::Path, time::Duration};

use crust_proto::runtime::v1::{CheckpointContainerRequest, CheckpointContainerResponse};

use crate::{daemon::Daemon, error::ApiError};

/// CRI: "Timeout of zero means to use the CRI default"; CRIU under an emulated node
/// takes seconds, a large memory image minutes.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

pub async fn checkpoint_container(
    daemon: &Daemon,
    req: CheckpointContainerRequest,
) -> Result<CheckpointContainerResponse, ApiError> {
    tracing::Span::current().record(
        "container_id",
        crust_runtime::excerpt(&req.container_id).as_ref(),
    );
    let location = check_location(&req.location)?;
    let timeout = match req.timeout {
        t if t < 0 => {
            return Err(ApiError::InvalidArgument {
                field: "timeout",
                reason: format!("{t} is negative"),
            });
        }
        0 => DEFAULT_TIMEOUT,
        t => Duration::from_secs(t as u64),
    };
    daemon
        .sandboxes
        .checkpoint_container(&req.container_id, location, timeout)
        .await?;
    Ok(CheckpointContainerResponse {})
}

/// The archive's path: absolute (crustd's cwd means nothing to a client), in an
/// existing directory, not itself a directory.
fn check_location(location: &str) -> Result<&Path, ApiError> {
    let bad = |reason: String| ApiError::InvalidArgument {
        field: "location",
        reason,
    };
    if location.is_empty() {
        return Err(bad("empty: name the archive file to write".into()));
    }
    let path = Path::new(location);
    let shown = crust_runtime::excerpt(location);
    if !path.is_absolute() {
        return Err(bad(format!("{shown:?} is not an absolute path")));
    }
    let Some(parent) = path.parent().filter(|_| path.file_name().is_some()) else {
        return Err(bad(format!("{shown:?} names no file")));
    };
    if !parent.is_dir() {
        return Err(bad(format!(
            "{shown:?}: directory {} does not exist",
            parent.display()
        )));
    }
    if path.is_dir() {
        return Err(bad(format!(
            "{shown:?} is a directory, not an archive file"
        )));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        for (loc, ok) in [
            ("", false),
            ("ckpt.tar", false),
            ("./ckpt.tar", false),
            ("/", false),
            ("/tmp", false),
            ("/no/such/dir/ckpt.tar", false),
            ("/tmp/ckpt.tar", true),
        ] {
            let got = check_location(loc);
            assert_eq!(got.is_ok(), ok, "{loc:?}: {got:?}");
            if let Err(e) = got {
                assert!(e.to_string().contains("location"), "{loc:?}: {e}");
            }
        }
    }
}
