//! The content-addressed image store under `<root>/image/`.
//!
//! ```text
//! <root>/image/          0700: layers keep setuid binaries and device nodes as shipped
//!   blobs/sha256/<hex>   manifests, indexes and configs, by digest
//!   layers/<hex>         one unpacked layer per chain ID, shared by every image using it
//!   tmp/                 work in progress; anything here at start-up is a crash leftover
//! ```
//! An image removed while a container uses it stays as a hidden record (found by no
//! lookup) until its last container is gone; see [`ImageStore::remove`].
//! Image records (kind `image`, id = config digest hex) live in the daemon's record
//! store and are written only once every layer and blob they name is complete, so an
//! image is visible exactly when it is usable. At start-up [`ImageStore::open`] deletes
//! `tmp/` and every layer or blob no record names: an interrupted pull leaves nothing.
//!
//! Compressed layer blobs are not kept: layers are unpacked while they stream, and
//! keeping a second copy would double the disk writes of every pull for nothing the
//! CRI asks for.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    io::ErrorKind,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use crust_state::{Record, Store, write_atomic};
use serde::{Deserialize, Serialize};

use crate::{ImageError, Reference, oci::ConfigFile, registries::Registries, registry::Client};

/// Settings the daemon passes in from `[image]`.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `<root>/image`.
    pub root: PathBuf,
    pub progress_timeout: Duration,
    pub max_concurrent_downloads: usize,
    /// Bound on the bytes one layer unpacks to (decompressed stream and file data).
    pub max_layer_unpacked_bytes: u64,
    /// Exact image names reported as pinned (never garbage collected by kubelet).
    pub pinned_images: Vec<String>,
    pub registries: Registries,
}

/// One layer of an image, bottom first in [`ImageRecord::layers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Compressed digest, as in the manifest.
    pub digest: String,
    pub diff_id: String,
    pub chain_id: String,
    /// Compressed size from the manifest.
    pub size: u64,
}

/// What the runtime needs from the image config to build a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    /// `user`, `uid`, `user:group` or `uid:gid`, as the image says.
    pub user: String,
    pub volumes: Vec<String>,
    pub stop_signal: String,
    pub labels: BTreeMap<String, String>,
    pub exposed_ports: Vec<String>,
    pub os: String,
    pub architecture: String,
    pub created: Option<String>,
}

impl ImageConfig {
    pub(crate) fn from_file(file: &ConfigFile) -> ImageConfig {
        let c = file.config.clone().unwrap_or_default();
        ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
            volumes: c.volumes.unwrap_or_default().into_keys().collect(),
            stop_signal: c.stop_signal.unwrap_or_default(),
            labels: c.labels.unwrap_or_default(),
            exposed_ports: c.exposed_ports.unwrap_or_default().into_keys().collect(),
            os: file.os.clone(),
            architecture: file.architecture.clone(),
            created: file.created.clone(),
        }
    }

    /// CRI `Image.uid` / `Image.username`: the user part of `user[:group]`, numeric
    /// or a name (kubelet checks `runAsNonRoot` with it).
    pub fn uid_or_username(&self) -> (Option<i64>, String) {
        let user = self.user.split(':').next().unwrap_or("");
        match user.parse::<i64>() {
            Ok(uid) => (Some(uid), String::new()),
            Err(_) => (None, user.to_string()),
        }
    }
}

/// A complete image, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest, `sha256:<hex>`.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Sum of the compressed layer sizes and the config size.
    pub size: u64,
    pub layers: Vec<LayerInfo>,
    /// The manifest (or index) digests this image was pulled by.
    pub manifest_digests: Vec<String>,
    pub config: ImageConfig,
    pub annotations: BTreeMap<String, String>,
    /// Removed by `RemoveImage` while a container used it. As containerd (whose
    /// containers keep their image's snapshots leased), the image is gone for the CRI:
    /// no lookup finds it. Its layers and blobs stay until no container uses it
    /// ([`ImageStore::prune_unused`]); pulling it again brings it back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
}

