//! RemoveImage: untag, and delete the image with every layer and blob nothing else
//! uses once no tag is left. An image a container uses is hidden instead, and deleted
//! when its last container is removed.

use crate::{
    ImageError,
    store::{ImageRecord, ImageStore, find_in},
};

/// What a removal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// Nothing matched (CRI: removing a missing image succeeds).
    NotPresent,
    /// One tag was removed; the image stays (it has other tags).
    Untagged { id: String },
    /// The image is gone for the CRI, but a container uses it: its layers and blobs
    /// stay until [`ImageStore::prune_unused`] finds it unused.
    Hidden { id: String },
    /// The image record is gone and unused layers and blobs were deleted.
    Deleted { id: String },
}

impl ImageStore {
    /// Removes `query` (an id, repo tag or repo digest). By tag, only that tag goes
    /// unless it was the last one; by id or digest, every tag goes. When no tag is
    /// left the image is deleted, unless `in_use(id)` says a container still uses it
    /// (or a `CreateContainer` holds its lease): then, as containerd does, it is
    /// hidden (no lookup finds it) and its files stay until
    /// [`ImageStore::prune_unused`] runs after its last container is removed.
    /// `in_use` is called under the store's index lock and must read live state (not
    /// a list made before the call), so that a container recorded concurrently is seen.
    /// Idempotent. Blocking.
    ///
    /// ```text
    /// tagged --untag (tags left)--> tagged
    /// tagged --untag last / by id--> [in use? hidden : deleted]
    /// hidden --pull again--> tagged
    /// hidden --prune (not in use)--> deleted
    /// ```
    pub fn remove(
        &self,
        query: &str,
        in_use: &dyn Fn(&str) -> bool,
    ) -> Result<Removed, ImageError> {
        let outcome = {
            let mut index = self.index.lock().expect("image index lock poisoned");
            let Some((id, tag)) = find_in(&index, query)? else {
                return Ok(Removed::NotPresent);
            };
            let mut record: ImageRecord = index.images[&id].clone();
            match tag {
                Some(tag) if record.repo_tags.len() > 1 => {
                    record.repo_tags.retain(|t| *t != tag);
                    self.records.put(&record)?;
                    index.images.insert(id.clone(), record);
                    return Ok(Removed::Untagged { id });
                }
                _ => {}
            }
            if index.leased(&id) || in_use(&id) {
                record.repo_tags.clear();
                record.removed = true;
                self.records.put(&record)?;
                index.images.insert(id.clone(), record);
                Removed::Hidden { id }
            } else {
                // Forget the record first: once it is gone from disk the image no
                // longer exists, and its files are ordinary garbage.
                self.records
                    .remove::<ImageRecord>(crust_state::Record::id(&record))?;
                index.images.remove(&id);
                Removed::Deleted { id }
            }
        };
        if matches!(outcome, Removed::Deleted { .. }) {
            self.collect_garbage()?;
        }
        Ok(outcome)
    }

