//! Device nodes and device cgroup rules. Reading device nodes is the one host access spec
//! generation needs; it sits behind [`DeviceLookup`] so the rules can be unit tested.

use std::{
    io,
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use super::{DeviceSpec, SpecError};

/// Character or block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostDeviceKind {
    Char,
    Block,
}

/// A device node found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    /// Where it was found on the host.
    pub path: PathBuf,
    pub kind: HostDeviceKind,
    pub major: i64,
    pub minor: i64,
    /// Permission bits (`0o666`).
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Looks device nodes up on the host.
pub trait DeviceLookup {
    /// The device at `path` (symlinks followed), or every device below it when it is a
    /// directory. Not a device and not a directory: `InvalidInput`.
    fn lookup(&self, path: &Path) -> io::Result<Vec<HostDevice>>;
    /// Every device under the host's `/dev`, for privileged containers.
    fn host_devices(&self) -> io::Result<Vec<HostDevice>>;
}

/// The real lookup, under a configurable `/dev`.
#[derive(Debug, Clone)]
pub struct HostDevices {
    pub dev_root: PathBuf,
}

impl Default for HostDevices {
    fn default() -> Self {
        HostDevices {
            dev_root: PathBuf::from("/dev"),
        }
    }
}

fn device_of(path: &Path, meta: &std::fs::Metadata) -> Option<HostDevice> {
    let ft = meta.file_type();
    let kind = if ft.is_char_device() {
        HostDeviceKind::Char
    } else if ft.is_block_device() {
        HostDeviceKind::Block
    } else {
        return None;
    };
    let rdev = meta.rdev();
    Some(HostDevice {
        path: path.to_path_buf(),
        kind,
        major: nix::sys::stat::major(rdev) as i64,
        minor: nix::sys::stat::minor(rdev) as i64,
        file_mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

fn walk(dir: &Path, out: &mut Vec<HostDevice>, skip: &[&str]) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            let name = entry.file_name();
            if !skip.iter().any(|s| name == *s) {
                walk(&path, out, skip)?;
            }
        } else if let Some(d) = device_of(&path, &meta) {
            out.push(d);
        }
    }
    Ok(())
}

impl DeviceLookup for HostDevices {
    fn lookup(&self, path: &Path) -> io::Result<Vec<HostDevice>> {
        let meta = std::fs::metadata(path)?;
        if meta.is_dir() {
            let mut out = Vec::new();
            walk(path, &mut out, &[])?;
            return Ok(out);
        }
        device_of(path, &meta)
            .map(|d| vec![d])
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a device node"))
    }

    fn host_devices(&self) -> io::Result<Vec<HostDevice>> {
        // As runc's HostDevices: /dev/pts and /dev/shm hold the host's terminals and
        // shared memory, /dev/mqueue its queues; the container has its own.
        let mut out = Vec::new();
        walk(
            &self.dev_root,
            &mut out,
            &["pts", "shm", "mqueue", ".lxc", ".lxd-mounts", ".udev"],
        )?;
        // /dev/console is the container's terminal, not the host's.
        out.retain(|d| d.path != self.dev_root.join("console"));
        Ok(out)
    }
}

fn typ(kind: HostDeviceKind) -> LinuxDeviceType {
    match kind {
        HostDeviceKind::Char => LinuxDeviceType::C,
        HostDeviceKind::Block => LinuxDeviceType::B,
    }
}

fn device(path: PathBuf, d: &HostDevice) -> LinuxDevice {
    let mut dev = LinuxDevice::default();
    dev.set_path(path);
    dev.set_typ(typ(d.kind));
    dev.set_major(d.major);
    dev.set_minor(d.minor);
    dev.set_file_mode(Some(d.file_mode));
    dev.set_uid(Some(d.uid));
    dev.set_gid(Some(d.gid));
    dev
}

pub(crate) fn rule(
    allow: bool,
    kind: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(kind);
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_string()));
    r
}

