//! Mount targets held by descriptor, never by path (CVE-2021-30465 class, issue 13
//! item 6).
//!
//! Resolving a target path and then mounting onto that path leaves a window: a
//! container sharing a volume with this one can swap a component of the path for a
//! symlink in between, and the mount (or the directory created for it) lands outside
//! the rootfs. runc closed it in 1.0.0-rc95 by mounting onto `/proc/self/fd/<n>` of a
//! descriptor resolved inside the rootfs. Here:
//!
//! - every target is resolved with `openat2(2)` `RESOLVE_IN_ROOT |
//!   RESOLVE_NO_MAGICLINKS` relative to an `O_PATH` descriptor of the rootfs, so `..`
//!   and absolute symlinks stop at the rootfs whatever is swapped when, and missing
//!   components are made with `mkdirat`/`mknodat` relative to a parent resolved the
//!   same way ([`open_target`]);
//! - a bind is a detached clone of its source (`open_tree(2)`), given its flags while
//!   detached (`mount_setattr(2)`), attached to the target descriptor
//!   (`move_mount(2)`, `MOVE_MOUNT_T_EMPTY_PATH`), and given its propagation through
//!   the same mount descriptor: nothing is looked up by path after resolution;
//! - other filesystems are mounted onto `/proc/self/fd/<n>` of the target descriptor,
//!   with all their flags in that one call.
//!
//! This runs in the launcher's child between clone and exec. The monitor is
//! single-threaded (see `launch.rs`), so the child may allocate; these are plain
//! syscalls either way.

use std::{
    ffi::{CString, OsString},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::{Component, Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::OFlag,
    sys::stat::{Mode, SFlag, mkdirat, mknodat},
};

/// What a missing target is created as: a directory, or (for the bind of a file) an
/// empty regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TargetKind {
    Dir,
    File,
}