impl Record for ImageRecord {
    const KIND: &'static str = "image";
    const VERSION: u32 = 1;
    fn id(&self) -> &str {
        digest_hex(&self.id)
    }
}

/// An image as the CRI shows it: the record plus what depends on configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageView {
    pub record: ImageRecord,
    pub pinned: bool,
}

/// What the runtime mounts: the layer directories, top-most first (overlay's
/// `lowerdir` order), and the config.
///
/// Mount data is limited to one page (4 KiB). Mounting from `layers_root` as the
/// working directory with [`RuntimeImage::lower_names`] costs 65 bytes per layer (about
/// 60 layers); for more, make short symlinks (`0`, `1`, …) to `lower_dirs` in a
/// per-container directory and mount relative to that (overlayfs follows them).
#[derive(Debug, Clone)]
pub struct RuntimeImage {
    pub id: String,
    /// Absolute layer directories, top-most first.
    pub lower_dirs: Vec<PathBuf>,
    /// The directory the layer directories live in.
    pub layers_root: PathBuf,
    /// Layer directory names relative to `layers_root`, top-most first.
    pub lower_names: Vec<String>,
    pub config: ImageConfig,
}

/// Used bytes and inodes of the store, for `ImageFsInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub used_bytes: u64,
    pub inodes_used: u64,
}

pub(crate) fn digest_hex(digest: &str) -> &str {
    digest.split_once(':').map_or(digest, |(_, hex)| hex)
}

#[derive(Default)]
pub(crate) struct Index {
    pub(crate) images: BTreeMap<String, ImageRecord>,
    /// Chain IDs a pull in progress needs; removal must not delete them.
    pub(crate) inflight: HashMap<String, usize>,
    /// Blob digests (manifests, config) a pull in progress is about to publish.
    pub(crate) inflight_blobs: HashMap<String, usize>,
    /// Image ids a `CreateContainer` resolved and has not yet recorded its container
    /// for: removal treats them as in use (see [`ImageLease`]).
    pub(crate) leases: HashMap<String, usize>,
}

impl Index {
    /// Whether `id` is pinned by a container being created.
    pub(crate) fn leased(&self, id: &str) -> bool {
        self.leases.contains_key(id)
    }
}

/// Keeps an image from being deleted between `CreateContainer` resolving it and the
/// container record that pins it being written: drop it after that. Without it a
/// `RemoveImage` in that gap sees no container and deletes the layers the new
/// container is about to mount.
pub struct ImageLease {
    store: Arc<ImageStore>,
    id: String,
}

impl Drop for ImageLease {
    fn drop(&mut self) {
        let mut index = self.store.index.lock().expect("image index lock poisoned");
        if let Some(n) = index.leases.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                index.leases.remove(&self.id);
            }
        }
    }
}

/// A chain ID being fetched: the lock its fetcher holds and the progress every pull
/// that needs it reads.
#[derive(Default)]
pub(crate) struct LayerSlot {
    pub(crate) lock: tokio::sync::Mutex<()>,
    pub(crate) tracker: Arc<crate::progress::LayerTracker>,
}

/// The image store. Cheap to share behind an `Arc`; every method is safe to call
/// concurrently.
pub struct ImageStore {
    pub(crate) root: PathBuf,
    pub(crate) records: Store,
    pub(crate) index: Mutex<Index>,
    /// One slot per chain ID being fetched: concurrent pulls of images sharing a layer
    /// wait for the first download instead of starting their own, and watch its
    /// progress meanwhile.
    pub(crate) layer_locks: Mutex<HashMap<String, Arc<LayerSlot>>>,
    pub(crate) downloads: Arc<tokio::sync::Semaphore>,
    pub(crate) client: Client,
    pub(crate) options: StoreOptions,
}

