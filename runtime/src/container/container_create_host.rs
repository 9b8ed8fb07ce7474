//! What CreateContainer prepares on the host before it generates the spec, as
//! containerd's CRI plugin does: the directories of the image's `VOLUME`s, filled with
//! what the image has at that path ("copy-up"), and the host paths of CRI mounts
//! (created when missing, symlinks resolved).

// One `lgetxattr(2)` call, to read overlayfs' opaque-directory marker.
#![allow(unsafe_code)]

use std::{
    ffi::CString,
    fs, io,
    os::unix::{
        ffi::OsStrExt,
        fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink},
    },
    path::{Component, Path, PathBuf},
};

use super::{MountSpec, SpecError, spec_mounts::clean_absolute};

/// The image unpacker's (overlayfs') mark of a directory that hides everything below
/// it in lower layers.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Where the failure happened, for `RuntimeError::Io`.
pub(crate) type HostError = (&'static str, PathBuf, io::Error);

fn at<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> HostError + 'a {
    move |e| (op, path.to_path_buf(), e)
}

/// CRI mounts with each `host_path` as the launcher should bind it: a missing path is
/// created as a directory (0755) and symlinks are resolved on the host, as containerd's
/// `WithMounts` (`os.MkdirAll` then `EvalSymlinks`): binding through a symlink would
/// otherwise resolve it inside the container's mount namespace, and a missing source
/// would fail the start. Paths are checked first, so nothing relative is ever created.
pub(crate) fn resolve_mount_sources(
    mounts: &[MountSpec],
) -> Result<Vec<MountSpec>, Result<HostError, SpecError>> {
    let mut out = Vec::with_capacity(mounts.len());
    for (i, m) in mounts.iter().enumerate() {
        if m.image.is_some() {
            // Already resolved inside the mounted image, which must not be left.
            out.push(m.clone());
            continue;
        }
        let host =
            clean_absolute(&m.host_path, &format!("config.mounts[{i}].host_path")).map_err(Err)?;
        match fs::metadata(&host) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&host).map_err(|e| Ok(at("create", &host)(e)))?;
            }
            Err(e) => return Err(Ok(at("stat", &host)(e))),
        }
        let resolved = fs::canonicalize(&host).map_err(|e| Ok(at("resolve", &host)(e)))?;
        out.push(MountSpec {
            host_path: resolved.to_string_lossy().into_owned(),
            ..m.clone()
        });
    }
    Ok(out)
}

/// Creates the host directory of each image volume (`(container path, host dir)` from
/// [`super::image_volumes`]) and copies into it what the image's layers (`layers`,
/// top-most first) have at that path, as containerd's `WithVolumes` copies from the
/// image's rootfs: a VOLUME of a directory the image fills (`/data` with seed files)
/// starts with those files, owned and moded as in the image.
pub(crate) fn create_image_volumes(
    volumes: &[(PathBuf, PathBuf)],
    layers: &[PathBuf],
) -> Result<(), HostError> {
    for (dest, host) in volumes {
        fs::create_dir_all(host).map_err(at("create", host))?;
        let rel = dest.strip_prefix("/").unwrap_or(dest);
        copy_up(layers, rel, host)?;
    }
    Ok(())
}

/// Gives each image volume (as [`create_image_volumes`] made it) to the pod's user
/// namespace: every id in it shifted to the host id the namespace maps it to, so the
/// image's root-owned `/data` is the container root's, as containerd remaps the
/// volumes it copies for such pods. Ids the namespace does not map stay (they show as
/// the overflow id inside). A file with several links is shifted once.
pub(crate) fn shift_image_volumes(
    volumes: &[(PathBuf, PathBuf)],
    userns: &crate::sandbox::UserNamespace,
) -> Result<(), HostError> {
    let shift = |id: u32, maps: &[crate::sandbox::IdMapping]| {
        maps.iter().find_map(|m| m.to_host(id)).unwrap_or(id)
    };
    let mut seen = std::collections::HashSet::new();
    let mut todo: Vec<PathBuf> = volumes.iter().map(|(_, host)| host.clone()).collect();
    while let Some(path) = todo.pop() {
        let meta = fs::symlink_metadata(&path).map_err(at("stat", &path))?;
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        std::os::unix::fs::lchown(
            &path,
            Some(shift(meta.uid(), &userns.uids)),
            Some(shift(meta.gid(), &userns.gids)),
        )
        .map_err(at("chown", &path))?;
        // chown(2) drops a regular file's setuid/setgid bits: a volume is data, a
        // setuid binary copied from the image into one is not kept setuid.
        if meta.is_dir() {
            for entry in fs::read_dir(&path).map_err(at("read", &path))? {
                todo.push(entry.map_err(at("read", &path))?.path());
            }
        }
    }
    Ok(())
}