/// `struct open_how` (linux/openat2.h); libc's is non-exhaustive.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(2)` of `path` below `root` as if `root` were `/`, without following
/// magic links (`/proc/<pid>/fd/*`, `/proc/<pid>/root`) a container could plant.
fn open_in_root(root: &OwnedFd, path: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    // An empty path means the root itself.
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    let how = OpenHow {
        flags: (flags | OFlag::O_CLOEXEC).bits() as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    loop {
        // SAFETY: a valid dirfd, a NUL-terminated path and an open_how of the size
        // passed, all outliving the call; the result is a new fd or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel just returned this fd; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        match Errno::last() {
            // openat2 asks for a retry when a rename raced a `..` walk.
            Errno::EAGAIN | Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Opens the rootfs for [`open_target`]: `O_PATH`, so that it is the mount now at
/// `rootfs` (the rootfs bind) that targets are resolved in.
pub(super) fn open_root(rootfs: &Path) -> Result<OwnedFd, String> {
    nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open rootfs {}: {e}", rootfs.display()))
}

/// The parts of `dest` openat2 resolves (`.` and the root dropped, `..` kept: it
/// stops at the root).
fn parts(dest: &Path) -> Vec<OsString> {
    dest.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

fn join(parts: &[OsString]) -> PathBuf {
    parts.iter().collect()
}

/// Symlinks followed by hand (dangling ones, whose target must be created) before
/// giving up, as the kernel's own limit.
const MAX_HOPS: usize = 40;

/// Turns of [`open_target`]'s loop before it gives up.
const MAX_TURNS: usize = 4096;

/// An `O_PATH` descriptor of `dest` inside the rootfs `root`, creating what is missing
/// (directories 0755, a final file 0644 for [`TargetKind::File`]), every step relative
/// to descriptors resolved in the root. A dangling symlink on the way is followed to
/// create its target inside the root, as a path walk confined to the rootfs would
/// (what the launcher used to do by path, with a race).
pub(super) fn open_target(
    root: &OwnedFd,
    dest: &Path,
    kind: TargetKind,
) -> Result<OwnedFd, String> {
    let fail = |what: &str, e: Errno| format!("{what} mount target {}: {e}", dest.display());
    let mut want = parts(dest);
    let mut hops = 0;
    // Each turn creates a component or follows a link; a writer racing us (swapping
    // a directory and a link) can only make it take more turns, so bound them too.
    for _ in 0..MAX_TURNS {
        match open_in_root(root, &join(&want), OFlag::O_PATH) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(fail("open", e)),
        }
        // The first missing component; its parent exists (we just got ENOENT for it).
        let mut missing = want.len();
        for i in 1..want.len() {
            match open_in_root(root, &join(&want[..i]), OFlag::O_PATH) {
                Ok(_) => {}
                Err(Errno::ENOENT) => {
                    missing = i;
                    break;
                }
                Err(e) => return Err(fail("open", e)),
            }
        }
        let parent_parts = &want[..missing - 1];
        let name = want[missing - 1].clone();
        let parent = match open_in_root(
            root,
            &join(parent_parts),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
        ) {
            Ok(fd) => fd,
            // Gone since we looked (a racing swap): look again.
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(fail("open the parent of", e)),
        };
        let last = missing == want.len();
        let made = if last && kind == TargetKind::File {
            mknodat(
                &parent,
                name.as_os_str(),
                SFlag::S_IFREG,
                Mode::from_bits_truncate(0o644),
                0,
            )
        } else {
            mkdirat(&parent, name.as_os_str(), Mode::from_bits_truncate(0o755))
        };
        match made {
            Ok(()) => continue,
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(fail("create", e)),
        }
        // It exists, yet does not resolve: a dangling symlink (or a racing writer).
        // Follow it by hand; openat2 resolves the result inside the root again.
        let target = match nix::fcntl::readlinkat(&parent, name.as_os_str()) {
            Ok(t) => PathBuf::from(t),
            // Not a link (any more): someone made or swapped it; look again.
            Err(Errno::EINVAL | Errno::ENOENT) => continue,
            Err(e) => return Err(fail("read link in", e)),
        };
        hops += 1;
        if hops > MAX_HOPS {
            return Err(fail("resolve", Errno::ELOOP));
        }
        let mut next: Vec<OsString> = if target.is_absolute() {
            Vec::new()
        } else {
            parent_parts.to_vec()
        };
        next.extend(parts(&target));
        next.extend_from_slice(&want[missing..]);
        want = next;
    }
    Err(fail("resolve (it keeps changing)", Errno::EAGAIN))
}

/// `/proc/self/fd/<n>`: the path mount(2) follows to exactly the inode `fd` holds. The
/// launcher still sees the monitor's /proc here (before pivot_root), where it has a
/// PID whatever PID namespace it was born in.
pub(super) fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

const AT_RECURSIVE: libc::c_uint = 0x8000;

/// `open_tree(2)` with OPEN_TREE_CLONE: a detached copy of the mount (tree) at `path`.
pub(super) fn open_tree_clone(path: &Path, recursive: bool) -> Result<OwnedFd, Errno> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: a valid C path and flags; the result is a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just gave us this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `move_mount(2)`: attaches the detached mount `tree` onto the inode `target` holds.
pub(super) fn move_mount_to(tree: &OwnedFd, target: &OwnedFd) -> Result<(), Errno> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    // SAFETY: two valid fds and empty C paths for both.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if rc < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// `struct mount_attr` (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(2)` on the mount `dirfd` + `path` names (`path` empty: `dirfd`
/// itself), and every mount below it with `recursive`.
fn mount_setattr(
    dirfd: RawFd,
    path: &Path,
    recursive: bool,
    attr_set: u64,
    propagation: u64,
    userns_fd: u64,
) -> Result<(), Errno> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    let mut flags = if path.as_os_str().is_empty() {
        libc::AT_EMPTY_PATH as libc::c_uint
    } else {
        0
    };
    if recursive {
        flags |= AT_RECURSIVE;
    }
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation,
        userns_fd,
    };
    // SAFETY: a valid dirfd, a C path, a correctly laid out mount_attr and its size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            c.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Sets `attrs` (`MOUNT_ATTR_*`) on the mount `fd` is (an `open_tree` or `fsmount`
/// descriptor, attached or not), and below it with `recursive`.
pub(super) fn set_attrs_fd(fd: &OwnedFd, attrs: u64, recursive: bool) -> Result<(), Errno> {
    mount_setattr(fd.as_raw_fd(), Path::new(""), recursive, attrs, 0, 0)
}

/// Makes the detached mount `fd` (an `open_tree` clone) idmapped with the user
/// namespace `userns`: files owned by host id H show as the host id the namespace
/// maps its id H to. Needs CAP_SYS_ADMIN over the filesystem's user namespace (host
/// root, for ordinary filesystems) and a mount not yet attached.
pub(super) fn set_idmap_fd(
    fd: &OwnedFd,
    userns: &impl AsRawFd,
    recursive: bool,
) -> Result<(), Errno> {
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    mount_setattr(
        fd.as_raw_fd(),
        Path::new(""),
        recursive,
        MOUNT_ATTR_IDMAP,
        0,
        userns.as_raw_fd() as u64,
    )
}

/// Sets the propagation (`MS_SHARED`, `MS_SLAVE`, `MS_PRIVATE`, `MS_UNBINDABLE`) of
/// the mount `fd` is, and below it with `recursive`.
pub(super) fn set_propagation_fd(
    fd: &OwnedFd,
    propagation: u64,
    recursive: bool,
) -> Result<(), Errno> {
    mount_setattr(fd.as_raw_fd(), Path::new(""), recursive, 0, propagation, 0)
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::symlink};

    use nix::sys::stat::fstat;

    use super::*;

    /// Whether `fd` is a directory.
    fn is_dir(fd: &OwnedFd) -> bool {
        fstat(fd)
            .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
    }

    /// Where `open_target` lands, as a path: the fd's /proc link, read back.
    fn landed(fd: &OwnedFd) -> PathBuf {
        fs::read_link(fd_path(fd)).unwrap()
    }

    #[test]
    fn targets_resolve_and_are_created_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("real")).unwrap();
        symlink(outside.path(), root.join("abs-out")).unwrap();
        symlink("/run/nologin", root.join("etc/hosts")).unwrap();
        symlink("../../../../..", root.join("up")).unwrap();
        symlink("/real", root.join("abs")).unwrap();
        symlink("/made/by/link", root.join("dangling")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        let root_fd = open_root(&root).unwrap();
        let root = fs::canonicalize(&root).unwrap();
        let cases: &[(&str, TargetKind, PathBuf)] = &[
            (
                "/etc/resolv.conf",
                TargetKind::File,
                root.join("etc/resolv.conf"),
            ),
            // A dangling link as the target: its target is made, in the root.
            ("/etc/hosts", TargetKind::File, root.join("run/nologin")),
            ("/up/etc", TargetKind::Dir, root.join("etc")),
            ("/abs/x", TargetKind::Dir, root.join("real/x")),
            ("/../../etc", TargetKind::Dir, root.join("etc")),
            ("/a/../../b", TargetKind::Dir, root.join("b")),
            ("/new/deep/dir", TargetKind::Dir, root.join("new/deep/dir")),
            // The symlink names a host directory: RESOLVE_IN_ROOT reads it inside.
            (
                "/abs-out/x",
                TargetKind::Dir,
                root.join(outside.path().strip_prefix("/").unwrap())
                    .join("x"),
            ),
            ("/dangling/y", TargetKind::Dir, root.join("made/by/link/y")),
        ];
        for (dest, kind, want) in cases {
            let fd = open_target(&root_fd, Path::new(dest), *kind).unwrap();
            assert_eq!(&landed(&fd), want, "{dest}");
            assert_eq!(is_dir(&fd), *kind == TargetKind::Dir, "{dest}: {kind:?}");
        }
        assert!(
            fs::read_dir(outside.path()).unwrap().next().is_none(),
            "nothing is created outside the root"
        );
        assert!(
            open_target(&root_fd, Path::new("/loop1/x"), TargetKind::Dir).is_err(),
            "symlink loops are refused"
        );
    }
}