impl ImageStore {
    /// Opens the store, loads image records and removes crash leftovers: `tmp/`, and
    /// layers and blobs no record names. Blocking (walks the store); call it at start.
    /// Returns the store and the records that could not be loaded (quarantined).
    pub fn open(
        options: StoreOptions,
        records: Store,
    ) -> Result<(ImageStore, Vec<crust_state::Quarantined>), ImageError> {
        let root = options.root.clone();
        for dir in [
            root.join("blobs/sha256"),
            root.join("layers"),
            root.join("tmp"),
        ] {
            fs::create_dir_all(&dir).map_err(ImageError::io("create", &dir))?;
        }
        // Layers keep their setuid-root binaries and device nodes as the image made
        // them, and `tmp/` holds layers being unpacked: reachable by a local user,
        // those are a root shell and raw disks for them (CVE-2021-41091). containerd
        // keeps its snapshots under a 0700 dir; so does crust, whatever the umask and
        // whatever an older crustd left (the mode is set, not only requested).
        for dir in [
            root.clone(),
            root.join("blobs"),
            root.join("blobs/sha256"),
            root.join("layers"),
            root.join("tmp"),
        ] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(ImageError::io("set mode of", &dir))?;
        }
        let tmp = root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(ImageError::io("read", &tmp))? {
            let path = entry.map_err(ImageError::io("read", &tmp))?.path();
            tracing::info!(path = %path.display(), "removing leftover of an interrupted pull");
            remove_any(&path)?;
        }
        let loaded = records.load_all::<ImageRecord>()?;
        let mut images = BTreeMap::new();
        for record in loaded.records {
            images.insert(record.id.clone(), record);
        }
        let store = ImageStore {
            root,
            records,
            index: Mutex::new(Index {
                images,
                ..Index::default()
            }),
            layer_locks: Mutex::new(HashMap::new()),
            downloads: Arc::new(tokio::sync::Semaphore::new(
                options.max_concurrent_downloads.max(1),
            )),
            client: Client::new(options.progress_timeout),
            options,
        };
        // Records whose layers vanished are unusable: drop them rather than hand a
        // broken rootfs to the runtime.
        let broken: Vec<ImageRecord> = {
            let index = store.index.lock().expect("image index lock poisoned");
            index
                .images
                .values()
                .filter(|r| {
                    r.layers
                        .iter()
                        .any(|l| !store.layer_dir(&l.chain_id).is_dir())
                })
                .cloned()
                .collect()
        };
        for record in broken {
            tracing::error!(image_id = %record.id, "image has missing layers; forgetting it");
            store.records.remove::<ImageRecord>(record.id())?;
            store
                .index
                .lock()
                .expect("image index lock poisoned")
                .images
                .remove(&record.id);
        }
        store.collect_garbage()?;
        Ok((store, loaded.quarantined))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn layer_dir(&self, chain_id: &str) -> PathBuf {
        self.root.join("layers").join(digest_hex(chain_id))
    }

    pub(crate) fn blob_path(&self, digest: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(digest_hex(digest))
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Writes a small blob (manifest, config) durably; idempotent.
    pub(crate) fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let dir = self.root.join("blobs/sha256");
        let name = digest_hex(digest);
        if dir.join(name).exists() {
            return Ok(());
        }
        write_atomic(&dir, name, bytes).map_err(ImageError::io("write blob", dir.join(name)))
    }

    fn view(&self, record: &ImageRecord) -> ImageView {
        let pinned = record
            .repo_tags
            .iter()
            .chain(&record.repo_digests)
            .any(|name| {
                self.options
                    .pinned_images
                    .iter()
                    .any(|p| p == name || Reference::parse(p).is_ok_and(|r| &r.to_string() == name))
            });
        ImageView {
            record: record.clone(),
            pinned,
        }
    }

