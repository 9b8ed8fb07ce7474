//! Streaming layer unpack: compressed tar in, overlay-ready directory out.
//!
//! The layer is read once, from whatever stream the registry gives us: its compressed
//! bytes are hashed (the manifest digest), decompressed (gzip, zstd or none, sniffed
//! from the magic bytes so a wrong media type cannot fool us), hashed again (the config's
//! diff ID) and unpacked, without buffering more than a block at a time.
//!
//! Safety against hostile layers (CVE-2018-15664-style escapes): entries with `..` or
//! absolute paths are rejected, and every parent directory is opened one component at a
//! time with `O_NOFOLLOW | O_DIRECTORY` from a descriptor of the layer root, so a
//! symlink planted by an earlier entry can never redirect a write; the final component
//! is created with `*at` calls relative to that parent (never followed either). Hard
//! links are resolved the same way, so they can only point at files inside the layer.
//!
//! Whiteouts become what overlayfs reads (Documentation/filesystems/overlayfs.rst):
//! `.wh.NAME` a 0/0 character device `NAME`, `.wh..wh..opq` the
//! `trusted.overlay.opaque=y` xattr on its directory.

use std::{
    ffi::{OsStr, OsString},
    fs::File,
    io::{self, BufRead, BufReader, Read, Write},
    os::{
        fd::{AsFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Component, Path, PathBuf},
};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use sha2::{Digest, Sha256};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {path:?} rejected: {reason}")]
    Hostile { path: PathBuf, reason: &'static str },
    #[error("layer entry {path:?}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("read layer stream: {0}")]
    Read(#[source] io::Error),
    #[error("layer entry {path:?}: unsupported tar entry type {kind}")]
    Unsupported { path: PathBuf, kind: u8 },
    /// A gzip or zstd bomb (a few KiB that decompress to terabytes), or a sparse file
    /// whose holes would be written out: the layer unpacks past the node's bound.
    #[error("layer unpacks to more than {limit} bytes (bound: [image] max_layer_unpacked_bytes)")]
    TooLarge { limit: u64 },
}

/// What the stream turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// `sha256:` of the bytes as read (what a manifest names).
    pub digest: String,
    /// `sha256:` of the uncompressed tar (what the config's `rootfs.diff_ids` names).
    pub diff_id: String,
    /// Bytes read from the stream.
    pub size: u64,
    pub compression: Compression,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Reads `src` to its end and unpacks it into `dest` (an existing, empty directory).
/// On error `dest` is left half-filled: the caller unpacks into a temp directory and
/// throws it away. Blocking; run it on a blocking thread.
///
/// `max_unpacked` bounds both the decompressed stream and the bytes written into
/// files: the compressed size is checked against the manifest, but a few KiB of gzip
/// can decompress to terabytes, and a sparse tar entry asks for its holes to be
/// written out. Past it the unpack stops with [`UnpackError::TooLarge`].
///
/// ```no_run
/// let layer = std::fs::File::open("layer.tar.gz").unwrap();
/// let dest = std::path::Path::new("/tmp/l");
/// let out = crust_image::unpack::unpack_layer(layer, dest, 32 << 30).unwrap();
/// println!("{} {}", out.digest, out.diff_id);
/// ```
pub fn unpack_layer(
    src: impl Read,
    dest: &Path,
    max_unpacked: u64,
) -> Result<Unpacked, UnpackError> {
    let mut outer = HashingReader::new(src);
    let mut buffered = BufReader::with_capacity(128 * 1024, &mut outer);
    let head = buffered.fill_buf().map_err(UnpackError::Read)?;
    let compression = if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    };
    let diff_id = {
        let decoder: Box<dyn Read + '_> = match compression {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut buffered)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(&mut buffered)
                    .map_err(UnpackError::Read)?,
            ),
            Compression::None => Box::new(&mut buffered),
        };
        let mut inner = HashingReader::new(Bounded {
            inner: decoder,
            left: max_unpacked,
            exceeded: false,
        });
        let too_large = |inner: &HashingReader<Bounded<_>>, e| {
            if inner.inner.exceeded {
                UnpackError::TooLarge {
                    limit: max_unpacked,
                }
            } else {
                e
            }
        };
        let unpacked = Unpacker::new(dest, max_unpacked)?.run(&mut inner);
        unpacked.map_err(|e| too_large(&inner, e))?;
        // tar stops at its end-of-archive blocks; the diff ID covers the padding after.
        let rest = io::copy(&mut inner, &mut io::sink());
        rest.map_err(|e| too_large(&inner, UnpackError::Read(e)))?;
        inner.finish().0
    };
    io::copy(&mut buffered, &mut io::sink()).map_err(UnpackError::Read)?;
    drop(buffered);
    let (digest, size) = outer.finish();
    Ok(Unpacked {
        digest,
        diff_id,
        size,
        compression,
    })
}