/// The devices every container gets (`oci.WithDefaultUnixDevices`; runc creates the same
/// ones itself, and so does the built-in launcher): (path, major, minor).
pub(crate) const DEFAULT_DEVICES: [(&str, i64, i64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

pub(crate) fn default_devices() -> Vec<LinuxDevice> {
    DEFAULT_DEVICES
        .iter()
        .map(|(path, major, minor)| {
            let d = HostDevice {
                path: PathBuf::from(path),
                kind: HostDeviceKind::Char,
                major: *major,
                minor: *minor,
                file_mode: 0o666,
                uid: 0,
                gid: 0,
            };
            device(PathBuf::from(path), &d)
        })
        .collect()
}

/// Deny everything, then allow what runc always allows: mknod of any device, the default
/// devices, /dev/pts/* and /dev/ptmx.
pub(crate) fn default_cgroup_rules() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{B, C};
    let mut rules = vec![
        rule(false, None, None, None, "rwm"),
        rule(true, Some(C), None, None, "m"),
        rule(true, Some(B), None, None, "m"),
    ];
    rules.extend(
        DEFAULT_DEVICES
            .iter()
            .map(|(_, major, minor)| rule(true, Some(C), Some(*major), Some(*minor), "rwm")),
    );
    rules.push(rule(true, Some(C), Some(136), None, "rwm")); // /dev/pts/*
    rules.push(rule(true, Some(C), Some(5), Some(2), "rwm")); // /dev/ptmx
    rules
}

fn check_permissions(p: &str, field: String) -> Result<String, SpecError> {
    if p.is_empty() {
        return Ok("rwm".to_string());
    }
    let mut seen = String::new();
    for c in p.chars() {
        if !matches!(c, 'r' | 'w' | 'm') || seen.contains(c) {
            return Err(SpecError::invalid(
                field,
                format!("{p:?} is not a combination of r, w and m"),
            ));
        }
        seen.push(c);
    }
    Ok(seen)
}

/// Spec devices and their cgroup rules for the CRI `devices` (`WithDevices`): a host
/// directory maps every device below it under the container path.
pub(crate) fn cri_devices(
    devices: &[DeviceSpec],
    lookup: &dyn DeviceLookup,
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), SpecError> {
    let mut devs = Vec::new();
    let mut rules = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let f = format!("config.devices[{i}]");
        let container_path =
            super::spec_mounts::clean_absolute(&d.container_path, &format!("{f}.container_path"))?;
        let host_path =
            super::spec_mounts::clean_absolute(&d.host_path, &format!("{f}.host_path"))?;
        let access = check_permissions(&d.permissions, format!("{f}.permissions"))?;
        let found = lookup
            .lookup(&host_path)
            .map_err(|source| SpecError::Device {
                field: format!("{f}.host_path"),
                path: host_path.clone(),
                source,
            })?;
        for h in found {
            let target = match h.path.strip_prefix(&host_path) {
                Ok(rel) if !rel.as_os_str().is_empty() => container_path.join(rel),
                _ => container_path.clone(),
            };
            rules.push(rule(
                true,
                Some(typ(h.kind)),
                Some(h.major),
                Some(h.minor),
                &access,
            ));
            devs.push(device(target, &h));
        }
    }
    Ok((devs, rules))
}

/// All host devices at their own paths, for privileged containers (`WithHostDevices`).
pub(crate) fn privileged_devices(lookup: &dyn DeviceLookup) -> Result<Vec<LinuxDevice>, SpecError> {
    let found = lookup.host_devices().map_err(|source| SpecError::Device {
        field: "config.linux.security_context.privileged".into(),
        path: PathBuf::from("/dev"),
        source,
    })?;
    Ok(found.iter().map(|h| device(h.path.clone(), h)).collect())
}

