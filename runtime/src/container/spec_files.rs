//! The files CreateContainer reads to build a spec: the image's `/etc/passwd` and
//! `/etc/group`, resolved inside the image the way the container will see them, and a
//! Localhost seccomp profile on the host.
//!
//! Both come from someone else (an image author; a profile path kubelet builds from a
//! pod spec), so reading them must not hurt crustd: a symlink `etc/passwd -> /dev/zero`
//! read on the host grew crustd until the OOM killer ended it (on every kubelet retry),
//! a FIFO blocked the reading thread forever, and `etc/passwd -> /etc/passwd` resolved
//! the HOST's users. So: symlinks are resolved within the image root across the layer
//! chain (as overlayfs will merge it, whiteouts and opaque directories included), only
//! regular files are read, opened `O_NONBLOCK` and checked with `fstat` before any
//! read, and at most [`MAX_SPEC_FILE`] bytes. Callers run these on a blocking thread.

use std::{
    ffi::OsStr,
    io::Read,
    os::{fd::OwnedFd, unix::ffi::OsStrExt},
    path::{Path, PathBuf},
};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};

/// The most bytes read from one such file. Real `/etc/passwd` files are a few KiB and
/// seccomp profiles some tens of KiB; 4 MiB leaves room for huge ones while bounding
/// what one request can make crustd allocate.
pub const MAX_SPEC_FILE: u64 = 4 << 20;

/// Linux's own bound on symlinks followed in one lookup (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// overlayfs' marker of a directory that hides the lower layers' content.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Why a file could not be read. `what` names the file for the client
/// ("the image's /etc/passwd", "seccomp profile \"/x.json\"").
#[derive(Debug, thiserror::Error)]
pub enum SpecFileError {
    #[error("{what} is a {kind}, not a regular file")]
    NotRegular { what: String, kind: &'static str },
    #[error("{what} is larger than {max} bytes")]
    TooLarge { what: String, max: u64 },
    #[error("{what}: more than {MAX_SYMLINKS} symbolic links")]
    TooManyLinks { what: String },
    #[error("{what}: {op} {path}: {source}")]
    Io {
        what: String,
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn kind_name(t: FileType) -> &'static str {
    match t {
        FileType::Directory => "directory",
        FileType::Fifo => "FIFO",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Socket => "socket",
        FileType::Symlink => "symbolic link",
        _ => "special file",
    }
}

/// Reads all of an open regular file, refusing more than `max` bytes.
fn read_bounded(fd: OwnedFd, what: &str, path: &Path, max: u64) -> Result<Vec<u8>, SpecFileError> {
    let io = |op: &'static str| {
        let (what, path) = (what.to_string(), path.to_path_buf());
        move |source: std::io::Error| SpecFileError::Io {
            what,
            op,
            path,
            source,
        }
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| io("stat")(e.into()))?;
    let t = FileType::from_raw_mode(st.st_mode);
    if t != FileType::RegularFile {
        return Err(SpecFileError::NotRegular {
            what: what.into(),
            kind: kind_name(t),
        });
    }
    if st.st_size as u64 > max {
        return Err(SpecFileError::TooLarge {
            what: what.into(),
            max,
        });
    }
    // The size may still change under us; the read itself is bounded too.
    let mut data = Vec::with_capacity(st.st_size as usize);
    std::fs::File::from(fd)
        .take(max + 1)
        .read_to_end(&mut data)
        .map_err(io("read"))?;
    if data.len() as u64 > max {
        return Err(SpecFileError::TooLarge {
            what: what.into(),
            max,
        });
    }
    Ok(data)
}

/// Reads a file on the host (a Localhost seccomp profile): symlinks are followed (the
/// path is the node's own, built by kubelet), but only a regular file is read, opened
/// `O_NONBLOCK` so a FIFO cannot block, and at most `max` bytes.
pub fn read_host_file(path: &Path, what: &str, max: u64) -> Result<Vec<u8>, SpecFileError> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SpecFileError::Io {
        what: what.into(),
        op: "open",
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    read_bounded(fd, what, path, max)
}

/// One directory of the merged image: the layers that contribute to it, top first.
type MergedDir = Vec<(usize, OwnedFd)>;

/// What a name is in the merged image.
enum Entry {
    Absent,
    /// A directory, with the layers merged into it.
    Dir(MergedDir),
    /// Anything else, from the top-most layer that has it: (layer, its directory, the
    /// name's O_PATH fd).
    Other(usize, OwnedFd, FileType),
}

/// Opens `name` (one component, no `/`) beneath `dir` without following any symlink.
fn open_beneath(dir: &OwnedFd, name: &OsStr, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(
        dir,
        name,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

fn is_opaque(dir: &OwnedFd) -> bool {
    let mut buf = [0u8; 8];
    matches!(rustix::fs::fgetxattr(dir, OPAQUE_XATTR, &mut buf), Ok(n) if &buf[..n] == b"y")
}

/// The image's layers, top first, as overlayfs merges them.
struct LayerChain<'a> {
    layers: &'a [PathBuf],
    what: &'a str,
}

impl LayerChain<'_> {
    fn io(
        &self,
        op: &'static str,
        layer: usize,
        rel: &Path,
        e: rustix::io::Errno,
    ) -> SpecFileError {
        SpecFileError::Io {
            what: self.what.into(),
            op,
            path: self.layers[layer].join(rel),
            source: e.into(),
        }
    }

    fn root(&self) -> Result<MergedDir, SpecFileError> {
        let mut dirs = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let fd = rustix::fs::open(
                layer,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| self.io("open layer", i, Path::new(""), e))?;
            dirs.push((i, fd));
        }
        Ok(dirs)
    }