/// A reader that hashes (sha256) and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// `("sha256:<hex>", bytes read)`.
    pub fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A reader that fails once more than `left` bytes came through, and says so: the
/// error reaches us through the tar reader, which may wrap it.
struct Bounded<R> {
    inner: R,
    left: u64,
    exceeded: bool,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => {
                self.exceeded = true;
                Err(io::Error::other("layer past its unpacked size bound"))
            }
        }
    }
}

/// Unpacks one tar stream under a root directory descriptor.
struct Unpacker {
    root: OwnedFd,
    /// The last parent directory opened, reused by consecutive entries in the same
    /// directory (tars list a directory's entries together).
    cached_parent: Option<(Vec<OsString>, OwnedFd)>,
    /// Directory mtimes, applied at the end: creating entries inside a directory
    /// changes its mtime again.
    dir_times: Vec<(Vec<OsString>, i64)>,
    /// Copy buffer, reused for every file.
    buf: Vec<u8>,
    /// Bytes files may still get (sparse entries are written out in full).
    limit: u64,
    left: u64,
}

fn io_err<'p>(
    path: &'p Path,
    op: &'static str,
) -> impl FnOnce(rustix::io::Errno) -> UnpackError + 'p {
    move |e| UnpackError::Io {
        path: path.to_path_buf(),
        op,
        source: e.into(),
    }
}

impl Unpacker {
    fn new(root_path: &Path, limit: u64) -> Result<Self, UnpackError> {
        let root = rfs::open(
            root_path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err(root_path, "open layer directory"))?;
        Ok(Unpacker {
            root,
            cached_parent: None,
            dir_times: Vec::new(),
            buf: vec![0; 256 * 1024],
            limit,
            left: limit,
        })
    }

    fn run(mut self, src: &mut impl Read) -> Result<(), UnpackError> {
        let mut archive = tar::Archive::new(src);
        for entry in archive.entries().map_err(UnpackError::Read)? {
            let mut entry = entry.map_err(UnpackError::Read)?;
            self.entry(&mut entry)?;
        }
        for (components, mtime) in std::mem::take(&mut self.dir_times) {
            let path: PathBuf = components.iter().collect();
            let (parent, name) = match components.split_last() {
                Some((name, parents)) => (self.open_parent(parents, &path)?, name.clone()),
                None => (
                    self.root.try_clone().map_err(|e| UnpackError::Io {
                        path: path.clone(),
                        op: "dup",
                        source: e,
                    })?,
                    ".".into(),
                ),
            };
            set_times(&parent, &name, mtime, &path)?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_path = entry.path().map_err(UnpackError::Read)?.into_owned();
        let components = clean_path(&raw_path)?;
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(UnpackError::Read)? & 0o7777;
        let uid = header.uid().map_err(UnpackError::Read)?;
        let gid = header.gid().map_err(UnpackError::Read)?;
        let mtime = header.mtime().map_err(UnpackError::Read)? as i64;

        // An entry at or above the cached parent may replace it (a directory turned
        // into a symlink or file): the cached descriptor would then point at a removed
        // directory, or let a later entry bypass the symlink check.
        if self
            .cached_parent
            .as_ref()
            .is_some_and(|(cached, _)| cached.starts_with(&components))
        {
            self.cached_parent = None;
        }
        let Some((name, parents)) = components.split_last() else {
            // "./": the layer root itself; only its metadata matters.
            if kind.is_dir() {
                let root = self.root.try_clone().map_err(|e| UnpackError::Io {
                    path: raw_path.clone(),
                    op: "dup",
                    source: e,
                })?;
                set_owner_mode(&root, OsStr::new("."), uid, gid, Some(mode), &raw_path)?;
                self.dir_times.push((Vec::new(), mtime));
            }
            return Ok(());
        };
        let parent = self.open_parent(parents, &raw_path)?;
        let name_str = name.to_string_lossy();

        // Whiteouts.
        if name_str == OPAQUE_MARKER {
            rfs::fsetxattr(&parent, OPAQUE_XATTR, b"y", rfs::XattrFlags::empty())
                .map_err(io_err(&raw_path, "set opaque xattr"))?;
            return Ok(());
        }
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.starts_with(".wh.") {
                // aufs bookkeeping (`.wh..wh.plnk` etc.): meaningless for overlay.
                return Ok(());
            }
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(UnpackError::Hostile {
                    path: raw_path,
                    reason: "whiteout of an empty or dot name",
                });
            }
            let hidden = OsStr::from_bytes(&name.as_bytes()[WHITEOUT_PREFIX.len()..]);
            remove_existing(&parent, hidden, &raw_path, false)?;
            rfs::mknodat(
                &parent,
                hidden,
                FileType::CharacterDevice,
                Mode::empty(),
                rfs::makedev(0, 0),
            )
            .map_err(io_err(&raw_path, "create whiteout device"))?;
            set_owner_mode(&parent, hidden, uid, gid, None, &raw_path)?;
            return Ok(());
        }