/// What a layer has at a path, seen through overlayfs' rules.
#[derive(Debug, PartialEq, Eq)]
enum InLayer {
    /// Nothing there; lower layers show through.
    Absent,
    /// A whiteout, a non-directory, or an opaque ancestor without the path: lower
    /// layers' content is hidden and this layer adds none.
    Hidden,
    /// A directory; `hides_lower` when it (or an ancestor) is opaque.
    Dir { hides_lower: bool },
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    let (Ok(path), Ok(name)) = (
        CString::new(dir.as_os_str().as_bytes()),
        CString::new(OPAQUE_XATTR),
    ) else {
        return false;
    };
    let mut value = [0u8; 4];
    // SAFETY: `path` and `name` are NUL-terminated strings that outlive the call, and
    // `value` is a writable buffer of the length passed.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

fn in_layer(layer: &Path, rel: &Path) -> io::Result<InLayer> {
    let mut cur = layer.to_path_buf();
    let mut hides_lower = false;
    for part in rel.components() {
        let Component::Normal(part) = part else {
            continue;
        };
        cur.push(part);
        let meta = match fs::symlink_metadata(&cur) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(if hides_lower {
                    InLayer::Hidden
                } else {
                    InLayer::Absent
                });
            }
            Err(e) => return Err(e),
        };
        // A symlink on the way is not followed: the volume is then not a directory
        // of the image (containerd would resolve it inside the rootfs; rare enough).
        if is_whiteout(&meta) || !meta.is_dir() {
            return Ok(InLayer::Hidden);
        }
        hides_lower |= is_opaque(&cur);
    }
    Ok(InLayer::Dir { hides_lower })
}

fn copy_up(layers: &[PathBuf], rel: &Path, dest: &Path) -> Result<(), HostError> {
    // Bottom layer first, each upper one merged over it.
    for layer in layers.iter().rev() {
        let src = layer.join(rel);
        match in_layer(layer, rel).map_err(at("read", &src))? {
            InLayer::Absent => {}
            InLayer::Hidden => empty_dir(dest)?,
            InLayer::Dir { hides_lower } => {
                if hides_lower {
                    empty_dir(dest)?;
                }
                let meta = fs::symlink_metadata(&src).map_err(at("stat", &src))?;
                copy_attrs(&meta, dest)?;
                merge(&src, dest, 0)?;
            }
        }
    }
    Ok(())
}

fn empty_dir(dir: &Path) -> Result<(), HostError> {
    for entry in fs::read_dir(dir).map_err(at("read", dir))? {
        let path = entry.map_err(at("read", dir))?.path();
        remove(&path)?;
    }
    Ok(())
}

fn remove(path: &Path) -> Result<(), HostError> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(at("remove", path)(e)),
        _ => Ok(()),
    }
}

fn copy_attrs(meta: &fs::Metadata, dest: &Path) -> Result<(), HostError> {
    std::os::unix::fs::lchown(dest, Some(meta.uid()), Some(meta.gid()))
        .map_err(at("chown", dest))?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(dest, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(at("chmod", dest))?;
    }
    Ok(())
}

/// Merges one layer's directory `src` into `dest`, applying its whiteouts and opaque
/// directories. Hard links become copies; device nodes, fifos and sockets are skipped.
/// Deepest directory nesting copied up: a hostile image's pathologically deep tree
/// fails the container instead of exhausting crustd's stack.
const MAX_COPY_DEPTH: usize = 128;

