//! The container's mounts: the runtime defaults (/proc, /dev, /sys, ...), the pod's
//! files and /dev/shm, image volumes and the CRI mounts, as containerd's `WithMounts`
//! builds them. Resolving host symlinks, creating missing host paths and setting the
//! source propagation are the launcher's work; this only describes.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Mount;

use super::{ContainerSpec, ImageConfigView, MountSpec, Propagation, SpecError, SpecInput};

/// Normalizes an absolute path lexically (`//a/./b/../c` is `/a/c`); relative paths are
/// an error naming `field`.
pub(crate) fn clean_absolute(path: &str, field: &str) -> Result<PathBuf, SpecError> {
    if !path.starts_with('/') {
        return Err(SpecError::invalid(
            field,
            format!("{path:?} is not an absolute path"),
        ));
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    m
}

fn bind(dest: PathBuf, source: PathBuf, options: Vec<String>) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest);
    m.set_typ(Some("bind".to_string()));
    m.set_source(Some(source));
    m.set_options(Some(options));
    m
}

/// containerd's default Unix mounts without /run (CRI drops it), plus the read-only
/// cgroupfs CRI adds; privileged containers get /sys and /sys/fs/cgroup read-write.
fn default_mounts(privileged: bool) -> Vec<Mount> {
    let sys_mode = if privileged { "rw" } else { "ro" };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        ),
    ]
}

/// A validated CRI mount.
struct Supplied {
    dest: PathBuf,
    source: PathBuf,
    options: Vec<String>,
    propagation: Propagation,
    idmap: Option<crate::sandbox::UserNamespace>,
}

fn supplied(i: usize, m: &MountSpec) -> Result<Supplied, SpecError> {
    let f = format!("config.mounts[{i}]");
    let dest = clean_absolute(&m.container_path, &format!("{f}.container_path"))?;
    let source = clean_absolute(&m.host_path, &format!("{f}.host_path"))?;
    let propagation = match m.propagation {
        Propagation::Private => "rprivate",
        Propagation::HostToContainer => "rslave",
        Propagation::Bidirectional => "rshared",
    };
    // CRI `Mount.recursive_read_only`: "requires readonly to be true and propagation to
    // be PROPAGATION_PRIVATE".
    let mode = if m.recursive_read_only {
        if !m.readonly {
            return Err(SpecError::invalid(
                format!("{f}.recursive_read_only"),
                "recursive read-only needs readonly to be set",
            ));
        }
        if m.propagation != Propagation::Private {
            return Err(SpecError::invalid(
                format!("{f}.recursive_read_only"),
                "recursive read-only needs private propagation",
            ));
        }
        "rro"
    } else if m.readonly {
        "ro"
    } else {
        "rw"
    };
    let mut options = vec!["rbind".to_string(), propagation.into(), mode.into()];
    if m.image.is_some() {
        // KEP-4639: an image volume is data, never a way to run or open devices.
        options.extend(["nosuid", "nodev", "noexec"].map(String::from));
    }
    Ok(Supplied {
        dest,
        source,
        options,
        propagation: m.propagation,
        idmap: m.idmap.clone(),
    })
}

/// The image `VOLUME`s that no CRI mount covers, each with the empty host directory
/// (under `volumes_root`) the caller must create before start: (container path, host
/// directory). Sorted and de-duplicated, so the directory names are stable.
///
/// ```
/// use crust_runtime::container::{image_volumes, ContainerSpec, ImageConfigView};
/// let image = ImageConfigView { volumes: vec!["/data".into()], ..Default::default() };
/// let v = image_volumes(&ContainerSpec::default(), &image, "/vol".as_ref()).unwrap();
/// assert_eq!(v, [("/data".into(), "/vol/0-data".into())]);
/// ```
pub fn image_volumes(
    container: &ContainerSpec,
    image: &ImageConfigView,
    volumes_root: &Path,
) -> Result<Vec<(PathBuf, PathBuf)>, SpecError> {
    let mut cri = Vec::new();
    for (i, m) in container.mounts.iter().enumerate() {
        cri.push(clean_absolute(
            &m.container_path,
            &format!("config.mounts[{i}].container_path"),
        )?);
    }
    let mut volumes = Vec::new();
    for v in &image.volumes {
        let dest = clean_absolute(v, "image.config.Volumes")?;
        if dest != Path::new("/") && !cri.contains(&dest) && !volumes.contains(&dest) {
            volumes.push(dest);
        }
    }
    volumes.sort();
    Ok(volumes
        .into_iter()
        .enumerate()
        .map(|(i, dest)| {
            let name: String = dest
                .to_string_lossy()
                .trim_start_matches('/')
                .replace('/', "_");
            let host = volumes_root.join(format!("{i}-{name}"));
            (dest, host)
        })
        .collect())
}