        use tar::EntryType as T;
        match kind {
            T::Directory => {
                match rfs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                    Ok(_) => {
                        remove_existing(&parent, name, &raw_path, false)?;
                        rfs::mkdirat(&parent, name, Mode::from_raw_mode(0o700))
                            .map_err(io_err(&raw_path, "mkdir"))?;
                    }
                    Err(_) => rfs::mkdirat(&parent, name, Mode::from_raw_mode(0o700))
                        .map_err(io_err(&raw_path, "mkdir"))?,
                }
                set_owner_mode(&parent, name, uid, gid, Some(mode), &raw_path)?;
                Self::set_xattrs(entry, &parent, name, &raw_path)?;
                self.dir_times.push((components.clone(), mtime));
                return Ok(());
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                remove_existing(&parent, name, &raw_path, true)?;
                let fd = rfs::openat(
                    &parent,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io_err(&raw_path, "create file"))?;
                let mut file = File::from(fd);
                let copied = copy_big(entry, &mut file, &mut self.buf, self.left);
                match copied.map_err(|e| UnpackError::Io {
                    path: raw_path.clone(),
                    op: "write file",
                    source: e,
                })? {
                    Some(n) => self.left -= n,
                    None => return Err(UnpackError::TooLarge { limit: self.limit }),
                }
            }
            T::Symlink => {
                let target =
                    entry
                        .link_name()
                        .map_err(UnpackError::Read)?
                        .ok_or(UnpackError::Hostile {
                            path: raw_path.clone(),
                            reason: "symlink without a target",
                        })?;
                remove_existing(&parent, name, &raw_path, true)?;
                // The target is stored as is: it is only ever resolved inside the
                // container's root, never by us.
                rfs::symlinkat(target.as_os_str(), &parent, name)
                    .map_err(io_err(&raw_path, "symlink"))?;
            }
            T::Link => {
                let target =
                    entry
                        .link_name()
                        .map_err(UnpackError::Read)?
                        .ok_or(UnpackError::Hostile {
                            path: raw_path.clone(),
                            reason: "hard link without a target",
                        })?;
                let target_components = clean_path(&target)?;
                let Some((target_name, target_parents)) = target_components.split_last() else {
                    return Err(UnpackError::Hostile {
                        path: raw_path,
                        reason: "hard link to the layer root",
                    });
                };
                let target_parent = self.open_parent(target_parents, &raw_path)?;
                let st = rfs::statat(&target_parent, target_name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io_err(&raw_path, "find hard link target in the layer"))?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    return Err(UnpackError::Hostile {
                        path: raw_path,
                        reason: "hard link to a directory",
                    });
                }
                if target_components == components {
                    return Ok(());
                }
                remove_existing(&parent, name, &raw_path, true)?;
                // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
                rfs::linkat(&target_parent, target_name, &parent, name, AtFlags::empty())
                    .map_err(io_err(&raw_path, "hard link"))?;
                // The link shares the target's inode and metadata; nothing more to set.
                return Ok(());
            }
            T::Char | T::Block | T::Fifo => {
                // FIFOs carry no device number (some writers leave the fields blank).
                let (major, minor) = if kind == T::Fifo {
                    (0, 0)
                } else {
                    (
                        header
                            .device_major()
                            .map_err(UnpackError::Read)?
                            .unwrap_or(0),
                        header
                            .device_minor()
                            .map_err(UnpackError::Read)?
                            .unwrap_or(0),
                    )
                };
                let file_type = match kind {
                    T::Char => FileType::CharacterDevice,
                    T::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                remove_existing(&parent, name, &raw_path, true)?;
                rfs::mknodat(
                    &parent,
                    name,
                    file_type,
                    Mode::from_raw_mode(0o600),
                    rfs::makedev(major, minor),
                )
                .map_err(io_err(&raw_path, "mknod"))?;
            }
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => return Ok(()),
            other => {
                return Err(UnpackError::Unsupported {
                    path: raw_path,
                    kind: other.as_byte(),
                });
            }
        }

        let is_symlink = kind == T::Symlink;
        set_owner_mode(
            &parent,
            name,
            uid,
            gid,
            (!is_symlink).then_some(mode),
            &raw_path,
        )?;
        Self::set_xattrs(entry, &parent, name, &raw_path)?;
        set_times(&parent, name, mtime, &raw_path)?;
        Ok(())
    }

    /// Opens the directory `components` under the root without following any symlink,
    /// creating missing directories (tars need not list parents first).
    fn open_parent(
        &mut self,
        components: &[OsString],
        path: &Path,
    ) -> Result<OwnedFd, UnpackError> {
        if let Some((cached, fd)) = &self.cached_parent
            && cached.as_slice() == components
        {
            return fd.try_clone().map_err(|e| UnpackError::Io {
                path: path.to_path_buf(),
                op: "dup",
                source: e,
            });
        }
        let mut dir = self.root.try_clone().map_err(|e| UnpackError::Io {
            path: path.to_path_buf(),
            op: "dup",
            source: e,
        })?;
        for component in components {
            let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
            dir = match rfs::openat(&dir, component.as_os_str(), flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) => {
                    rfs::mkdirat(&dir, component.as_os_str(), Mode::from_raw_mode(0o755))
                        .map_err(io_err(path, "create parent directory"))?;
                    rfs::openat(&dir, component.as_os_str(), flags, Mode::empty())
                        .map_err(io_err(path, "open parent directory"))?
                }
                Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
                    return Err(UnpackError::Hostile {
                        path: path.to_path_buf(),
                        reason: "a parent is a symlink or not a directory",
                    });
                }
                Err(e) => return Err(io_err(path, "open parent directory")(e)),
            };
        }
        let copy = dir.try_clone().map_err(|e| UnpackError::Io {
            path: path.to_path_buf(),
            op: "dup",
            source: e,
        })?;
        self.cached_parent = Some((components.to_vec(), copy));
        Ok(dir)
    }

    fn set_xattrs<R: Read>(
        entry: &mut tar::Entry<'_, R>,
        parent: &OwnedFd,
        name: &OsStr,
        path: &Path,
    ) -> Result<(), UnpackError> {
        let Some(extensions) = entry.pax_extensions().map_err(UnpackError::Read)? else {
            return Ok(());
        };
        let mut xattrs = Vec::new();
        for ext in extensions {
            let ext = ext.map_err(UnpackError::Read)?;
            if let Ok(key) = ext.key()
                && let Some(attr) = key.strip_prefix(PAX_XATTR_PREFIX)
            {
                xattrs.push((attr.to_string(), ext.value_bytes().to_vec()));
            }
        }
        if xattrs.is_empty() {
            return Ok(());
        }
        // lsetxattr through the parent's /proc/self/fd link: the parent was opened
        // without following symlinks, and `l` keeps the final component unfollowed.
        let via = proc_path(parent, name);
        for (attr, value) in xattrs {
            match rfs::lsetxattr(&via, attr.as_str(), &value, rfs::XattrFlags::empty()) {
                Ok(()) => {}
                // Some filesystems or attribute namespaces (security.* under LSMs,
                // user.* on symlinks) refuse; the file itself is still right.
                Err(rustix::io::Errno::NOTSUP | rustix::io::Errno::PERM) => {
                    tracing::debug!(path = %path.display(), attr, "xattr not supported here; skipped");
                }
                Err(e) => return Err(io_err(path, "set xattr")(e)),
            }
        }
        Ok(())
    }
}