    /// Deletes hidden images (removed while in use) that `in_use` says no container
    /// uses any more, then their unused layers and blobs. Returns the ids deleted.
    /// Cheap when no image is hidden. Blocking.
    pub fn prune_unused(&self, in_use: &dyn Fn(&str) -> bool) -> Result<Vec<String>, ImageError> {
        let mut deleted = Vec::new();
        {
            let mut index = self.index.lock().expect("image index lock poisoned");
            let doomed: Vec<ImageRecord> = index
                .images
                .values()
                .filter(|r| r.removed && !index.leased(&r.id) && !in_use(&r.id))
                .cloned()
                .collect();
            for record in doomed {
                self.records
                    .remove::<ImageRecord>(crust_state::Record::id(&record))?;
                index.images.remove(&record.id);
                deleted.push(record.id);
            }
        }
        if !deleted.is_empty() {
            self.collect_garbage()?;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        Registries,
        store::{ImageConfig, LayerInfo, StoreOptions},
    };

    /// A store with one image (two tags, one layer, config blob) written by hand.
    fn store_with_image(dir: &std::path::Path) -> (ImageStore, ImageRecord) {
        let records =
            crust_state::Store::open(dir.join("records"), dir.join("quarantine")).unwrap();
        let options = StoreOptions {
            root: dir.join("image"),
            progress_timeout: Duration::from_secs(5),
            max_concurrent_downloads: 1,
            max_layer_unpacked_bytes: u64::MAX,
            pinned_images: vec!["docker.io/library/app:v2".into()],
            registries: Registries::default(),
        };
        let chain = format!("sha256:{}", "a".repeat(64));
        let id = format!("sha256:{}", "c".repeat(64));
        let record = ImageRecord {
            id: id.clone(),
            repo_tags: vec![
                "docker.io/library/app:v1".into(),
                "docker.io/library/app:v2".into(),
            ],
            repo_digests: vec![format!("docker.io/library/app@sha256:{}", "d".repeat(64))],
            size: 10,
            layers: vec![LayerInfo {
                digest: chain.clone(),
                diff_id: chain.clone(),
                chain_id: chain,
                size: 9,
            }],
            manifest_digests: vec![format!("sha256:{}", "d".repeat(64))],
            config: ImageConfig::default(),
            annotations: Default::default(),
            removed: false,
        };
        let layer = dir.join("image/layers").join("a".repeat(64));
        std::fs::create_dir_all(layer.join("bin")).unwrap();
        std::fs::create_dir_all(dir.join("image/blobs/sha256")).unwrap();
        std::fs::write(dir.join("image/blobs/sha256").join("c".repeat(64)), b"{}").unwrap();
        std::fs::write(dir.join("image/blobs/sha256").join("d".repeat(64)), b"{}").unwrap();
        records.put(&record).unwrap();
        let (store, quarantined) = ImageStore::open(options, records).unwrap();
        assert!(quarantined.is_empty());
        (store, record)
    }

    #[test]
    fn open_removes_crash_leftovers_and_keeps_complete_images() {
        let dir = tempfile::tempdir().unwrap();
        drop(store_with_image(dir.path()));
        let image = dir.path().join("image");
        // Leftovers of an interrupted pull: a half-unpacked layer, a finished layer and
        // a manifest no record names.
        std::fs::create_dir_all(image.join("tmp/abc-1/etc")).unwrap();
        std::fs::create_dir_all(image.join("layers").join("b".repeat(64))).unwrap();
        std::fs::write(image.join("blobs/sha256").join("e".repeat(64)), b"{}").unwrap();
        let (store, record) = store_with_image(dir.path());
        let names = |sub: &str| {
            let mut v: Vec<String> = std::fs::read_dir(image.join(sub))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert!(names("tmp").is_empty(), "tmp is emptied");
        assert_eq!(
            names("layers"),
            vec!["a".repeat(64)],
            "unreferenced layer removed, referenced kept"
        );
        assert_eq!(
            names("blobs/sha256"),
            vec!["c".repeat(64), "d".repeat(64)],
            "unreferenced blob removed"
        );
        assert_eq!(store.list().len(), 1);
        assert_eq!(
            store.find("app:v1").unwrap().unwrap().record,
            record,
            "short names normalise"
        );
        assert!(store.find("app:v2").unwrap().unwrap().pinned);
        assert!(
            store.find(&"c".repeat(64)).unwrap().is_some(),
            "bare hex id"
        );
        assert!(
            store
                .find(&format!("app@sha256:{}", "d".repeat(64)))
                .unwrap()
                .is_some(),
            "repo digest"
        );
        assert!(store.find("app:v3").unwrap().is_none());
        assert!(matches!(
            store.find("Bad"),
            Err(ImageError::InvalidReference(_))
        ));
        let (rt, _lease) = std::sync::Arc::new(store).runtime_image("app:v1").unwrap();
        assert_eq!(
            rt.lower_dirs,
            vec![image.join("layers").join("a".repeat(64))]
        );
        assert_eq!(rt.lower_names, vec!["a".repeat(64)]);
    }

    #[test]
    fn open_forgets_images_whose_layers_vanished() {
        let dir = tempfile::tempdir().unwrap();
        drop(store_with_image(dir.path()));
        let layer = dir.path().join("image/layers").join("a".repeat(64));
        let records =
            crust_state::Store::open(dir.path().join("records"), dir.path().join("quarantine"))
                .unwrap();
        std::fs::remove_dir_all(&layer).unwrap();
        let options = StoreOptions {
            root: dir.path().join("image"),
            progress_timeout: Duration::from_secs(5),
            max_concurrent_downloads: 1,
            max_layer_unpacked_bytes: u64::MAX,
            pinned_images: vec![],
            registries: Registries::default(),
        };
        let (store, _) = ImageStore::open(options, records.clone()).unwrap();
        assert!(
            store.list().is_empty(),
            "an image without its layers is not usable"
        );
        assert!(
            records
                .load_all::<ImageRecord>()
                .unwrap()
                .records
                .is_empty(),
            "and its record is gone"
        );
    }

    #[test]
    fn untag_in_use_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let (store, record) = store_with_image(dir.path());
        let layer = dir.path().join("image/layers").join("a".repeat(64));
        assert_eq!(
            store.remove("app:v1", &|_| false).unwrap(),
            Removed::Untagged {
                id: record.id.clone()
            }
        );
        assert_eq!(
            store.find(&record.id).unwrap().unwrap().record.repo_tags,
            vec!["docker.io/library/app:v2".to_string()]
        );
        // The last tag of an image a container uses: hidden, files kept.
        assert_eq!(
            store.remove("app:v2", &|_| true).unwrap(),
            Removed::Hidden {
                id: record.id.clone()
            }
        );
        for query in [record.id.as_str(), "app:v2"] {
            assert!(
                store.find(query).unwrap().is_none(),
                "a removed image is found by nothing ({query})"
            );
        }
        assert!(store.list().is_empty(), "nor listed");
        assert!(
            layer.is_dir(),
            "layers stay while a container uses the image"
        );
        assert_eq!(
            store.remove(&record.id, &|_| false).unwrap(),
            Removed::NotPresent,
            "removing it again is a no-op"
        );
        assert!(layer.is_dir(), "and keeps the layers");
        assert_eq!(store.prune_unused(&|_| true).unwrap(), Vec::<String>::new());
        assert_eq!(
            store.prune_unused(&|_| false).unwrap(),
            vec![record.id.clone()]
        );
        assert!(!layer.exists(), "pruned image's layer is deleted");
        assert_eq!(
            store.remove(&record.id, &|_| false).unwrap(),
            Removed::NotPresent,
            "idempotent"
        );
        // Survives reopening: the removal was persisted.
        let records =
            crust_state::Store::open(dir.path().join("records"), dir.path().join("quarantine"))
                .unwrap();
        assert!(
            records
                .load_all::<ImageRecord>()
                .unwrap()
                .records
                .is_empty()
        );
    }

    #[test]
    fn a_lease_keeps_the_image_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (store, record) = store_with_image(dir.path());
        let store = std::sync::Arc::new(store);
        let layer = dir.path().join("image/layers").join("a".repeat(64));
        let (_image, lease) = store.runtime_image("app:v1").unwrap();
        // CreateContainer resolved the image but has not recorded its container yet.
        assert_eq!(
            store.remove(&record.id, &|_| false).unwrap(),
            Removed::Hidden {
                id: record.id.clone()
            }
        );
        assert_eq!(
            store.prune_unused(&|_| false).unwrap(),
            Vec::<String>::new()
        );
        assert!(layer.is_dir(), "leased layers are kept");
        drop(lease);
        assert_eq!(
            store.prune_unused(&|_| false).unwrap(),
            vec![record.id.clone()]
        );
        assert!(!layer.exists());
    }