    /// Finds an image by id (`sha256:<hex>` or `<hex>`), repo tag or repo digest, in
    /// any spelling that normalises to it (`busybox` finds
    /// `docker.io/library/busybox:latest`).
    ///
    /// An image is present only with its record and every layer directory: a record
    /// whose layers are gone is reported absent, so kubelet pulls it again (which
    /// fetches the missing layers) instead of failing `CreateContainer` forever.
    pub fn find(&self, query: &str) -> Result<Option<ImageView>, ImageError> {
        let index = self.index.lock().expect("image index lock poisoned");
        Ok(find_in(&index, query)?
            .map(|(id, _)| &index.images[&id])
            .filter(|r| self.layers_present(r))
            .map(|r| self.view(r)))
    }

    /// Every image, sorted by id.
    pub fn list(&self) -> Vec<ImageView> {
        let index = self.index.lock().expect("image index lock poisoned");
        index
            .images
            .values()
            .filter(|r| !r.removed && self.layers_present(r))
            .map(|r| self.view(r))
            .collect()
    }

    /// Whether every layer directory of `record` exists (a stat per layer).
    fn layers_present(&self, record: &ImageRecord) -> bool {
        record
            .layers
            .iter()
            .all(|l| self.layer_dir(&l.chain_id).is_dir())
    }

    /// The raw image config JSON, for `ImageStatus` verbose info.
    pub fn config_json(&self, id: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(id);
        fs::read(&path).map_err(ImageError::io("read config", path))
    }

    /// The layer directories and config the runtime needs to start a container, and
    /// a lease that keeps them until the container's record pins the image (drop it
    /// once the container is recorded, or its creation failed).
    pub fn runtime_image(
        self: &Arc<Self>,
        query: &str,
    ) -> Result<(RuntimeImage, ImageLease), ImageError> {
        let (record, lease) = {
            let mut index = self.index.lock().expect("image index lock poisoned");
            let record = find_in(&index, query)?
                .map(|(id, _)| index.images[&id].clone())
                .filter(|r| self.layers_present(r))
                .ok_or_else(|| ImageError::NotFound {
                    image: query.to_string(),
                    detail: None,
                })?;
            // Taken under the index lock: a removal either ran before (and the image
            // is not found) or sees the lease.
            *index.leases.entry(record.id.clone()).or_default() += 1;
            let lease = ImageLease {
                store: self.clone(),
                id: record.id.clone(),
            };
            (record, lease)
        };
        let lower_names: Vec<String> = record
            .layers
            .iter()
            .rev()
            .map(|l| digest_hex(&l.chain_id).to_string())
            .collect();
        let image = RuntimeImage {
            id: record.id.clone(),
            lower_dirs: record
                .layers
                .iter()
                .rev()
                .map(|l| self.layer_dir(&l.chain_id))
                .collect(),
            layers_root: self.root.join("layers"),
            lower_names,
            config: record.config,
        };
        Ok((image, lease))
    }