#[cfg(test)]
mod race_tests {
    use std::{
        fs,
        os::unix::fs::symlink,
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
    };

    use super::*;

    /// A directory and a symlink to a host directory trade places in a tight loop
    /// while targets through them are opened: every open succeeds, lands inside the
    /// root, and nothing appears in the host directory.
    #[test]
    fn racing_swaps_never_lead_out_of_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("vol/sub")).unwrap();
        symlink(outside.path(), root.join("vol/swap")).unwrap();
        let root_fd = open_root(&root).unwrap();
        let root = fs::canonicalize(&root).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (stop, vol) = (stop.clone(), root.join("vol"));
            std::thread::spawn(move || {
                let dir = fs::File::open(&vol).unwrap();
                while !stop.load(Ordering::SeqCst) {
                    nix::fcntl::renameat2(
                        &dir,
                        "sub",
                        &dir,
                        "swap",
                        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                    )
                    .unwrap();
                }
            })
        };
        let mut result = Ok(());
        for i in 0..2000 {
            let dest = format!("/vol/sub/d{}/x", i % 7);
            match open_target(&root_fd, Path::new(&dest), TargetKind::Dir) {
                Ok(fd) => {
                    let at = fs::read_link(fd_path(&fd)).unwrap();
                    if !at.starts_with(&root) {
                        result = Err(format!("{dest} landed at {}", at.display()));
                        break;
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
        swapper.join().unwrap();
        result.unwrap();
        assert!(
            fs::read_dir(outside.path()).unwrap().next().is_none(),
            "nothing is created outside the root"
        );
    }
}