    #[test]
    fn open_makes_the_store_private_whatever_was_there() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        drop(store_with_image(dir.path()));
        let image = dir.path().join("image");
        // An older crustd's modes: traversable by every local user.
        for sub in ["", "layers", "tmp", "blobs", "blobs/sha256"] {
            std::fs::set_permissions(image.join(sub), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        drop(store_with_image(dir.path()));
        for sub in ["", "layers", "tmp", "blobs", "blobs/sha256"] {
            let mode = std::fs::metadata(image.join(sub))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o7777, 0o700, "image/{sub}");
        }
    }

    #[test]
    fn an_image_missing_a_layer_is_not_present() {
        let dir = tempfile::tempdir().unwrap();
        let (store, record) = store_with_image(dir.path());
        std::fs::remove_dir_all(dir.path().join("image/layers").join("a".repeat(64))).unwrap();
        assert!(store.find(&record.id).unwrap().is_none());
        assert!(store.list().is_empty());
    }

    #[test]
    fn remove_by_id_deletes_every_tag_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let (store, record) = store_with_image(dir.path());
        assert_eq!(
            store.remove(&record.id, &|_| false).unwrap(),
            Removed::Deleted {
                id: record.id.clone()
            }
        );
        assert!(store.list().is_empty());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("image/layers"))
            .unwrap()
            .collect();
        assert!(left.is_empty());
        let blobs: Vec<_> = std::fs::read_dir(dir.path().join("image/blobs/sha256"))
            .unwrap()
            .collect();
        assert!(blobs.is_empty());
    }
}
