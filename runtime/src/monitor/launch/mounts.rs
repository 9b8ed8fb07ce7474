//! The container's filesystem, built in its own mount namespace in runc's order
//! (libcontainer/rootfs_linux.go `prepareRootfs`: root propagation, rootfs, the spec's
//! mounts, devices, pivot_root; then `standard_init_linux.go`: read-only paths, masked
//! paths, read-only root), so a spec behaves the same under both launchers.

use std::{
    fs,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::OFlag,
    mount::{MntFlags, MsFlags, mount, umount2},
    sys::stat::Mode,
    unistd::{chdir, fchdir, pivot_root},
};
use oci_spec::runtime::Spec;

use super::{
    cgroupfs::CgroupView,
    mount_at::{self, TargetKind},
};

/// Everything up to and including pivot_root: root propagation, the rootfs, the spec's
/// mounts and /dev. `before_pivot` runs once the container's mounts are in place and
/// the runtime's root is still `/` (where runc runs createContainer hooks). Leaves the
/// process at `/` of the new root.
pub(super) fn prepare_rootfs(
    spec: &Spec,
    rootfs: &Path,
    overlay: Option<&super::super::OverlayMount>,
    cgroups: Option<&CgroupView>,
    userns: Option<&std::fs::File>,
    before_pivot: &mut dyn FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let linux = spec.linux().clone().unwrap_or_default();
    let mounts = spec.mounts().clone().unwrap_or_default();
    let shared_clones = clone_shared_sources(&mounts)?;
    // runc's `prepareRoot`: `/` gets `linux.rootfsPropagation`, rslave by default, so
    // host mounts reach the container but nothing we mount goes back. With `rshared`
    // (a CRI Bidirectional mount) the namespace keeps its peers on the host, which is
    // what lets a mount under such a bind reach the host.
    let root_propagation = match linux.rootfs_propagation().as_deref() {
        None | Some("") => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        Some(p) => propagation_flags(p).ok_or_else(|| format!("unknown rootfsPropagation {p}"))?,
    };
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        root_propagation,
        None::<&str>,
    )
    .map_err(|e| format!("set propagation of /: {e}"))?;
    // runc's `rootfsParentMountPrivate`: the mount holding the rootfs goes private, so
    // the rootfs mounts below do not propagate to other namespaces (with a shared root
    // they would land on the host), and pivot_root accepts it (it refuses a shared
    // parent of the new root).
    make_parent_private(rootfs)?;
    if let Some(o) = overlay {
        o.mount_at(rootfs)?;
    }
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind rootfs {}: {e}", rootfs.display()))?;

    // Every target is resolved and created through descriptors inside the rootfs,
    // never by path (CVE-2021-30465: see `mount_at`). Opened after the rootfs bind, so
    // it is that mount targets resolve in.
    let root = mount_at::open_root(rootfs)?;
    for (m, clone) in mounts.iter().zip(shared_clones) {
        let typ = m.typ().clone().unwrap_or_default();
        let options = m.options().clone().unwrap_or_default();
        let (flags, data) = mount_flags(&options);
        let source = m.source().clone().unwrap_or_else(|| PathBuf::from(&typ));
        let dest = m.destination();
        if flags.contains(MsFlags::MS_BIND) {
            let idmap = idmap_of(&linux, m, userns)?;
            bind_mount(&root, &source, clone, dest, flags, &options, idmap)?;
        } else if typ == "cgroup" || typ == "cgroup2" {
            let target = mount_at::open_target(&root, dest, TargetKind::Dir)?;
            // The view is a tmpfs with binds below: those are made inside the tmpfs
            // just mounted, reached by resolving the target again (in the root, and on
            // the container's own sysfs, which nothing else writes).
            let reopen = || mount_at::open_target(&root, dest, TargetKind::Dir);
            cgroups
                .ok_or("no cgroup view for a cgroup mount")?
                .mount(&target, &reopen, flags)
                .map_err(|e| format!("mount cgroups at {}: {e}", dest.display()))?;
        } else {
            let target = mount_at::open_target(&root, dest, TargetKind::Dir)?;
            mount(
                Some(&source),
                &mount_at::fd_path(&target),
                Some(typ.as_str()),
                flags,
                data.as_deref(),
            )
            .map_err(|e| format!("mount {typ} at {}: {e}", dest.display()))?;
        }
    }

    // runc's `needsSetupDev`: a bind-mounted /dev is the caller's; otherwise /dev (the
    // spec's tmpfs) gets the spec's devices and the usual links.
    let dev_is_bound = mounts.iter().any(|m| {
        m.destination() == Path::new("/dev")
            && (m.typ().as_deref() == Some("bind")
                || mount_flags(m.options().as_deref().unwrap_or_default())
                    .0
                    .contains(MsFlags::MS_BIND))
    });
    if !dev_is_bound {
        super::devices::create_devices(&linux, &root)?;
        super::devices::dev_links(&root)?;
    }

    before_pivot()?;

    // pivot_root(".", ".") stacks the old root on the new one; runc's `pivotRoot` then
    // makes it rslave before detaching it, so the unmount cannot propagate to the host
    // (with a shared root propagation it otherwise would). The old root is reached
    // through a descriptor opened before (runc 1.2 does the same): mount(2) resolves
    // "." without crossing the mount stacked there, so a plain "." would make the
    // *new* root rslave and cut a bidirectional mount off from its host peers.
    let old_root = nix::fcntl::open(
        "/",
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open the old root: {e}"))?;
    chdir(rootfs).map_err(|e| format!("chdir rootfs: {e}"))?;
    pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    fchdir(&old_root).map_err(|e| format!("fchdir to the old root: {e}"))?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("make the old root rslave: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach old root: {e}"))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    // runc applies a private root propagation again to the new root: the rootfs bind
    // was made from a mount we had just made private, not from `/`.
    if root_propagation.contains(MsFlags::MS_PRIVATE) {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            root_propagation,
            None::<&str>,
        )
        .map_err(|e| format!("set propagation of the new root: {e}"))?;
    }
    Ok(())
}