    /// Bytes and inodes the store uses (hard links counted once). Blocking: walks the
    /// store.
    pub fn usage(&self) -> Result<FsUsage, ImageError> {
        let mut seen = HashSet::new();
        let mut usage = FsUsage {
            used_bytes: 0,
            inodes_used: 0,
        };
        let mut stack = vec![self.root.clone()];
        while let Some(path) = stack.pop() {
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                // Removed while we walk (a concurrent RemoveImage): not used any more.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(ImageError::io("stat", &path)(e)),
            };
            if seen.insert((meta.dev(), meta.ino())) {
                usage.used_bytes += meta.blocks() * 512;
                usage.inodes_used += 1;
            }
            if meta.is_dir() {
                match fs::read_dir(&path) {
                    Ok(entries) => stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path()))),
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(ImageError::io("read", &path)(e)),
                }
            }
        }
        Ok(usage)
    }

    /// Deletes every layer and blob that no image record names and no pull in progress
    /// needs. Deletion moves each into `tmp/` first, so a crash halfway leaves only
    /// `tmp/` content, which the next start removes.
    ///
    /// The decision and the move happen under the index lock, the lock a pull takes to
    /// claim its layers and blobs and to publish its record: a pull claims a layer
    /// either before (and the layer is kept) or after it was moved away (and the pull
    /// sees it missing and fetches it again). Deciding from a snapshot and deleting
    /// later let a concurrent PullImage publish an image whose layers were then deleted
    /// (issue 13, item 12). Only the slow recursive delete runs outside the lock.
    pub(crate) fn collect_garbage(&self) -> Result<(), ImageError> {
        let doomed = {
            let index = self.index.lock().expect("image index lock poisoned");
            let layers: HashSet<&str> = index
                .images
                .values()
                .flat_map(|r| r.layers.iter().map(|l| digest_hex(&l.chain_id)))
                .chain(index.inflight.keys().map(|c| digest_hex(c)))
                .collect();
            let blobs: HashSet<&str> = index
                .images
                .values()
                .flat_map(|r| std::iter::once(&r.id).chain(&r.manifest_digests))
                .chain(index.inflight_blobs.keys())
                .map(|d| digest_hex(d))
                .collect();
            let mut doomed = Vec::new();
            let layers_dir = self.root.join("layers");
            for entry in fs::read_dir(&layers_dir).map_err(ImageError::io("read", &layers_dir))? {
                let entry = entry.map_err(ImageError::io("read", &layers_dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !layers.contains(name.as_str()) {
                    tracing::info!(layer = %name, "removing unused layer");
                    let to = self.tmp_dir().join(format!("rm-{name}-{}", unique()));
                    fs::rename(entry.path(), &to)
                        .map_err(ImageError::io("move unused layer", entry.path()))?;
                    doomed.push(to);
                }
            }
            let blobs_dir = self.root.join("blobs/sha256");
            for entry in fs::read_dir(&blobs_dir).map_err(ImageError::io("read", &blobs_dir))? {
                let entry = entry.map_err(ImageError::io("read", &blobs_dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // `write_atomic`'s temp files (`.tmp-<hex>-…`) belong to their blob: a
                // pull writing one keeps it, a crash's leftover goes.
                let blob = name
                    .strip_prefix(".tmp-")
                    .map_or(name.as_str(), |rest| rest.split('-').next().unwrap_or(""));
                if !blobs.contains(blob) {
                    tracing::debug!(blob = %name, "removing unused blob");
                    remove_any(&entry.path())?;
                }
            }
            doomed
        };
        for path in doomed {
            remove_any(&path)?;
        }
        Ok(())
    }
}

/// Looks `query` up; returns the image id and whether it matched by tag (the tag then
/// names what `RemoveImage` removes).
pub(crate) fn find_in(
    index: &Index,
    query: &str,
) -> Result<Option<(String, Option<String>)>, ImageError> {
    let query = query.trim();
    let id = if query.starts_with("sha256:") {
        Some(query.to_string())
    } else if query.len() == 64 && query.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some(format!("sha256:{query}"))
    } else {
        None
    };
    // Hidden (removed while in use) images are found by nothing.
    let visible = |r: &&ImageRecord| !r.removed;
    if let Some(id) = id {
        let found = index.images.get(&id).filter(visible).is_some();
        return Ok(found.then_some((id, None)));
    }
    let reference = Reference::parse(query)?;
    let found = match (reference.digest(), reference.repo_tag()) {
        (Some(digest), _) => {
            let want = reference.repo_digest(digest);
            index
                .images
                .values()
                .filter(visible)
                .find(|r| r.repo_digests.contains(&want))
                .map(|r| (r.id.clone(), None))
        }
        (None, Some(tag)) => index
            .images
            .values()
            .filter(visible)
            .find(|r| r.repo_tags.contains(&tag))
            .map(|r| (r.id.clone(), Some(tag))),
        (None, None) => None,
    };
    Ok(found)
}

pub(crate) fn remove_any(path: &Path) -> Result<(), ImageError> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(ImageError::io("remove", path)(e)),
        _ => Ok(()),
    }
}

/// A name no other temp entry of this process or an earlier one uses.
pub(crate) fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
