//! Restore: a container created from a checkpoint archive (CRI `image.image` naming
//! one, as kubelet and crictl restore with CRI-O and containerd) and started by its OCI
//! runtime's `restore` (runc driving CRIU) instead of `start`.
//!
//! The archive is the layout [`super::container_checkpoint`] writes, CRI-O's and
//! containerd's: `checkpoint/` (CRIU's images), `config.dump`, `spec.dump`,
//! `rootfs-diff.tar`. CreateContainer reads `config.dump` and `spec.dump` (the server
//! takes the image, command and environment from them), then unpacks CRIU's images
//! into the container's directory and the writable layer's tar into its new `upper`;
//! StartContainer has the pod's monitor run `<runtime> restore --detach` on a bundle
//! generated for the new pod, and the processes go on where they were checkpointed.

use std::{
    fs::{self, File},
    io::Read,
    path::{Component, Path, PathBuf},
};

use serde::Deserialize;

use super::Container;
use crate::monitor::RestoreImages;

/// Set on a restored container: the archive it was restored from (CRI-O and
/// containerd set none; ContainerStatus shows it among the annotations).
pub const RESTORED_FROM_ANNOTATION: &str = "io.crust.checkpoint.restored-from";
/// Set on a restored container: when the archive's checkpoint was taken.
pub const CHECKPOINTED_AT_ANNOTATION: &str = "io.crust.checkpoint.checkpointed-at";

/// The largest `config.dump` or `spec.dump` read: a spec is a few KiB; anything this
/// large is not one.
const MAX_DUMP: u64 = 4 << 20;

/// What a checkpoint archive says about the container in it.
#[derive(Debug, Clone)]
pub struct CheckpointArchive {
    /// The checkpointed container's id and name (`config.dump`).
    pub id: String,
    pub name: String,
    /// The image it ran, as the user named it (`rootfsImageName`, else `rootfsImage`).
    pub image: String,
    /// When the checkpoint was taken (RFC 3339), possibly empty.
    pub checkpointed_at: String,
    /// The OCI spec it ran with (`spec.dump`).
    pub spec: oci_spec::runtime::Spec,
}

/// Why a path is not a checkpoint archive to restore from.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("checkpoint archive {path} does not exist")]
    NotFound { path: PathBuf },
    #[error("{path} is not a regular file (a checkpoint archive is a tar file)")]
    NotAFile { path: PathBuf },
    #[error("checkpoint archive {path}: cannot read it as a tar archive: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a checkpoint archive: it has no {member}")]
    Missing { path: PathBuf, member: &'static str },
    #[error("checkpoint archive {path}: {member}: {reason}")]
    BadMember {
        path: PathBuf,
        member: &'static str,
        reason: String,
    },
}

/// `config.dump` as CRI-O, containerd and crust write it (checkpointctl's
/// `ContainerConfig`); every field optional, the image name required below.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ConfigDumpIn {
    id: String,
    name: String,
    rootfs_image: String,
    rootfs_image_name: String,
    checkpointed_time: Option<serde_json::Value>,
}

/// An archive member's name without a leading `./`.
fn member_name(path: &Path) -> String {
    let s = path.to_string_lossy();
    s.trim_start_matches("./").to_string()
}