/// A bind mount from the spec: the target takes the source's kind, then read-only,
/// nosuid, nodev, noexec, recursive read-only and propagation as the options ask.
/// `clone` is the source's detached clone for a bidirectional mount
/// ([`clone_shared_sources`]); any other source is cloned here.
///
/// The clone gets its flags while detached, is attached onto the target's descriptor,
/// and gets its propagation through its own descriptor: no path is looked up after
/// the target was resolved in the rootfs, so a symlink swapped into a shared volume
/// cannot move the mount (CVE-2021-30465), nor the flags onto another mount. (A bind
/// ignores per-mount flags; runc remounts for them, which is a second lookup by path.)
fn bind_mount(
    root: &OwnedFd,
    source: &Path,
    clone: Option<OwnedFd>,
    destination: &Path,
    flags: MsFlags,
    options: &[String],
    idmap: Option<&std::fs::File>,
) -> Result<(), String> {
    let kind = if source.is_dir() {
        TargetKind::Dir
    } else {
        TargetKind::File
    };
    let target = mount_at::open_target(root, destination, kind)?;
    let failed = |what: &'static str| {
        move |e: Errno| {
            let (source, destination) = (source.display(), destination.display());
            format!("bind {source} at {destination}: {what}: {e}")
        }
    };
    let tree = match clone {
        Some(fd) => fd,
        None => mount_at::open_tree_clone(source, flags.contains(MsFlags::MS_REC))
            .map_err(failed("clone the source"))?,
    };
    let mut attrs = 0;
    for (flag, attr) in [
        (MsFlags::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
    ] {
        if flags.contains(flag) {
            attrs |= attr;
        }
    }
    // As a remount would: on the bind itself, not the mounts below it (an image
    // volume's nodev, issue 13 item 4, is on the volume's own mount).
    if attrs != 0 {
        mount_at::set_attrs_fd(&tree, attrs, false).map_err(failed("set flags"))?;
    }
    // An idmapped bind (the spec mount's uidMappings): the pod's user namespace,
    // the only mapping CreateContainer lets through, on the detached clone (and the
    // mounts below it, for an rbind) before it is attached.
    if let Some(ns) = idmap {
        mount_at::set_idmap_fd(&tree, ns, flags.contains(MsFlags::MS_REC))
            .map_err(failed("idmap it with the pod's user namespace"))?;
    }
    if options.iter().any(|o| o == "rro") {
        mount_at::set_attrs_fd(&tree, MOUNT_ATTR_RDONLY, true)
            .map_err(failed("make it recursively read-only"))?;
    }
    mount_at::move_mount_to(&tree, &target).map_err(failed("attach"))?;
    // Propagation as CRI asked (rslave: host mounts appear; rshared: both ways, which
    // needs a shared source: the clone is in the source's peer group).
    if let Some(p) = options.iter().find_map(|o| propagation_flags(o)) {
        let recursive = p.contains(MsFlags::MS_REC);
        let kind = p & !MsFlags::MS_REC;
        mount_at::set_propagation_fd(&tree, kind.bits(), recursive)
            .map_err(failed("set propagation"))?;
    }
    Ok(())
}

