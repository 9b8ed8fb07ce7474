//! The container's device nodes, as runc makes them (libcontainer/rootfs_linux.go
//! `createDevices`, `setupPtmx`, `setupDevSymlinks`): each `linux.devices` entry is
//! made with mknod in the container's /dev (the spec's tmpfs), or bound from the host
//! node where mknod is not allowed. Whether the container may *use* a node is the
//! device cgroup's business (`linux.resources.devices`), not this module's.

use std::{
    fs,
    os::{
        fd::OwnedFd,
        unix::fs::{FileTypeExt, MetadataExt},
    },
    path::Path,
};

use nix::{
    errno::Errno,
    fcntl::AtFlags,
    mount::{MsFlags, mount},
    sys::stat::{Mode, SFlag, makedev, mknodat, umask},
    unistd::{Gid, Uid, UnlinkatFlags, fchownat, symlinkat, unlinkat},
};
use oci_spec::runtime::{Linux, LinuxDevice, LinuxDeviceType};

use super::mount_at::{self, TargetKind};

/// The devices runc adds to every container even when the spec does not list them
/// (libcontainer/specconv `AllowedDevices`): the ones spec generation lists too.
use crate::container::spec_devices::DEFAULT_DEVICES;

/// Creates the spec's devices (and the defaults it does not list) in the rootfs `root`
/// (a descriptor, see `mount_at`: each node is made relative to its directory's
/// descriptor, resolved inside the rootfs).
pub(super) fn create_devices(linux: &Linux, root: &OwnedFd) -> Result<(), String> {
    let mut devices = linux.devices().clone().unwrap_or_default();
    for (path, major, minor) in DEFAULT_DEVICES {
        if !devices.iter().any(|d| d.path() == Path::new(path)) {
            let mut d = LinuxDevice::default();
            d.set_path(path.into());
            d.set_typ(LinuxDeviceType::C);
            d.set_major(major);
            d.set_minor(minor);
            d.set_file_mode(Some(0o666));
            devices.push(d);
        }
    }
    // The nodes get exactly the spec's modes, as runc does (it sets umask 0 too).
    let old = umask(Mode::empty());
    let result = devices.iter().try_for_each(|d| create_device(root, d));
    umask(old);
    result
}

fn create_device(root: &OwnedFd, d: &LinuxDevice) -> Result<(), String> {
    // /dev/ptmx is the devpts instance's (a link made by `dev_links`), as in runc.
    if d.path() == Path::new("/dev/ptmx") {
        return Ok(());
    }
    let (Some(parent), Some(name)) = (d.path().parent(), d.path().file_name()) else {
        return Err(format!("device {} is the rootfs", d.path().display()));
    };
    if name == ".." {
        return Err(format!("device {} names no node", d.path().display()));
    }
    let dir = mount_at::open_target(root, parent, TargetKind::Dir)?;
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(format!(
                "device {}: type a is for cgroup rules only",
                d.path().display()
            ));
        }
    };
    // OCI: fileMode is the permission bits (runc drops any type bits given).
    let perm = Mode::from_bits_truncate(d.file_mode().unwrap_or(0o666) & 0o7777);
    let dev = makedev(d.major() as u64, d.minor() as u64);
    match mknodat(&dir, name, kind, perm, dev) {
        Ok(()) => {}
        // runc leaves a node that is already there (a /dev that is not a fresh tmpfs).
        Err(Errno::EEXIST) => return Ok(()),
        // No CAP_MKNOD (or a user namespace): bind the host's node, as runc does.
        Err(Errno::EPERM) => return bind_host_node(root, d, kind),
        Err(e) => return Err(format!("mknod {}: {e}", d.path().display())),
    }
    fchownat(
        &dir,
        name,
        Some(Uid::from_raw(d.uid().unwrap_or(0))),
        Some(Gid::from_raw(d.gid().unwrap_or(0))),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| format!("chown {}: {e}", d.path().display()))
}

/// runc's `bindMountDeviceNode`: binds the host node at the device's own path. Checked
/// first to be the same device, so a host without it fails instead of exposing
/// another node.
fn bind_host_node(root: &OwnedFd, d: &LinuxDevice, kind: SFlag) -> Result<(), String> {
    let host = d.path();
    let meta = fs::metadata(host).map_err(|e| {
        format!(
            "mknod {} not permitted and no host node to bind: {e}",
            host.display()
        )
    })?;
    let same_kind = match kind {
        SFlag::S_IFCHR => meta.file_type().is_char_device(),
        SFlag::S_IFBLK => meta.file_type().is_block_device(),
        _ => meta.file_type().is_fifo(),
    };
    let want = makedev(d.major() as u64, d.minor() as u64);
    if !same_kind || (kind != SFlag::S_IFIFO && meta.rdev() != want) {
        return Err(format!(
            "mknod {} not permitted and the host node is another device",
            host.display()
        ));
    }
    let target = mount_at::open_target(root, host, TargetKind::File)?;
    mount(
        Some(host),
        &mount_at::fd_path(&target),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("bind {}: {e}", host.display()))
}

/// The links every /dev has (runc's `setupPtmx` and `setupDevSymlinks`). A name the
/// spec already put there (a device or mount) is left alone.
pub(super) fn dev_links(root: &OwnedFd) -> Result<(), String> {
    let dev = mount_at::open_target(root, Path::new("/dev"), TargetKind::Dir)?;
    // runc removes any /dev/ptmx node first: the container's devpts owns ptys.
    match unlinkat(&dev, "ptmx", UnlinkatFlags::NoRemoveDir) {
        // EISDIR/EPERM: a directory (a mount point) stays.
        Ok(()) | Err(Errno::ENOENT | Errno::EISDIR | Errno::EPERM) => {}
        Err(e) => return Err(format!("remove /dev/ptmx: {e}")),
    }
    let mut links = vec![
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("core", "/proc/kcore"));
    }
    for (link, to) in links {
        match symlinkat(to, &dev, link) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(format!("link /dev/{link}: {e}")),
        }
    }
    Ok(())
}