/// `io::copy` with a larger buffer: fewer read/write syscalls for big files (io::copy
/// uses 8 KiB for readers it cannot specialise, like a tar entry over a decoder).
/// Copies at most `budget` bytes: `Some(bytes copied)`, or `None` when `src` has
/// more (nothing past the budget is written).
fn copy_big(
    src: &mut impl Read,
    dst: &mut File,
    buf: &mut [u8],
    budget: u64,
) -> io::Result<Option<u64>> {
    let mut copied = 0u64;
    loop {
        let n = match src.read(buf) {
            Ok(0) => return Ok(Some(copied)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        copied += n as u64;
        if copied > budget {
            return Ok(None);
        }
        dst.write_all(&buf[..n])?;
    }
}

fn proc_path(dir: &OwnedFd, name: &OsStr) -> PathBuf {
    use std::os::fd::AsRawFd;
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_fd().as_raw_fd()));
    p.push(name);
    p
}

/// Splits an entry path into normal components, rejecting `..` and absolute paths.
fn clean_path(path: &Path) -> Result<Vec<OsString>, UnpackError> {
    let mut out = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push(c.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(UnpackError::Hostile {
                    path: path.to_path_buf(),
                    reason: "path contains '..'",
                });
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::Hostile {
                    path: path.to_path_buf(),
                    reason: "absolute path",
                });
            }
        }
    }
    Ok(out)
}