/// Reads and checks a checkpoint archive (blocking: run it off the async threads).
/// Only `config.dump` and `spec.dump` are read; the rest is skipped over.
pub fn read_checkpoint_archive(path: &Path) -> Result<CheckpointArchive, ArchiveError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ArchiveError::NotFound {
                path: path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(ArchiveError::Unreadable {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !meta.is_file() {
        return Err(ArchiveError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let unreadable = |source| ArchiveError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(unreadable)?;
    let mut archive = tar::Archive::new(file);
    let (mut config, mut spec, mut images) = (None, None, false);
    for entry in archive.entries_with_seek().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let name = member_name(&entry.path().map_err(unreadable)?);
        let slot = match name.as_str() {
            "config.dump" => &mut config,
            "spec.dump" => &mut spec,
            n if n == "checkpoint" || n.starts_with("checkpoint/") => {
                images = true;
                continue;
            }
            _ => continue,
        };
        let mut text = String::new();
        (&mut entry)
            .take(MAX_DUMP + 1)
            .read_to_string(&mut text)
            .map_err(unreadable)?;
        if text.len() as u64 > MAX_DUMP {
            return Err(ArchiveError::BadMember {
                path: path.to_path_buf(),
                member: if name == "config.dump" {
                    "config.dump"
                } else {
                    "spec.dump"
                },
                reason: format!("larger than {MAX_DUMP} bytes"),
            });
        }
        *slot = Some(text);
    }
    let missing = |member| ArchiveError::Missing {
        path: path.to_path_buf(),
        member,
    };
    let config = config.ok_or_else(|| missing("config.dump"))?;
    let spec = spec.ok_or_else(|| missing("spec.dump"))?;
    if !images {
        return Err(missing("checkpoint/ directory (CRIU's images)"));
    }
    let bad = |member, reason: String| ArchiveError::BadMember {
        path: path.to_path_buf(),
        member,
        reason,
    };
    let config: ConfigDumpIn =
        serde_json::from_str(&config).map_err(|e| bad("config.dump", e.to_string()))?;
    let spec: oci_spec::runtime::Spec =
        serde_json::from_str(&spec).map_err(|e| bad("spec.dump", e.to_string()))?;
    let image = if config.rootfs_image_name.is_empty() {
        config.rootfs_image
    } else {
        config.rootfs_image_name
    };
    if image.is_empty() {
        return Err(bad(
            "config.dump",
            "names no image (rootfsImageName and rootfsImage are empty)".into(),
        ));
    }
    if spec
        .process()
        .as_ref()
        .and_then(|p| p.args().as_ref())
        .is_none_or(|a| a.is_empty())
    {
        return Err(bad("spec.dump", "has no process.args".into()));
    }
    let checkpointed_at = match config.checkpointed_time {
        Some(serde_json::Value::String(s)) => s,
        _ => String::new(),
    };
    Ok(CheckpointArchive {
        id: config.id,
        name: config.name,
        image,
        checkpointed_at,
        spec,
    })
}

type IoFail = (&'static str, PathBuf, std::io::Error);

/// Unpacks what the restore needs from `archive` into the container's directory
/// `dir`: CRIU's images into `dir/checkpoint`, the writable layer's tar into
/// `dir/upper` (before the overlay is mounted, so it is the new layer's content).
/// Members escaping their directory are skipped (tar's `unpack_in`). Blocking.
pub(crate) fn unpack_for_restore(archive: &Path, dir: &Path) -> Result<(), IoFail> {
    let file = File::open(archive).map_err(|e| ("open", archive.to_path_buf(), e))?;
    let mut tar = tar::Archive::new(file);
    let upper = dir.join("upper");
    fs::create_dir_all(dir.join("checkpoint"))
        .map_err(|e| ("create", dir.join("checkpoint"), e))?;
    let read = |e| ("read", archive.to_path_buf(), e);
    for entry in tar.entries().map_err(read)? {
        let mut entry = entry.map_err(read)?;
        let name = member_name(&entry.path().map_err(read)?);
        if name.starts_with("checkpoint/") {
            entry
                .unpack_in(dir)
                .map_err(|e| ("unpack", dir.join(&name), e))?;
        } else if name == "rootfs-diff.tar" {
            unpack_layer(entry, &upper)?;
        }
    }
    Ok(())
}

/// The writable layer as the checkpoint tarred it: overlayfs whiteouts are 0:0
/// character devices, which tar's unpack would turn into empty files (it makes no
/// device nodes), so they are made here; other device nodes are skipped (the rootfs
/// is `nodev`, and the container's devices live in its `/dev`).
fn unpack_layer(reader: impl Read, upper: &Path) -> Result<(), IoFail> {
    let mut tar = tar::Archive::new(reader);
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(true);
    tar.set_preserve_mtime(true);
    tar.set_unpack_xattrs(true);
    tar.set_overwrite(true);
    let read = |e| ("read", upper.join("rootfs-diff.tar"), e);
    for entry in tar.entries().map_err(read)? {
        let mut entry = entry.map_err(read)?;
        let rel = entry.path().map_err(read)?.into_owned();
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() {
            let whiteout = kind.is_character_special()
                && entry.header().device_major().ok().flatten() == Some(0)
                && entry.header().device_minor().ok().flatten() == Some(0);
            if whiteout {
                make_whiteout(upper, &rel)?;
            }
            continue;
        }
        entry
            .unpack_in(upper)
            .map_err(|e| ("unpack", upper.join(&rel), e))?;
    }
    Ok(())
}

/// `mknod c 0 0` at `rel` under `upper`, when `rel` is plain names whose parent is a
/// real directory inside `upper` (no `..`, no symlink on the way out).
fn make_whiteout(upper: &Path, rel: &Path) -> Result<(), IoFail> {
    let plain = rel
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .all(|c| matches!(c, Component::Normal(_)));
    let Some(name) = rel.file_name().filter(|_| plain) else {
        return Ok(());
    };
    let parent = upper.join(rel.parent().unwrap_or(Path::new("")));
    let (Ok(root), Ok(real)) = (upper.canonicalize(), parent.canonicalize()) else {
        return Ok(());
    };
    if !real.starts_with(&root) {
        return Ok(());
    }
    let path = real.join(name);
    let _ = fs::remove_file(&path);
    nix::sys::stat::mknod(
        &path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .map_err(|e| ("mknod", path.clone(), std::io::Error::from(e)))
}

/// Where StartContainer's restore finds the images CreateContainer unpacked, and
/// where CRIU writes its `restore.log`.
pub(super) fn restore_images(c: &Container) -> RestoreImages {
    RestoreImages {
        images: c.dir.join("checkpoint"),
        work: c.dir.join("restore-work"),
    }
}

/// After a restore: CRIU's images are in the processes now, and can be as large as
/// their memory. Best-effort.
pub(super) async fn drop_restore_images(c: &Container) {
    let images = c.dir.join("checkpoint");
    if let Err(e) = tokio::task::spawn_blocking(move || fs::remove_dir_all(images))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    {
        tracing::warn!(container_id = %c.id, error = %e, "remove the unpacked checkpoint images");
    }
}

impl crate::sandbox::SandboxManager {
    /// What a restore needs of its pod and config, checked before anything is made:
    /// an `oci` handler (CRIU is driven by the OCI runtime; the built-in launcher has
    /// none, as for CheckpointContainer), no terminal (the checkpoint has no pty to
    /// reattach) and no pod user namespace (the layer's files are the host ids the
    /// checkpointed container wrote).
    pub(super) fn check_restorable(
        &self,
        spec: &super::ContainerSpec,
        sandbox: &crate::sandbox::Sandbox,
    ) -> Result<(), crate::error::RuntimeError> {
        use crate::error::RuntimeError;
        if !self
            .config
            .oci_runtimes
            .contains_key(&sandbox.spec.runtime_handler)
        {
            return Err(RuntimeError::Unsupported {
                what: "CreateContainer from a checkpoint archive in a built-in launcher pod",
                reason: format!(
                    "restore needs an `oci` runtime handler (runc or crun with CRIU); \
                     pod {} runs under handler {:?}, the built-in launcher",
                    sandbox.id, sandbox.spec.runtime_handler
                ),
            });
        }
        if spec.tty {
            return Err(RuntimeError::Unsupported {
                what: "restoring a container with a terminal (config.tty)",
                reason: "crust restores containers whose stdio are pipes".into(),
            });
        }
        if sandbox.spec.userns.is_some() {
            return Err(RuntimeError::Unsupported {
                what: "restoring a container into a pod with a user namespace",
                reason: "the checkpoint's files and processes carry host ids".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"{"ociVersion":"1.0.2","process":{"args":["/bin/sh"],"cwd":"/","user":{"uid":0,"gid":0}},"root":{"path":"/r"}}"#;
    const CONFIG: &str = r#"{"id":"c1","name":"n","rootfsImageName":"busybox:1","checkpointedTime":"2026-01-01T00:00:00Z"}"#;

    fn header() -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    }

    /// A tar at `dir/a.tar` of `(name, contents)`; a name ending in `/` is a directory.
    fn archive(dir: &Path, members: &[(&str, &[u8])]) -> PathBuf {
        let path = dir.join("a.tar");
        let mut b = tar::Builder::new(File::create(&path).unwrap());
        for (name, data) in members {
            let mut h = header();
            if name.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
            } else {
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
            }
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.finish().unwrap();
        path
    }

    #[test]
    fn archives_read_or_say_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let good: &[(&str, &[u8])] = &[
            ("checkpoint/", b""),
            ("checkpoint/inventory.img", b"x"),
            ("spec.dump", SPEC.as_bytes()),
            ("config.dump", CONFIG.as_bytes()),
        ];
        let a = read_checkpoint_archive(&archive(dir.path(), good)).unwrap();
        assert_eq!(
            (a.id.as_str(), a.image.as_str(), a.checkpointed_at.as_str()),
            ("c1", "busybox:1", "2026-01-01T00:00:00Z")
        );
        for (members, want, case) in [
            (&good[1..3], "config.dump", "no config.dump"),
            (
                &[good[0], good[1], good[3]][..],
                "spec.dump",
                "no spec.dump",
            ),
            (&good[2..], "checkpoint/", "no images"),
            (
                &[good[0], ("spec.dump", b"{not json"), good[3]][..],
                "spec.dump",
                "bad spec",
            ),
            (
                &[good[0], good[2], ("config.dump", br#"{"id":"x"}"#)][..],
                "names no image",
                "no image",
            ),
        ] {
            let e = read_checkpoint_archive(&archive(dir.path(), members)).unwrap_err();
            assert!(e.to_string().contains(want), "{case}: {e}");
        }
        let junk = dir.path().join("junk.tar");
        fs::write(&junk, vec![0x5a; 1024]).unwrap();
        let e = read_checkpoint_archive(&junk).unwrap_err();
        assert!(!matches!(e, ArchiveError::NotFound { .. }), "{e}");
        assert!(matches!(
            read_checkpoint_archive(&dir.path().join("none.tar")),
            Err(ArchiveError::NotFound { .. })
        ));
        assert!(matches!(
            read_checkpoint_archive(dir.path()),
            Err(ArchiveError::NotAFile { .. })
        ));
    }

    #[test]
    fn the_layer_unpacks_with_whiteouts_and_stays_inside() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        // The writable layer: a file, a whiteout, a member trying to leave.
        let mut layer = tar::Builder::new(Vec::new());
        let mut h = header();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        layer.append_data(&mut h, "counter", &b"7\n"[..]).unwrap();
        let mut w = header();
        w.set_entry_type(tar::EntryType::Char);
        w.set_device_major(0).unwrap();
        w.set_device_minor(0).unwrap();
        w.set_size(0);
        w.set_cksum();
        layer.append_data(&mut w, "gone", &b""[..]).unwrap();
        let mut out = header();
        out.set_size(1);
        out.set_mode(0o644);
        // `append_data` refuses `..`; write the name into the header directly.
        out.as_old_mut().name[..10].copy_from_slice(b"../escaped");
        out.set_cksum();
        layer.append(&out, &b"x"[..]).unwrap();
        let layer = layer.into_inner().unwrap();
        let src = tempfile::tempdir().unwrap();
        let a = archive(
            src.path(),
            &[
                ("checkpoint/", b""),
                ("checkpoint/pstree.img", b"p"),
                ("rootfs-diff.tar", &layer),
            ],
        );
        let ctr = dir.path().join("ctr");
        fs::create_dir_all(ctr.join("upper")).unwrap();
        unpack_for_restore(&a, &ctr).unwrap();
        assert_eq!(fs::read(ctr.join("checkpoint/pstree.img")).unwrap(), b"p");
        assert_eq!(fs::read(ctr.join("upper/counter")).unwrap(), b"7\n");
        let gone = fs::symlink_metadata(ctr.join("upper/gone")).unwrap();
        assert!(gone.file_type().is_char_device(), "whiteout is {gone:?}");
        assert!(!ctr.join("escaped").exists() && !dir.path().join("escaped").exists());
    }
}
