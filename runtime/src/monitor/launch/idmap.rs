//! Pod user namespaces in the launchers: idmapped image layers, the host ids a
//! container's ids are, and joining the namespace.
//!
//! The built-in launcher joins the pod's user namespace *last*, after its mounts,
//! sysctls and rlimits and right before it drops to the container's identity (runc
//! joins it first). Everything before runs as host root: it is what may idmap the
//! image layers (CAP_SYS_ADMIN over their filesystem, i.e. in the host's user
//! namespace), mount proc/sysfs/mqueue for namespaces the pod's user namespace owns,
//! and raise rlimits. The container's mount and (own) PID namespaces are then owned
//! by the host's user namespace, so its root cannot mount anything, which is stricter
//! than runc; its net/IPC/UTS namespaces are the pod's, owned by the pod's user
//! namespace.

use std::{
    fs::{self, File},
    os::{
        fd::{AsFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
};

use nix::{
    fcntl::OFlag,
    mount::{MntFlags, umount2},
    sched::{CloneFlags, setns},
    sys::stat::Mode,
};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use super::mount_at;

/// Idmapped binds of an image's layers, attached under `dir` as `0`, `1`, ...
pub(in crate::monitor) struct IdmappedLayers {
    pub dir: PathBuf,
    pub names: Vec<String>,
}

impl IdmappedLayers {
    /// Detaches the binds and removes their directory (the overlay mounted from them
    /// holds its own clones). Best effort: a leftover is an empty directory in the
    /// container's own directory, removed with it.
    pub fn detach(self) {
        for name in &self.names {
            let _ = umount2(&self.dir.join(name), MntFlags::MNT_DETACH);
            let _ = fs::remove_dir(self.dir.join(name));
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Attaches an idmapped bind (with the user namespace pinned at `userns`) of each of
/// `layers_root/<lower>` at `dir/<index>`, in the caller's mount namespace.
pub(in crate::monitor) fn idmapped_layers(
    userns: &Path,
    layers_root: &Path,
    lower: &[String],
    dir: &Path,
) -> Result<IdmappedLayers, String> {
    let ns = File::open(userns).map_err(|e| format!("open {}: {e}", userns.display()))?;
    let ns = OwnedFd::from(ns);
    fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let mut done = IdmappedLayers {
        dir: dir.to_path_buf(),
        names: Vec::new(),
    };
    for (i, layer) in lower.iter().enumerate() {
        let name = i.to_string();
        let result = (|| {
            let source = layers_root.join(layer);
            let tree = mount_at::open_tree_clone(&source, false)
                .map_err(|e| format!("clone mount of layer {}: {e}", source.display()))?;
            mount_at::set_idmap_fd(&tree, &ns, false)
                .map_err(|e| format!("idmap layer {}: {e}", source.display()))?;
            let target = dir.join(&name);
            fs::create_dir_all(&target).map_err(|e| format!("create {}: {e}", target.display()))?;
            let target_fd = nix::fcntl::open(
                &target,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| format!("open {}: {e}", target.display()))?;
            mount_at::move_mount_to(&tree, &target_fd)
                .map_err(|e| format!("attach idmapped layer at {}: {e}", target.display()))
        })();
        if let Err(e) = result {
            done.detach();
            return Err(e);
        }
        done.names.push(name);
    }
    Ok(done)
}

/// The user namespace the spec names by path, if any.
pub(in crate::monitor) fn userns_of(spec: &Spec) -> Option<PathBuf> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::User)
        .and_then(|n| n.path().clone())
}

/// The host id the container's `id` is under `maps` (no maps: the same id).
pub(in crate::monitor) fn host_id(maps: Option<&Vec<LinuxIdMapping>>, id: u32) -> u32 {
    let Some(maps) = maps else { return id };
    maps.iter()
        .find_map(|m| {
            let offset = id.checked_sub(m.container_id())?;
            (offset < m.size()).then(|| m.host_id() + offset)
        })
        .unwrap_or(id)
}

/// Joins the user namespace `ns` (opened while its path was reachable) unless we are
/// already in it: setns(2) refuses re-entering one's own user namespace.
pub(in crate::monitor) fn join_userns(ns: &File) -> Result<(), String> {
    let own = fs::metadata("/proc/self/ns/user").map_err(|e| format!("stat own userns: {e}"))?;
    let target = ns.metadata().map_err(|e| format!("stat pod userns: {e}"))?;
    if (own.dev(), own.ino()) == (target.dev(), target.ino()) {
        return Ok(());
    }
    setns(ns.as_fd(), CloneFlags::CLONE_NEWUSER)
        .map_err(|e| format!("join the pod user namespace: {e}"))
}