/// Removes whatever is at `name` so a later entry can replace it (a tar may list a
/// path twice; the last one wins). Directories are only replaced when `dirs_too`.
fn remove_existing(
    parent: &OwnedFd,
    name: &OsStr,
    path: &Path,
    dirs_too: bool,
) -> Result<(), UnpackError> {
    match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(io_err(path, "stat existing entry")(e)),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            if !dirs_too {
                return Ok(());
            }
            // remove_dir_all never follows symlinks (fixed for CVE-2022-21658), and
            // the /proc path pins the already-verified parent.
            std::fs::remove_dir_all(proc_path(parent, name)).map_err(|e| UnpackError::Io {
                path: path.to_path_buf(),
                op: "replace directory",
                source: e,
            })
        }
        Ok(_) => {
            rfs::unlinkat(parent, name, AtFlags::empty()).map_err(io_err(path, "replace entry"))
        }
    }
}

fn set_owner_mode(
    parent: &OwnedFd,
    name: &OsStr,
    uid: u64,
    gid: u64,
    mode: Option<u32>,
    path: &Path,
) -> Result<(), UnpackError> {
    let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
        return Err(UnpackError::Hostile {
            path: path.to_path_buf(),
            reason: "uid or gid out of range",
        });
    };
    rfs::chownat(
        parent,
        name,
        Some(rfs::Uid::from_raw(uid)),
        Some(rfs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(io_err(path, "chown"))?;
    // chmod after chown: chown clears setuid/setgid bits.
    if let Some(mode) = mode {
        rfs::chmodat(parent, name, Mode::from_raw_mode(mode), AtFlags::empty())
            .map_err(io_err(path, "chmod"))?;
    }
    Ok(())
}

fn set_times(parent: &OwnedFd, name: &OsStr, mtime: i64, path: &Path) -> Result<(), UnpackError> {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    rfs::utimensat(
        parent,
        name,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(io_err(path, "set mtime"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    use super::*;

    /// Builds tars entry by entry, with raw names so hostile paths can be written.
    struct Tar(Vec<u8>);

    impl Tar {
        fn new() -> Self {
            Tar(Vec::new())
        }

        fn header(name: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            let bytes = name.as_bytes();
            assert!(bytes.len() < 100, "test names must fit the old header");
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(size);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_000_000);
            h
        }

        fn push(&mut self, mut h: tar::Header, data: &[u8]) -> &mut Self {
            h.set_cksum();
            self.0.extend_from_slice(h.as_bytes());
            self.0.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            self.0.extend(std::iter::repeat_n(0u8, pad));
            self
        }

        fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
            self.push(Self::header(name, tar::EntryType::Directory, mode, 0), &[])
        }

        fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
            self.push(
                Self::header(name, tar::EntryType::Regular, 0o644, data.len() as u64),
                data,
            )
        }

        fn link(&mut self, name: &str, kind: tar::EntryType, target: &str) -> &mut Self {
            let mut h = Self::header(name, kind, 0o777, 0);
            h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
            self.push(h, &[])
        }

        fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
            let mut body = Vec::new();
            for (k, v) in records {
                // "<len> <key>=<value>\n" where len counts itself.
                let rest = format!(" {k}=").len() + v.len() + 1;
                let mut len = rest + 1;
                while len.to_string().len() + rest != len {
                    len += 1;
                }
                body.extend_from_slice(format!("{len} {k}=").as_bytes());
                body.extend_from_slice(v);
                body.push(b'\n');
            }
            let h = Self::header("pax", tar::EntryType::XHeader, 0o644, body.len() as u64);
            self.push(h, &body)
        }

        fn finish(&mut self) -> Vec<u8> {
            let mut out = self.0.clone();
            out.extend(std::iter::repeat_n(0u8, 1024));
            out
        }
    }

    fn unpack(bytes: &[u8]) -> (tempfile::TempDir, PathBuf, Result<Unpacked, UnpackError>) {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        std::fs::create_dir(&layer).unwrap();
        let result = unpack_layer(bytes, &layer, u64::MAX);
        (dir, layer, result)
    }

    fn sha(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    #[test]
    fn digests_for_each_compression() {
        let tar = Tar::new()
            .dir("etc/", 0o755)
            .file("etc/hostname", b"crust\n")
            .finish();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        for (bytes, compression) in [
            (&tar, Compression::None),
            (&gz, Compression::Gzip),
            (&zst, Compression::Zstd),
        ] {
            let (_d, layer, result) = unpack(bytes);
            let out = result.unwrap_or_else(|e| panic!("{compression:?}: {e}"));
            assert_eq!(out.compression, compression);
            assert_eq!(
                out.digest,
                sha(bytes),
                "{compression:?}: digest covers the bytes as read"
            );
            assert_eq!(
                out.diff_id,
                sha(&tar),
                "{compression:?}: diff id covers the whole tar"
            );
            assert_eq!(out.size, bytes.len() as u64);
            assert_eq!(
                std::fs::read(layer.join("etc/hostname")).unwrap(),
                b"crust\n"
            );
        }
    }

    /// A GNU sparse entry: `data` stored, at the end of a file of `real_size` bytes
    /// whose start is one hole. Unpacked, the hole is written out as zeros.
    fn sparse(t: &mut Tar, name: &str, data: &[u8], real_size: u64) {
        let mut h = Tar::header(name, tar::EntryType::GNUSparse, 0o644, data.len() as u64);
        let octal = |v: u64| {
            let mut f = [0u8; 12];
            f[..11].copy_from_slice(format!("{v:011o}").as_bytes());
            f
        };
        let gnu = h.as_gnu_mut().unwrap();
        gnu.sparse[0].offset = octal(real_size - data.len() as u64);
        gnu.sparse[0].numbytes = octal(data.len() as u64);
        gnu.realsize = octal(real_size);
        t.push(h, data);
    }

    #[test]
    fn bombs_stop_at_the_unpacked_bound() {
        const LIMIT: u64 = 1 << 20;
        let zeros = Tar::new().file("zeros", &vec![0u8; 4 << 20]).finish();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&zeros).unwrap();
        let gz = gz.finish().unwrap();
        assert!(gz.len() < 64 << 10, "a bomb: {} bytes of gzip", gz.len());
        let zst = zstd::encode_all(&zeros[..], 19).unwrap();
        let mut holes = Tar::new();
        sparse(&mut holes, "holes", &[1u8; 512], 8 << 20);
        let holes = holes.finish();
        assert!(
            (holes.len() as u64) < LIMIT,
            "the sparse stream itself is small"
        );
        // The padding after the end-of-archive blocks is decompressed too (diff ID).
        let mut padded = Tar::new().file("small", b"ok").finish();
        padded.resize(4 << 20, 0);
        let mut padded_gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        padded_gz.write_all(&padded).unwrap();
        let padded_gz = padded_gz.finish().unwrap();
        for (what, bytes) in [
            ("gzip of 4 MiB of zeros", &gz),
            ("zstd of 4 MiB of zeros", &zst),
            ("a sparse file of 8 MiB", &holes),
            ("4 MiB of padding after the tar", &padded_gz),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let layer = dir.path().join("layer");
            std::fs::create_dir(&layer).unwrap();
            let err = unpack_layer(&bytes[..], &layer, LIMIT).expect_err(what);
            assert!(
                matches!(err, UnpackError::TooLarge { limit: LIMIT }),
                "{what}: {err}"
            );
            assert!(
                err.to_string().contains("max_layer_unpacked_bytes"),
                "{what}: the error names the knob: {err}"
            );
            let written: u64 = walk_sizes(&layer);
            assert!(written <= LIMIT, "{what}: {written} bytes written");
        }
        // Under the bound, the same layers unpack (the sparse file in full).
        for (what, bytes) in [("gzip", &gz), ("sparse", &holes)] {
            let dir = tempfile::tempdir().unwrap();
            let layer = dir.path().join("layer");
            std::fs::create_dir(&layer).unwrap();
            unpack_layer(&bytes[..], &layer, 16 << 20).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }

    fn walk_sizes(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| {
                let meta = e.metadata().unwrap();
                if meta.is_dir() {
                    walk_sizes(&e.path())
                } else {
                    meta.len()
                }
            })
            .sum()
    }

    #[test]
    fn corrupt_compressed_stream_fails() {
        let tar = Tar::new().file("a", &[7u8; 5000]).finish();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let mut gz = gz.finish().unwrap();
        let n = gz.len();
        gz[n - 6] ^= 0xff; // inside the CRC/size trailer
        let (_d, _layer, result) = unpack(&gz);
        assert!(matches!(result, Err(UnpackError::Read(_))), "{result:?}");
    }

    #[test]
    fn hostile_paths_are_rejected_and_nothing_escapes() {
        type Build = fn(&mut Tar);
        let cases: Vec<(&str, Build, &str)> = vec![
            (
                "dot-dot",
                |t| {
                    t.file("../escape", b"x");
                },
                "'..'",
            ),
            (
                "nested dot-dot",
                |t| {
                    t.file("a/../../escape", b"x");
                },
                "'..'",
            ),
            (
                "absolute",
                |t| {
                    t.file("/escape", b"x");
                },
                "absolute",
            ),
            (
                "write through symlink parent",
                |t| {
                    t.link("evil", tar::EntryType::Symlink, "..");
                    t.file("evil/escape", b"x");
                },
                "symlink",
            ),
            (
                "write through absolute symlink",
                |t| {
                    t.link("evil", tar::EntryType::Symlink, "/");
                    t.file("evil/escape", b"x");
                },
                "symlink",
            ),
            (
                "hard link to outside",
                |t| {
                    t.link("h", tar::EntryType::Link, "../escape");
                },
                "'..'",
            ),
            (
                "hard link through symlink",
                |t| {
                    t.link("evil", tar::EntryType::Symlink, "..");
                    t.link("h", tar::EntryType::Link, "evil/escape");
                },
                "symlink",
            ),
            (
                "whiteout of dot-dot",
                |t| {
                    t.file(".wh...", b"");
                },
                "dot",
            ),
            (
                "directory replaced by a symlink, then written through",
                |t| {
                    t.dir("a/", 0o755);
                    t.file("a/x", b"x");
                    t.link("a", tar::EntryType::Symlink, "..");
                    t.file("a/escape", b"x");
                },
                "symlink",
            ),
        ];
        for (what, build, word) in cases {
            let dir = tempfile::tempdir().unwrap();
            let layer = dir.path().join("layer");
            std::fs::create_dir(&layer).unwrap();
            // The target a hostile link would hit, outside the layer.
            std::fs::write(dir.path().join("escape"), b"outside").unwrap();
            let mut t = Tar::new();
            build(&mut t);
            let err = unpack_layer(&t.finish()[..], &layer, u64::MAX).expect_err(what);
            assert!(matches!(err, UnpackError::Hostile { .. }), "{what}: {err}");
            assert!(
                err.to_string().contains(word),
                "{what}: {err} should mention {word:?}"
            );
            assert_eq!(
                std::fs::read(dir.path().join("escape")).unwrap(),
                b"outside",
                "{what}: outside file untouched"
            );
            let outside: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(
                outside.len(),
                2,
                "{what}: nothing new outside the layer: {outside:?}"
            );
        }
    }

    #[test]
    fn preserves_kinds_modes_owners_times_xattrs() {
        let mut t = Tar::new();
        let mut h = Tar::header("bin/", tar::EntryType::Directory, 0o751, 0);
        h.set_mtime(12345);
        t.push(h, &[]);
        let mut h = Tar::header("bin/busybox", tar::EntryType::Regular, 0o4755, 4);
        h.set_uid(1000);
        h.set_gid(2000);
        h.set_mtime(777);
        t.push(h, b"\x7fELF");
        t.link("bin/sh", tar::EntryType::Link, "bin/busybox");
        t.link("bin/ls", tar::EntryType::Link, "./bin/busybox");
        t.link("lib", tar::EntryType::Symlink, "/usr/lib");
        let mut h = Tar::header("dev/null", tar::EntryType::Char, 0o666, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        t.push(h, &[]);
        let mut h = Tar::header("dev/loop9", tar::EntryType::Block, 0o660, 0);
        h.set_device_major(7).unwrap();
        h.set_device_minor(9).unwrap();
        t.push(h, &[]);
        t.push(Tar::header("run/fifo", tar::EntryType::Fifo, 0o620, 0), &[]);
        t.pax(&[
            ("SCHILY.xattr.user.crust", b"hello"),
            ("SCHILY.xattr.trusted.crust", b"t"),
        ]);
        t.file("etc/with-xattr", b"x");
        let (_d, layer, result) = unpack(&t.finish());
        result.unwrap();

        let bin = std::fs::symlink_metadata(layer.join("bin")).unwrap();
        assert_eq!(bin.permissions().mode() & 0o7777, 0o751);
        assert_eq!(
            bin.mtime(),
            12345,
            "directory mtime is applied after its children"
        );
        let bb = std::fs::symlink_metadata(layer.join("bin/busybox")).unwrap();
        assert_eq!(
            bb.permissions().mode() & 0o7777,
            0o4755,
            "setuid survives chown"
        );
        assert_eq!((bb.uid(), bb.gid()), (1000, 2000));
        assert_eq!(bb.mtime(), 777);
        assert_eq!(bb.nlink(), 3, "hard links share the inode");
        let sh = std::fs::symlink_metadata(layer.join("bin/sh")).unwrap();
        assert_eq!(sh.ino(), bb.ino());
        assert_eq!(
            std::fs::read_link(layer.join("lib")).unwrap(),
            Path::new("/usr/lib"),
            "symlink stored verbatim"
        );
        let null = std::fs::symlink_metadata(layer.join("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!((rfs::major(null.rdev()), rfs::minor(null.rdev())), (1, 3));
        assert_eq!(null.permissions().mode() & 0o7777, 0o666);
        let lp = std::fs::symlink_metadata(layer.join("dev/loop9")).unwrap();
        assert!(lp.file_type().is_block_device());
        assert_eq!((rfs::major(lp.rdev()), rfs::minor(lp.rdev())), (7, 9));
        let fifo = std::fs::symlink_metadata(layer.join("run/fifo")).unwrap();
        assert!(fifo.file_type().is_fifo());
        assert_eq!(fifo.permissions().mode() & 0o7777, 0o620);
        let path = layer.join("etc/with-xattr");
        assert_eq!(xattr(&path, "user.crust").as_deref(), Some(&b"hello"[..]));
        assert_eq!(xattr(&path, "trusted.crust").as_deref(), Some(&b"t"[..]));
    }

    fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 256];
        let n = rfs::lgetxattr(path, name, &mut buf[..]).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let mut t = Tar::new();
        t.dir("etc/", 0o755)
            .file("etc/.wh.motd", b"")
            .dir("var/cache/", 0o755)
            .file("var/cache/.wh..wh..opq", b"");
        t.file(".wh..wh.plnk", b"");
        let (_d, layer, result) = unpack(&t.finish());
        result.unwrap();
        let wh = std::fs::symlink_metadata(layer.join("etc/motd")).unwrap();
        assert!(wh.file_type().is_char_device(), "whiteout is a char device");
        assert_eq!(wh.rdev(), 0, "whiteout is 0/0");
        assert!(
            !layer.join("etc/.wh.motd").exists(),
            "the marker file itself is not written"
        );
        assert_eq!(
            xattr(&layer.join("var/cache"), OPAQUE_XATTR).as_deref(),
            Some(&b"y"[..])
        );
        assert!(!layer.join("var/cache/.wh..wh..opq").exists());
        assert!(
            !layer.join(".wh..wh.plnk").exists(),
            "aufs bookkeeping is dropped"
        );
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let mut t = Tar::new();
        t.file("a", b"first").file("a", b"second");
        t.dir("d/", 0o755)
            .file("d/x", b"x")
            .file("d", b"now a file");
        t.link("s", tar::EntryType::Symlink, "/etc/passwd")
            .file("s", b"regular");
        let (_d, layer, result) = unpack(&t.finish());
        result.unwrap();
        assert_eq!(std::fs::read(layer.join("a")).unwrap(), b"second");
        assert_eq!(std::fs::read(layer.join("d")).unwrap(), b"now a file");
        let s = std::fs::symlink_metadata(layer.join("s")).unwrap();
        assert!(
            s.file_type().is_file(),
            "a file replacing a symlink must not write through it"
        );
        assert_eq!(std::fs::read(layer.join("s")).unwrap(), b"regular");
    }
}