fn depth(p: &Path) -> usize {
    p.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

/// All mounts in mount order, and the rootfs propagation the CRI mounts need.
///
/// Order: a stable sort by path depth, so a parent is always mounted before anything
/// under it (containerd sorts only the CRI mounts; sorting all of them also keeps a CRI
/// `/sys` from hiding the default `/sys/fs/cgroup`).
pub(crate) fn mounts(
    input: &SpecInput,
    privileged: bool,
) -> Result<(Vec<Mount>, Option<String>), SpecError> {
    let c = &input.container;
    let mut cri = Vec::new();
    for (i, m) in c.mounts.iter().enumerate() {
        let s = supplied(i, m)?;
        if cri.iter().any(|o: &Supplied| o.dest == s.dest) {
            return Err(SpecError::invalid(
                format!("config.mounts[{i}].container_path"),
                format!("{} is mounted twice", s.dest.display()),
            ));
        }
        cri.push(s);
    }
    let covered = |dest: &Path| cri.iter().any(|s| s.dest == dest);

    // The pod's files and shm, then image volumes: each only where no CRI mount is.
    let mut extra: Vec<Mount> = Vec::new();
    let pod_mode = if c.security.readonly_rootfs {
        "ro"
    } else {
        "rw"
    };
    let pod_files = [
        ("/etc/hostname", &input.pod.hostname_file, pod_mode),
        ("/etc/hosts", &input.pod.hosts_file, pod_mode),
        ("/etc/resolv.conf", &input.pod.resolv_conf, pod_mode),
        ("/dev/shm", &input.pod.shm_dir, "rw"),
    ];
    for (dest, source, mode) in pod_files {
        if let Some(source) = source
            && !covered(Path::new(dest))
        {
            extra.push(bind(
                dest.into(),
                source.clone(),
                vec!["rbind".into(), "rprivate".into(), mode.into()],
            ));
        }
    }
    // nodev, as CRI-O mounts image volumes: the copy-up leaves device nodes out, and
    // nodev keeps any the container makes there (it has CAP_MKNOD) dead too, as on
    // its nodev rootfs (issue 13, item 4).
    for (dest, host) in image_volumes(c, &input.image, &input.volumes_root)? {
        extra.push(bind(
            dest,
            host,
            vec![
                "rbind".into(),
                "rprivate".into(),
                "nodev".into(),
                "rw".into(),
            ],
        ));
    }

    let replaced = |dest: &Path| covered(dest) || extra.iter().any(|m| m.destination() == dest);
    let dev_supplied = covered(Path::new("/dev"));
    let mut all: Vec<Mount> = default_mounts(privileged)
        .into_iter()
        .filter(|m| {
            !(replaced(m.destination()) || (dev_supplied && m.destination().starts_with("/dev/")))
        })
        .collect();
    all.extend(extra);
    let mut propagation: Option<&str> = None;
    for s in cri {
        match s.propagation {
            Propagation::Bidirectional => propagation = Some("rshared"),
            Propagation::HostToContainer if propagation.is_none() => propagation = Some("rslave"),
            _ => {}
        }
        let mut mount = bind(s.dest, s.source, s.options);
        // OCI runtime-spec 1.1 mount `uidMappings`/`gidMappings`: an idmapped bind.
        if let Some(u) = &s.idmap {
            mount.set_uid_mappings(Some(super::spec::id_mappings(&u.uids)));
            mount.set_gid_mappings(Some(super::spec::id_mappings(&u.gids)));
        }
        all.push(mount);
    }
    all.sort_by_key(|m| depth(m.destination()));
    Ok((all, propagation.map(str::to_string)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{PodContext, SecurityContextSpec};

    fn m(
        container: &str,
        host: &str,
        readonly: bool,
        propagation: Propagation,
        rro: bool,
    ) -> MountSpec {
        MountSpec {
            container_path: container.into(),
            host_path: host.into(),
            readonly,
            propagation,
            recursive_read_only: rro,
            image: None,
            idmap: None,
        }
    }

    fn input(mounts: Vec<MountSpec>) -> SpecInput {
        SpecInput {
            container: ContainerSpec {
                mounts,
                ..Default::default()
            },
            pod: PodContext {
                hosts_file: Some("/run/crust/pods/p/hosts".into()),
                hostname_file: Some("/run/crust/pods/p/hostname".into()),
                resolv_conf: Some("/run/crust/pods/p/resolv.conf".into()),
                shm_dir: Some("/run/crust/pods/p/shm".into()),
                ..Default::default()
            },
            volumes_root: "/var/lib/crust/containers/c/volumes".into(),
            ..Default::default()
        }
    }

    fn dests(ms: &[Mount]) -> Vec<String> {
        ms.iter()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .collect()
    }

    fn find<'a>(ms: &'a [Mount], dest: &str) -> &'a Mount {
        ms.iter()
            .find(|m| m.destination() == Path::new(dest))
            .unwrap_or_else(|| panic!("{dest} missing"))
    }

    fn opts(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap()
    }

    #[test]
    fn clean_absolute_table() {
        let cases = [
            ("/a/b", "/a/b"),
            ("//a/./b/", "/a/b"),
            ("/a/../b", "/b"),
            ("/../..", "/"),
            ("/", "/"),
        ];
        for (path, want) in cases {
            assert_eq!(
                clean_absolute(path, "f").unwrap(),
                PathBuf::from(want),
                "{path}"
            );
        }
        for bad in ["", "a/b", "./a"] {
            let err = clean_absolute(bad, "config.mounts[3].container_path").unwrap_err();
            assert!(
                err.to_string().contains("config.mounts[3].container_path"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn defaults_and_pod_files() {
        let (ms, prop) = mounts(&input(vec![]), false).unwrap();
        assert_eq!(
            dests(&ms),
            [
                "/proc",
                "/dev",
                "/sys",
                "/dev/pts",
                "/dev/mqueue",
                "/etc/hostname",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/dev/shm",
                "/sys/fs/cgroup"
            ]
        );
        assert_eq!(prop, None);
        let shm = find(&ms, "/dev/shm");
        assert_eq!(
            shm.typ().as_deref(),
            Some("bind"),
            "pod shm replaces the private tmpfs"
        );
        assert_eq!(
            shm.source().as_deref(),
            Some(Path::new("/run/crust/pods/p/shm"))
        );
        assert!(opts(find(&ms, "/sys")).contains(&"ro".to_string()));
        assert!(opts(find(&ms, "/sys/fs/cgroup")).contains(&"ro".to_string()));
        assert_eq!(opts(find(&ms, "/etc/hosts")), ["rbind", "rprivate", "rw"]);
    }

    #[test]
    fn no_pod_shm_keeps_private_tmpfs_and_readonly_rootfs_binds_ro() {
        let mut i = input(vec![]);
        i.pod.shm_dir = None;
        i.container.security = SecurityContextSpec {
            readonly_rootfs: true,
            ..Default::default()
        };
        let (ms, _) = mounts(&i, false).unwrap();
        assert_eq!(find(&ms, "/dev/shm").typ().as_deref(), Some("tmpfs"));
        assert_eq!(
            opts(find(&ms, "/etc/resolv.conf")),
            ["rbind", "rprivate", "ro"]
        );
    }

    #[test]
    fn privileged_sys_is_writable() {
        let (ms, _) = mounts(&input(vec![]), true).unwrap();
        for dest in ["/sys", "/sys/fs/cgroup"] {
            let o = opts(find(&ms, dest));
            assert!(
                o.contains(&"rw".to_string()) && !o.contains(&"ro".to_string()),
                "{dest}: {o:?}"
            );
        }
    }

    #[test]
    fn cri_mount_options_table() {
        use Propagation::*;
        let cases = [
            (
                m("/data", "/srv/data", false, Private, false),
                vec!["rbind", "rprivate", "rw"],
                None,
            ),
            (
                m("/data", "/srv/data", true, Private, false),
                vec!["rbind", "rprivate", "ro"],
                None,
            ),
            (
                m("/data", "/srv/data", true, Private, true),
                vec!["rbind", "rprivate", "rro"],
                None,
            ),
            (
                m("/data", "/srv/data", false, HostToContainer, false),
                vec!["rbind", "rslave", "rw"],
                Some("rslave"),
            ),
            (
                m("/data", "/srv/data", false, Bidirectional, false),
                vec!["rbind", "rshared", "rw"],
                Some("rshared"),
            ),
        ];
        for (spec, want, want_prop) in cases {
            let (ms, prop) = mounts(&input(vec![spec.clone()]), false).unwrap();
            let data = find(&ms, "/data");
            assert_eq!(opts(data), want, "{spec:?}");
            assert_eq!(data.source().as_deref(), Some(Path::new("/srv/data")));
            assert_eq!(prop.as_deref(), want_prop, "{spec:?}");
        }
        let (_, prop) = mounts(
            &input(vec![
                m("/a", "/a", false, Bidirectional, false),
                m("/b", "/b", false, HostToContainer, false),
            ]),
            false,
        )
        .unwrap();
        assert_eq!(prop.as_deref(), Some("rshared"), "rshared wins over rslave");
    }

    #[test]
    fn cri_mount_rejections() {
        use Propagation::*;
        let cases = [
            (
                m("data", "/srv", false, Private, false),
                "config.mounts[0].container_path",
            ),
            (
                m("/data", "srv", false, Private, false),
                "config.mounts[0].host_path",
            ),
            (
                m("/data", "/srv", false, Private, true),
                "config.mounts[0].recursive_read_only: recursive read-only needs readonly",
            ),
            (
                m("/data", "/srv", true, HostToContainer, true),
                "needs private propagation",
            ),
            (
                m("/data", "/srv", true, Bidirectional, true),
                "needs private propagation",
            ),
        ];
        for (spec, want) in cases {
            let err = mounts(&input(vec![spec.clone()]), false).unwrap_err();
            assert!(err.to_string().contains(want), "{spec:?}: {err}");
        }
        let twice = vec![
            m("/data", "/a", false, Private, false),
            m("/data/", "/b", false, Private, false),
        ];
        assert!(
            mounts(&input(twice), false)
                .unwrap_err()
                .to_string()
                .contains("config.mounts[1].container_path")
        );
    }

    #[test]
    fn ordering_puts_parents_first() {
        let (ms, _) = mounts(
            &input(vec![
                m("/data/sub/deeper", "/x", false, Propagation::Private, false),
                m("/data", "/y", false, Propagation::Private, false),
                m("/sys", "/host-sys", true, Propagation::Private, false),
                m("/data/sub", "/z", false, Propagation::Private, false),
            ]),
            false,
        )
        .unwrap();
        let d = dests(&ms);
        let pos = |p: &str| {
            d.iter()
                .position(|x| x == p)
                .unwrap_or_else(|| panic!("{p} missing in {d:?}"))
        };
        assert!(
            pos("/data") < pos("/data/sub") && pos("/data/sub") < pos("/data/sub/deeper"),
            "{d:?}"
        );
        assert!(pos("/sys") < pos("/sys/fs/cgroup"), "{d:?}");
        assert_eq!(
            find(&ms, "/sys").typ().as_deref(),
            Some("bind"),
            "CRI /sys replaces sysfs"
        );
        assert_eq!(d.iter().filter(|x| *x == "/sys").count(), 1);
    }

    #[test]
    fn cri_mounts_override_defaults_and_pod_files() {
        let (ms, _) = mounts(
            &input(vec![
                m("/etc/hosts", "/my/hosts", true, Propagation::Private, false),
                m("/dev", "/host-dev", false, Propagation::Private, false),
            ]),
            false,
        )
        .unwrap();
        let d = dests(&ms);
        assert_eq!(
            find(&ms, "/etc/hosts").source().as_deref(),
            Some(Path::new("/my/hosts"))
        );
        assert_eq!(d.iter().filter(|x| *x == "/etc/hosts").count(), 1);
        assert!(
            !d.iter().any(|x| x.starts_with("/dev/") && x != "/dev/shm"),
            "defaults under a CRI /dev dropped: {d:?}"
        );
    }

    #[test]
    fn image_volumes_table() {
        let mut i = input(vec![m(
            "/cache",
            "/srv/cache",
            false,
            Propagation::Private,
            false,
        )]);
        i.image.volumes = vec![
            "/var/lib/db".into(),
            "/cache".into(),
            "/data/".into(),
            "/data".into(),
            "rel".into(),
        ];
        let err = image_volumes(&i.container, &i.image, &i.volumes_root).unwrap_err();
        assert!(err.to_string().contains("image.config.Volumes"), "{err}");
        i.image.volumes.pop();
        let v = image_volumes(&i.container, &i.image, &i.volumes_root).unwrap();
        let root = &i.volumes_root;
        assert_eq!(
            v,
            [
                ("/data".into(), root.join("0-data")),
                ("/var/lib/db".into(), root.join("1-var_lib_db"))
            ]
        );
        let (ms, _) = mounts(&i, false).unwrap();
        let db = find(&ms, "/var/lib/db");
        assert_eq!(
            db.source().as_deref(),
            Some(root.join("1-var_lib_db").as_path())
        );
        assert_eq!(
            opts(db),
            ["rbind", "rprivate", "nodev", "rw"],
            "image volumes are nodev (issue 13, item 4)"
        );
        assert_eq!(
            find(&ms, "/cache").source().as_deref(),
            Some(Path::new("/srv/cache")),
            "CRI mount wins"
        );
    }
}