    /// Looks `name` up in the merged directory `dir` (`rel` is its path, for errors):
    /// the top-most layer that has the name decides what it is; a whiteout (0/0
    /// character device) hides it; a directory merges with the same directory of the
    /// layers below until one has a non-directory there or the directory is opaque.
    fn lookup(&self, dir: &MergedDir, rel: &Path, name: &OsStr) -> Result<Entry, SpecFileError> {
        let mut merged: MergedDir = Vec::new();
        for (layer, dirfd) in dir {
            let at = rel.join(name);
            let fd = match open_beneath(dirfd, name, OFlags::PATH) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) => {
                    if is_opaque(dirfd) {
                        break;
                    }
                    continue;
                }
                Err(e) => return Err(self.io("open", *layer, &at, e)),
            };
            let st = rustix::fs::fstat(&fd).map_err(|e| self.io("stat", *layer, &at, e))?;
            let t = FileType::from_raw_mode(st.st_mode);
            let whiteout = t == FileType::CharacterDevice && st.st_rdev == 0;
            match (merged.is_empty(), t) {
                (true, _) if whiteout => return Ok(Entry::Absent),
                (true, FileType::Directory) | (false, FileType::Directory) => {
                    let d = open_beneath(dirfd, name, OFlags::RDONLY | OFlags::DIRECTORY)
                        .map_err(|e| self.io("open", *layer, &at, e))?;
                    let opaque = is_opaque(&d);
                    merged.push((*layer, d));
                    if opaque {
                        break;
                    }
                }
                (true, t) => return Ok(Entry::Other(*layer, fd, t)),
                // A non-directory below a directory ends the merge.
                (false, _) => break,
            }
        }
        Ok(if merged.is_empty() {
            Entry::Absent
        } else {
            Entry::Dir(merged)
        })
    }

    /// Reads `path` (relative to the image root) as the container will see it, with
    /// every symlink resolved inside the image; `None` when it does not exist there.
    fn read(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>, SpecFileError> {
        // (directory path, its merged layers) from the root down.
        let mut stack: Vec<(PathBuf, MergedDir)> = vec![(PathBuf::new(), self.root()?)];
        let mut todo: Vec<Vec<u8>> = components(path.as_bytes());
        todo.reverse();
        let mut links = 0;
        while let Some(name) = todo.pop() {
            match &name[..] {
                b"." => continue,
                b".." => {
                    // `..` of the root is the root, as in the kernel's RESOLVE_IN_ROOT.
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let name = OsStr::from_bytes(&name);
            let (rel, dir) = stack.last().expect("the root stays");
            let at = rel.join(name);
            match self.lookup(dir, rel, name)? {
                Entry::Absent => return Ok(None),
                Entry::Dir(merged) => stack.push((at, merged)),
                Entry::Other(layer, fd, FileType::Symlink) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(SpecFileError::TooManyLinks {
                            what: self.what.into(),
                        });
                    }
                    let target = rustix::fs::readlinkat(&fd, "", Vec::new())
                        .map_err(|e| self.io("readlink", layer, &at, e))?;
                    let target = target.as_bytes();
                    if target.starts_with(b"/") {
                        stack.truncate(1);
                    }
                    let mut more = components(target);
                    more.reverse();
                    todo.extend(more);
                }
                Entry::Other(layer, _, t) if todo.is_empty() => {
                    if t != FileType::RegularFile {
                        return Err(SpecFileError::NotRegular {
                            what: self.what.into(),
                            kind: kind_name(t),
                        });
                    }
                    // Reopened for reading only now that it is known to be a regular
                    // file: opening a device or FIFO can have effects of its own.
                    let (_, dirfd) = dir
                        .iter()
                        .find(|(l, _)| *l == layer)
                        .expect("the layer came from this directory");
                    let fd = open_beneath(dirfd, name, OFlags::RDONLY | OFlags::NONBLOCK)
                        .map_err(|e| self.io("open", layer, &at, e))?;
                    return read_bounded(fd, self.what, &self.layers[layer].join(&at), max)
                        .map(Some);
                }
                // A non-directory in the middle of the path: ENOTDIR, so absent.
                Entry::Other(..) => return Ok(None),
            }
        }
        Err(SpecFileError::NotRegular {
            what: self.what.into(),
            kind: "directory",
        })
    }
}

fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Reads `path` of the image whose layer directories are `layers` (top first) as the
/// container will see it: symlinks resolved inside the image, whiteouts and opaque
/// directories honoured, a regular file only, at most `max` bytes. `Ok(None)` when the
/// image has no such file. Blocking.
pub fn read_image_file(
    layers: &[PathBuf],
    path: &str,
    what: &str,
    max: u64,
) -> Result<Option<Vec<u8>>, SpecFileError> {
    LayerChain { layers, what }.read(path, max)
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::symlink};

    use super::*;

    fn layers(n: usize) -> (tempfile::TempDir, Vec<PathBuf>) {
        let tmp = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..n).map(|i| tmp.path().join(format!("l{i}"))).collect();
        for d in &dirs {
            fs::create_dir_all(d.join("etc")).unwrap();
        }
        (tmp, dirs)
    }

    fn read(layers: &[PathBuf], path: &str) -> Result<Option<String>, String> {
        read_image_file(layers, path, "the image's /etc/passwd", 64)
            .map(|o| o.map(|b| String::from_utf8(b).unwrap()))
            .map_err(|e| e.to_string())
    }

    fn mkfifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    }

    #[test]
    fn resolution_table() {
        let host = tempfile::tempdir().unwrap();
        fs::write(host.path().join("passwd"), "hostuser:x:7:7::/:/bin/sh\n").unwrap();
        let host_passwd = host.path().join("passwd");
        type Setup = Box<dyn Fn(&[PathBuf])>;
        type Want = Result<Option<&'static str>, &'static str>;
        let cases: Vec<(&str, Setup, Want)> = vec![
            (
                "plain file",
                Box::new(|l| fs::write(l[0].join("etc/passwd"), "a").unwrap()),
                Ok(Some("a")),
            ),
            ("absent", Box::new(|_| {}), Ok(None)),
            (
                "top layer wins",
                Box::new(|l| {
                    fs::write(l[0].join("etc/passwd"), "top").unwrap();
                    fs::write(l[1].join("etc/passwd"), "low").unwrap();
                }),
                Ok(Some("top")),
            ),
            (
                "lower layer shows through",
                Box::new(|l| fs::write(l[1].join("etc/passwd"), "low").unwrap()),
                Ok(Some("low")),
            ),
            (
                "whiteout hides lower",
                Box::new(|l| {
                    nix::sys::stat::mknod(
                        &l[0].join("etc/passwd"),
                        nix::sys::stat::SFlag::S_IFCHR,
                        nix::sys::stat::Mode::empty(),
                        0,
                    )
                    .unwrap();
                    fs::write(l[1].join("etc/passwd"), "low").unwrap();
                }),
                Ok(None),
            ),
            (
                "absolute symlink to the host is resolved in the image",
                {
                    let p = host_passwd.clone();
                    Box::new(move |l| symlink(&p, l[0].join("etc/passwd")).unwrap())
                },
                Ok(None),
            ),
            (
                "absolute symlink resolved across layers",
                Box::new(|l| {
                    symlink("/etc/real", l[0].join("etc/passwd")).unwrap();
                    fs::write(l[1].join("etc/real"), "real").unwrap();
                }),
                Ok(Some("real")),
            ),
            (
                "relative symlink escaping with .. stays in the root",
                Box::new(|l| {
                    symlink("../../../../../../etc/real", l[0].join("etc/passwd")).unwrap();
                    fs::write(l[0].join("etc/real"), "in-image").unwrap();
                }),
                Ok(Some("in-image")),
            ),
            (
                "symlinked directory in a lower layer",
                Box::new(|l| {
                    fs::remove_dir(l[1].join("etc")).unwrap();
                    fs::remove_dir(l[0].join("etc")).unwrap();
                    fs::create_dir(l[1].join("private")).unwrap();
                    symlink("private", l[1].join("etc")).unwrap();
                    fs::write(l[1].join("private/passwd"), "priv").unwrap();
                }),
                Ok(Some("priv")),
            ),
            (
                "symlink to /dev/zero that the image lacks",
                Box::new(|l| symlink("/dev/zero", l[0].join("etc/passwd")).unwrap()),
                Ok(None),
            ),
            (
                "FIFO",
                Box::new(|l| mkfifo(&l[0].join("etc/passwd"))),
                Err("is a FIFO, not a regular file"),
            ),
            (
                "directory",
                Box::new(|l| fs::create_dir(l[0].join("etc/passwd")).unwrap()),
                Err("is a directory"),
            ),
            (
                "too large",
                Box::new(|l| fs::write(l[0].join("etc/passwd"), [b'x'; 65]).unwrap()),
                Err("larger than 64 bytes"),
            ),
            (
                "symlink loop",
                Box::new(|l| symlink("passwd", l[0].join("etc/passwd")).unwrap()),
                Err("more than 40 symbolic links"),
            ),
        ];
        for (name, setup, want) in cases {
            let (_tmp, l) = layers(2);
            setup(&l);
            let got = read(&l, "etc/passwd");
            match (&got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g.as_deref(), w, "{name}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{name}: {g}"),
                _ => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn opaque_directory_hides_lower_layers() {
        let (_tmp, l) = layers(2);
        fs::write(l[1].join("etc/passwd"), "low").unwrap();
        // trusted.* needs CAP_SYS_ADMIN; crustd and its tests run as root.
        rustix::fs::setxattr(
            l[0].join("etc"),
            OPAQUE_XATTR,
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .expect("set the opaque xattr (run as root)");
        assert_eq!(read(&l, "etc/passwd").unwrap(), None);
    }

    #[test]
    fn host_file_must_be_regular_and_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        mkfifo(&fifo);
        let file = tmp.path().join("p.json");
        fs::write(&file, "{}").unwrap();
        let what = "seccomp profile";
        let err = read_host_file(&fifo, what, 64).unwrap_err().to_string();
        assert!(err.contains("is a FIFO"), "{err}");
        let err = read_host_file(Path::new("/dev/zero"), what, 64)
            .unwrap_err()
            .to_string();
        assert!(err.contains("character device"), "{err}");
        assert_eq!(read_host_file(&file, what, 64).unwrap(), b"{}");
        let err = read_host_file(&file, what, 1).unwrap_err().to_string();
        assert!(err.contains("larger than 1 bytes"), "{err}");
    }
}