fn merge(src: &Path, dest: &Path, depth: usize) -> Result<(), HostError> {
    if depth > MAX_COPY_DEPTH {
        return Err((
            "copy up",
            src.to_path_buf(),
            io::Error::other(format!("nested deeper than {MAX_COPY_DEPTH} directories")),
        ));
    }
    for entry in fs::read_dir(src).map_err(at("read", src))? {
        let entry = entry.map_err(at("read", src))?;
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let meta = fs::symlink_metadata(&from).map_err(at("stat", &from))?;
        let ft = meta.file_type();
        if is_whiteout(&meta) {
            remove(&to)?;
            continue;
        }
        if ft.is_dir() {
            let existing_dir = fs::symlink_metadata(&to).is_ok_and(|m| m.is_dir());
            if !existing_dir || is_opaque(&from) {
                remove(&to)?;
                fs::create_dir(&to).map_err(at("create", &to))?;
            }
            copy_attrs(&meta, &to)?;
            merge(&from, &to, depth + 1)?;
            continue;
        }
        if !(ft.is_file() || ft.is_symlink()) {
            // Device nodes, fifos and sockets are not copied up (issue 13, item 4): a
            // device node in an image VOLUME (a copy of /dev/mem's or a disk's
            // numbers) would be live in the container, since a volume is a bind of a
            // host directory rather than the nodev rootfs; the volume is mounted nodev
            // too (`spec_mounts`), this keeps such nodes out of the store's volume dirs
            // altogether. What a lower layer has there is still shadowed, as the image
            // says.
            remove(&to)?;
            continue;
        }
        remove(&to)?;
        if ft.is_file() {
            fs::copy(&from, &to).map_err(at("copy", &from))?;
        } else {
            let target = fs::read_link(&from).map_err(at("read link", &from))?;
            symlink(&target, &to).map_err(at("symlink", &to))?;
        }
        copy_attrs(&meta, &to)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, data: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }

    fn whiteout(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        nix::sys::stat::mknod(
            path,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                if p.is_dir() {
                    out.push(format!("{rel}/"));
                    walk(base, &p, out);
                } else {
                    out.push(format!("{rel}={}", fs::read_to_string(&p).unwrap()));
                }
            }
        }
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    /// Two layers over /data: the upper one deletes a file, replaces another and adds a
    /// directory; the volume holds the merged view, with the image's mode.
    #[test]
    fn copy_up_merges_layers_like_overlayfs() {
        let tmp = tempfile::tempdir().unwrap();
        let (lower, upper) = (tmp.path().join("l1"), tmp.path().join("l2"));
        write(&lower.join("data/keep"), "lower");
        write(&lower.join("data/gone"), "lower");
        write(&lower.join("data/replaced"), "lower");
        write(&upper.join("data/replaced"), "upper");
        write(&upper.join("data/sub/new"), "upper");
        whiteout(&upper.join("data/gone"));
        // The top-most layer's directory attributes win, as in overlayfs.
        fs::set_permissions(upper.join("data"), fs::Permissions::from_mode(0o700)).unwrap();
        let vol = tmp.path().join("volumes/0-data");
        create_image_volumes(
            &[("/data".into(), vol.clone())],
            &[upper.clone(), lower.clone()],
        )
        .unwrap();
        assert_eq!(
            listing(&vol),
            ["keep=lower", "replaced=upper", "sub/", "sub/new=upper"]
        );
        assert_eq!(
            fs::metadata(&vol).unwrap().mode() & 0o777,
            0o700,
            "the volume takes the image directory's mode"
        );
    }

    #[test]
    fn copy_up_hidden_and_absent_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let (lower, upper) = (tmp.path().join("l1"), tmp.path().join("l2"));
        write(&lower.join("data/old"), "lower");
        write(&lower.join("cache/old"), "lower");
        whiteout(&upper.join("data"));
        write(&upper.join("cache"), "a file now");
        let layers = [upper.clone(), lower.clone()];
        for (dest, why) in [
            ("/data", "whited out above"),
            ("/cache", "a file above"),
            ("/nothing/here", "not in the image"),
        ] {
            let vol = tmp.path().join("v").join(dest.trim_start_matches('/'));
            create_image_volumes(&[(dest.into(), vol.clone())], &layers).unwrap();
            assert!(vol.is_dir(), "{why}: the volume exists");
            assert!(listing(&vol).is_empty(), "{why}: {:?}", listing(&vol));
        }
    }

    /// Issue 13, item 4: device nodes and fifos in an image VOLUME are not copied up
    /// (a lower layer's file of the same name stays hidden); files and symlinks are.
    #[test]
    fn copy_up_skips_device_nodes_and_fifos() {
        use nix::sys::stat::{Mode, SFlag, makedev, mknod};
        let tmp = tempfile::tempdir().unwrap();
        let (lower, upper) = (tmp.path().join("l1"), tmp.path().join("l2"));
        write(&lower.join("data/mem"), "lower file");
        write(&upper.join("data/plain"), "kept");
        symlink("plain", upper.join("data/link")).unwrap();
        mknod(
            &upper.join("data/mem"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(1, 1),
        )
        .unwrap();
        mknod(
            &upper.join("data/disk"),
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o660),
            makedev(8, 0),
        )
        .unwrap();
        mknod(
            &upper.join("data/pipe"),
            SFlag::S_IFIFO,
            Mode::from_bits_truncate(0o644),
            0,
        )
        .unwrap();
        let vol = tmp.path().join("volumes/0-data");
        create_image_volumes(
            &[("/data".into(), vol.clone())],
            &[upper.clone(), lower.clone()],
        )
        .unwrap();
        let mut names: Vec<String> = fs::read_dir(&vol)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["link", "plain"],
            "only the file and the link are copied"
        );
    }

    #[test]
    fn mount_sources_are_created_and_resolved() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("new/dir");
        let real = tmp.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        symlink(&real, &link).unwrap();
        let m = |host: &Path| MountSpec {
            container_path: "/mnt".into(),
            host_path: host.display().to_string(),
            ..Default::default()
        };
        let got = resolve_mount_sources(&[m(&missing), m(&link)]).unwrap();
        assert!(missing.is_dir(), "a missing host path is created");
        let canonical = |p: &Path| fs::canonicalize(p).unwrap().display().to_string();
        assert_eq!(got[0].host_path, canonical(&missing));
        assert_eq!(
            got[1].host_path,
            canonical(&real),
            "the symlink is resolved"
        );
        assert_eq!(got[1].container_path, "/mnt");

        let err = resolve_mount_sources(&[MountSpec {
            host_path: "relative/dir".into(),
            ..Default::default()
        }])
        .unwrap_err();
        assert!(
            matches!(err, Err(SpecError::InvalidField { .. })),
            "{err:?}"
        );
        assert!(
            !Path::new("relative").exists(),
            "nothing relative is created"
        );
    }

    #[test]
    fn image_volumes_are_shifted_into_the_pod_user_namespace_once() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("0-data");
        fs::create_dir_all(vol.join("sub")).unwrap();
        fs::write(vol.join("sub/a"), b"a").unwrap();
        fs::hard_link(vol.join("sub/a"), vol.join("link-to-a")).unwrap();
        fs::write(vol.join("unmapped"), b"u").unwrap();
        std::os::unix::fs::lchown(vol.join("unmapped"), Some(70_000), Some(70_000)).unwrap();
        let map = |host_id| {
            vec![crate::sandbox::IdMapping {
                host_id,
                container_id: 0,
                length: 65536,
            }]
        };
        let userns = crate::sandbox::UserNamespace {
            uids: map(100_000),
            gids: map(200_000),
        };
        shift_image_volumes(&[("/data".into(), vol.clone())], &userns).unwrap();
        let owner = |p: &str| {
            let m = fs::symlink_metadata(vol.join(p)).unwrap();
            (m.uid(), m.gid())
        };
        assert_eq!(owner(""), (100_000, 200_000), "the volume's root");
        assert_eq!(owner("sub"), (100_000, 200_000), "a directory in it");
        assert_eq!(
            owner("sub/a"),
            (100_000, 200_000),
            "a file, linked twice, shifted once"
        );
        assert_eq!(
            owner("unmapped"),
            (70_000, 70_000),
            "an id the namespace does not map"
        );
    }
}