/// The user namespace to idmap mount `m` with: none when it has no mappings; the
/// pod's (`userns`, opened from the spec's user namespace path) when its mappings are
/// the spec's own. Others are refused here too, not mounted some other way.
fn idmap_of<'a>(
    linux: &oci_spec::runtime::Linux,
    m: &oci_spec::runtime::Mount,
    userns: Option<&'a std::fs::File>,
) -> Result<Option<&'a std::fs::File>, String> {
    let (Some(uids), Some(gids)) = (m.uid_mappings(), m.gid_mappings()) else {
        return match (m.uid_mappings(), m.gid_mappings()) {
            (None, None) => Ok(None),
            _ => Err(format!(
                "mount at {}: uidMappings and gidMappings go together",
                m.destination().display()
            )),
        };
    };
    let same =
        Some(uids) == linux.uid_mappings().as_ref() && Some(gids) == linux.gid_mappings().as_ref();
    match userns {
        Some(ns) if same => Ok(Some(ns)),
        _ => Err(format!(
            "mount at {}: an idmapped mount must have the container's user namespace mappings",
            m.destination().display()
        )),
    }
}

/// After pivot_root (runc's order, `standard_init_linux.go`): read-only paths, masked
/// paths, then the read-only root. Pod sysctls must be written before this: /proc/sys
/// is one of the read-only paths.
pub(super) fn finalize_rootfs(spec: &Spec) -> Result<(), String> {
    let linux = spec.linux().clone().unwrap_or_default();
    for path in linux.readonly_paths().clone().unwrap_or_default() {
        let p = Path::new(&path);
        if !p.exists() {
            continue;
        }
        mount(
            Some(p),
            p,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| format!("readonly {path}: {e}"))?;
        mount(
            None::<&str>,
            p,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| format!("readonly {path}: {e}"))?;
    }
    for path in linux.masked_paths().clone().unwrap_or_default() {
        let p = Path::new(&path);
        match fs::metadata(p) {
            Ok(meta) if meta.is_dir() => mount(
                Some("tmpfs"),
                p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(|e| format!("mask {path}: {e}"))?,
            Ok(_) => mount(
                Some("/dev/null"),
                p,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("mask {path}: {e}"))?,
            Err(_) => {}
        }
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| format!("read-only rootfs: {e}"))?;
    }
    Ok(())
}

/// A bind that propagates both ways (CRI Bidirectional: `rshared`) must be in its
/// source's peer group on the host, so the source must be a shared mount there, or
/// nothing the container mounts would reach the host: checked, as containerd's CRI
/// does (`ensureShared`), rather than silently not propagating.
///
/// Each such source is cloned (`open_tree(2)`, OPEN_TREE_CLONE) before anything
/// changes propagation: until then our mounts are copies of the host's, and a clone of
/// a shared mount joins its peer group (fs/namespace.c `clone_mnt`). The clone is
/// detached, so neither the root's propagation nor making the rootfs's parent private
/// (which may be the very mount the source is on) touches it; it is moved into place
/// later. runc binds from the live tree instead, which loses the peer group whenever
/// the source shares the mount holding the rootfs.
fn clone_shared_sources(
    mounts: &[oci_spec::runtime::Mount],
) -> Result<Vec<Option<OwnedFd>>, String> {
    let shared = |m: &oci_spec::runtime::Mount| {
        m.options()
            .as_deref()
            .is_some_and(|o| o.iter().any(|o| o == "rshared" || o == "shared"))
    };
    if !mounts.iter().any(shared) {
        return Ok(mounts.iter().map(|_| None).collect());
    }
    let info = mountinfo()?;
    let mut clones = Vec::with_capacity(mounts.len());
    for m in mounts {
        let options = m.options().clone().unwrap_or_default();
        let (flags, _) = mount_flags(&options);
        let Some(source) = m.source().as_deref().filter(|_| shared(m)) else {
            clones.push(None);
            continue;
        };
        if !flags.contains(MsFlags::MS_BIND) {
            clones.push(None);
            continue;
        }
        let source =
            fs::canonicalize(source).map_err(|e| format!("resolve {}: {e}", source.display()))?;
        let holder = containing_mount(&info, &source)
            .ok_or_else(|| format!("no mount holds {}", source.display()))?;
        if !holder.shared {
            return Err(format!(
                "{} is on mount {}, which is not shared: a bidirectional mount needs a \
                 shared source (mount --make-shared)",
                source.display(),
                holder.mount_point.display()
            ));
        }
        let fd = mount_at::open_tree_clone(&source, flags.contains(MsFlags::MS_REC))
            .map_err(|e| format!("clone {}: {e}", source.display()))?;
        clones.push(Some(fd));
    }
    Ok(clones)
}