/// Adds `extra` to `base`, a later device replacing an earlier one at the same path.
pub(crate) fn merge_devices(base: Vec<LinuxDevice>, extra: Vec<LinuxDevice>) -> Vec<LinuxDevice> {
    let mut out: Vec<LinuxDevice> = Vec::with_capacity(base.len() + extra.len());
    for d in base.into_iter().chain(extra) {
        match out.iter_mut().find(|o| o.path() == d.path()) {
            Some(o) => *o = d,
            None => out.push(d),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fake host: /dev/fuse (10:229), /dev/dri/{card0 226:0, renderD128 226:128}.
    pub(crate) struct FakeDevices;

    fn hd(path: &str, major: i64, minor: i64) -> HostDevice {
        HostDevice {
            path: PathBuf::from(path),
            kind: HostDeviceKind::Char,
            major,
            minor,
            file_mode: 0o660,
            uid: 0,
            gid: 44,
        }
    }

    impl DeviceLookup for FakeDevices {
        fn lookup(&self, path: &Path) -> io::Result<Vec<HostDevice>> {
            match path.to_str().unwrap() {
                "/dev/fuse" => Ok(vec![hd("/dev/fuse", 10, 229)]),
                "/dev/dri" => Ok(vec![
                    hd("/dev/dri/card0", 226, 0),
                    hd("/dev/dri/renderD128", 226, 128),
                ]),
                "/etc/passwd" => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a device node",
                )),
                _ => Err(io::Error::from(io::ErrorKind::NotFound)),
            }
        }
        fn host_devices(&self) -> io::Result<Vec<HostDevice>> {
            Ok(vec![
                hd("/dev/null", 1, 3),
                hd("/dev/fuse", 10, 229),
                hd("/dev/sda", 8, 0),
            ])
        }
    }

    fn dev(container: &str, host: &str, perms: &str) -> DeviceSpec {
        DeviceSpec {
            container_path: container.into(),
            host_path: host.into(),
            permissions: perms.into(),
        }
    }

    #[test]
    fn cri_device_table() {
        let (devs, rules) = cri_devices(
            &[
                dev("/dev/fuse", "/dev/fuse", "rw"),
                dev("/dev/gpu", "/dev/dri", ""),
            ],
            &FakeDevices,
        )
        .unwrap();
        let paths: Vec<_> = devs
            .iter()
            .map(|d| d.path().to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            paths,
            ["/dev/fuse", "/dev/gpu/card0", "/dev/gpu/renderD128"]
        );
        assert_eq!(
            (devs[0].major(), devs[0].minor(), devs[0].gid()),
            (10, 229, Some(44))
        );
        assert_eq!(devs[0].typ(), LinuxDeviceType::C);
        let r: Vec<_> = rules
            .iter()
            .map(|r| (r.allow(), r.major(), r.minor(), r.access().clone().unwrap()))
            .collect();
        assert_eq!(
            r,
            [
                (true, Some(10), Some(229), "rw".to_string()),
                (true, Some(226), Some(0), "rwm".to_string()),
                (true, Some(226), Some(128), "rwm".to_string())
            ]
        );
    }

    #[test]
    fn cri_device_errors() {
        let cases = [
            (
                dev("dev/fuse", "/dev/fuse", ""),
                "config.devices[0].container_path",
            ),
            (dev("/dev/fuse", "fuse", ""), "config.devices[0].host_path"),
            (
                dev("/dev/fuse", "/dev/fuse", "rwx"),
                "config.devices[0].permissions",
            ),
            (
                dev("/dev/fuse", "/dev/fuse", "rr"),
                "config.devices[0].permissions",
            ),
            (
                dev("/dev/nope", "/dev/nope", ""),
                "config.devices[0].host_path",
            ),
            (dev("/dev/pw", "/etc/passwd", ""), "not a device node"),
        ];
        for (d, want) in cases {
            let err = cri_devices(std::slice::from_ref(&d), &FakeDevices).unwrap_err();
            assert!(err.to_string().contains(want), "{d:?}: {err}");
        }
    }

    #[test]
    fn default_rules_deny_first_then_allow_basics() {
        let rules = default_cgroup_rules();
        assert!(
            !rules[0].allow()
                && rules[0].typ().is_none()
                && rules[0].access().as_deref() == Some("rwm")
        );
        for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2)] {
            assert!(
                rules
                    .iter()
                    .any(|r| r.allow() && r.major() == Some(major) && r.minor() == Some(minor)),
                "{major}:{minor} allowed"
            );
        }
        assert!(
            !rules
                .iter()
                .any(|r| r.allow() && r.major() == Some(10) && r.minor() == Some(200)),
            "no tun by default"
        );
    }

    #[test]
    fn merge_replaces_same_path() {
        let merged = merge_devices(default_devices(), privileged_devices(&FakeDevices).unwrap());
        assert_eq!(
            merged.len(),
            8,
            "6 defaults + fuse + sda, /dev/null replaced"
        );
        let null = merged
            .iter()
            .find(|d| d.path() == Path::new("/dev/null"))
            .unwrap();
        assert_eq!(null.gid(), Some(44), "host's /dev/null wins");
    }

    #[test]
    fn real_lookup_finds_dev_null() {
        let found = HostDevices::default()
            .lookup(Path::new("/dev/null"))
            .unwrap();
        assert_eq!(
            (found[0].kind, found[0].major, found[0].minor),
            (HostDeviceKind::Char, 1, 3)
        );
        let err = HostDevices::default()
            .lookup(Path::new("/etc/hostname"))
            .unwrap_err();
        assert!(matches!(
            err.kind(),
            io::ErrorKind::InvalidInput | io::ErrorKind::NotFound
        ));
    }
}