/// The mount `path` (canonical) is on: the last-mounted of the deepest mount points
/// above it (mountinfo lists mounts in mount order, so a later one covers an earlier
/// one at the same place).
fn containing_mount<'a>(info: &'a [MountInfo], path: &Path) -> Option<&'a MountInfo> {
    info.iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .fold(None, |best: Option<&MountInfo>, m| match best {
            Some(b) if b.mount_point.as_os_str().len() > m.mount_point.as_os_str().len() => Some(b),
            _ => Some(m),
        })
}

/// Makes the mount that holds `rootfs` private (in our namespace only).
fn make_parent_private(rootfs: &Path) -> Result<(), String> {
    let rootfs = fs::canonicalize(rootfs).map_err(|e| format!("resolve rootfs: {e}"))?;
    let info = mountinfo()?;
    let parent = &containing_mount(&info, &rootfs)
        .ok_or_else(|| format!("no mount holds {}", rootfs.display()))?
        .mount_point;
    mount(
        None::<&str>,
        parent,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make {} private: {e}", parent.display()))
}

/// One line of `/proc/self/mountinfo` (proc(5)), the fields the launcher needs.
pub(super) struct MountInfo {
    /// The directory of the filesystem that is mounted (a bind's subtree).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub super_options: Vec<String>,
    /// In a peer group (`shared:N` among the optional fields).
    pub shared: bool,
}

pub(super) fn mountinfo() -> Result<Vec<MountInfo>, String> {
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("read /proc/self/mountinfo: {e}"))?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

fn parse_mountinfo_line(line: &str) -> Option<MountInfo> {
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let mut right = right.split(' ');
    let fstype = right.next()?.to_string();
    let _source = right.next()?;
    let super_options = right.next()?.split(',').map(str::to_string).collect();
    Some(MountInfo {
        root: PathBuf::from(unescape(left.get(3)?)),
        mount_point: PathBuf::from(unescape(left.get(4)?)),
        fstype,
        super_options,
        shared: left.iter().skip(6).any(|f| f.starts_with("shared:")),
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `mount_setattr(2)` attribute bits (linux/mount.h).
pub(super) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(super) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(super) const MOUNT_ATTR_NODEV: u64 = 0x4;
pub(super) const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// The propagation an OCI option names, if it names one.
fn propagation_flags(option: &str) -> Option<MsFlags> {
    Some(match option {
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "private" => MsFlags::MS_PRIVATE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        _ => return None,
    })
}

/// OCI mount options -> flags and the data string for the rest.
pub(super) fn mount_flags(options: &[String]) -> (MsFlags, Option<String>) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        match option.as_str() {
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => {}
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "rro" => {}
            p if propagation_flags(p).is_some() => {}
            other => data.push(other.to_string()),
        }
    }
    (flags, (!data.is_empty()).then(|| data.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options() {
        let (f, d) = mount_flags(&[
            "nosuid".into(),
            "noexec".into(),
            "mode=755".into(),
            "size=65536k".into(),
        ]);
        assert!(f.contains(MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC));
        assert_eq!(d.as_deref(), Some("mode=755,size=65536k"));
        let (f, d) = mount_flags(&["rbind".into(), "ro".into(), "rprivate".into()]);
        assert!(f.contains(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY));
        assert_eq!(d, None);
    }

    #[test]
    fn mountinfo_lines() {
        let cases = [
            (
                "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory",
                ("/", "/sys/fs/cgroup/memory", "cgroup", "rw,memory"),
            ),
            (
                r"90 29 8:1 /var/a\040b /mnt/x\134y rw - ext4 /dev/sda1 rw",
                ("/var/a b", r"/mnt/x\y", "ext4", "rw"),
            ),
            (
                "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate",
                ("/", "/sys/fs/cgroup/unified", "cgroup2", "rw,nsdelegate"),
            ),
        ];
        for (line, (root, mp, fstype, opts)) in cases {
            let m = parse_mountinfo_line(line).unwrap_or_else(|| panic!("{line}"));
            assert_eq!(m.root, Path::new(root), "{line}");
            assert_eq!(m.mount_point, Path::new(mp), "{line}");
            assert_eq!(m.fstype, fstype, "{line}");
            assert_eq!(m.super_options.join(","), opts, "{line}");
            assert_eq!(m.shared, line.contains(" shared:"), "{line}");
        }
        assert!(parse_mountinfo_line("garbage").is_none());
    }
}
