//! PullImage: resolve the reference, fetch manifest and config, stream every missing
//! layer into its directory (bounded parallelism, shared with concurrent pulls), then
//! publish the image record.

use std::{path::PathBuf, sync::Arc};

use futures::future::try_join_all;

use crate::{
    ImageError, Reference,
    auth::Credentials,
    oci::{self, ConfigFile, ManifestKind, Platform},
    progress::{LayerPhase, LayerTracker, PullProgress},
    registry::{Session, SizeLimit},
    store::{ImageConfig, ImageRecord, ImageStore, LayerInfo, digest_hex, remove_any, unique},
    unpack::unpack_layer,
};

/// Chunks queued between the download and the unpacker: bounds memory per layer to a
/// few chunks regardless of layer size.
const CHUNK_QUEUE: usize = 16;

/// A pull's claim on its chain IDs and blobs: garbage collection keeps them until the
/// record naming them is published. Released on drop, also when the pull is cancelled.
struct InflightGuard<'a> {
    store: &'a ImageStore,
    chains: Vec<String>,
    blobs: Vec<String>,
}

impl<'a> InflightGuard<'a> {
    fn claim(store: &'a ImageStore, chains: Vec<String>, blobs: Vec<String>) -> Self {
        let mut index = store.index.lock().expect("image index lock poisoned");
        for chain in &chains {
            *index.inflight.entry(chain.clone()).or_default() += 1;
        }
        for blob in &blobs {
            *index.inflight_blobs.entry(blob.clone()).or_default() += 1;
        }
        InflightGuard {
            store,
            chains,
            blobs,
        }
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let mut index = self.store.index.lock().expect("image index lock poisoned");
        let release = |map: &mut std::collections::HashMap<String, usize>, key: &String| {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        };
        for chain in &self.chains {
            release(&mut index.inflight, chain);
        }
        for blob in &self.blobs {
            release(&mut index.inflight_blobs, blob);
        }
    }
}

impl ImageStore {
    /// Pulls `image` and returns its id (the config digest). Idempotent: pulling an
    /// image that is present only refreshes its tag. Cancel-safe: dropping the future
    /// stops the downloads, and the temp directories are removed.
    pub async fn pull(
        &self,
        image: &str,
        credentials: Option<Credentials>,
    ) -> Result<String, ImageError> {
        self.pull_with_progress(image, credentials, None).await
    }

    /// [`ImageStore::pull`], reporting into `progress`: the layer list once the
    /// manifest is in, then each layer's phase and bytes (shared with any concurrent
    /// pull fetching the same layer). The same code path as `pull` in every other way.
    ///
    /// ```no_run
    /// # async fn f(store: &crust_image::ImageStore) -> Result<(), crust_image::ImageError> {
    /// let progress = crust_image::PullProgress::new();
    /// let id = store.pull_with_progress("busybox", None, Some(&progress)).await?;
    /// assert!(progress.snapshot().iter().all(|l| l.phase.is_final()));
    /// # let _ = id; Ok(()) }
    /// ```
    pub async fn pull_with_progress(
        &self,
        image: &str,
        credentials: Option<Credentials>,
        progress: Option<&PullProgress>,
    ) -> Result<String, ImageError> {
        let reference = Reference::parse(image)?;
        let sources = self.options.registries.sources(&reference);
        if sources.is_empty() {
            return Err(ImageError::PermissionDenied {
                image: image.into(),
                registry: reference.registry().into(),
            });
        }
        let mut last_error = None;
        for (i, source) in sources.iter().enumerate() {
            let session = Session::new(
                self.client.clone(),
                source.endpoint.clone(),
                source.reference.repository(),
                credentials.clone(),
                image,
            );
            match self
                .pull_from(&reference, &source.reference, &session, progress)
                .await
            {
                Ok(id) => return Ok(id),
                // Mirrors are best effort: fall through to the next source. The last
                // source (the origin) reports its own error.
                Err(e) if i + 1 < sources.len() => {
                    tracing::warn!(mirror = %source.endpoint.base, error = %e, "mirror failed; trying the next source");
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("at least one source"))
    }

    async fn pull_from(
        &self,
        reference: &Reference,
        remote: &Reference,
        session: &Session,
        progress: Option<&PullProgress>,
    ) -> Result<String, ImageError> {
        let image = reference.to_string();
        let top = session.manifest(remote.manifest_ref(), None).await?;
        let invalid = |what, reason: String| ImageError::InvalidManifest {
            image: image.clone(),
            what,
            reason,
        };
        let mut manifest_digests = vec![top.digest.clone()];
        // Documents to store once the layers are in: a failed pull writes nothing.
        let mut documents = vec![(top.digest.clone(), top.body.clone())];
        let manifest = match ManifestKind::parse(&top.media_type, &top.body)
            .map_err(|r| invalid("manifest", r))?
        {
            ManifestKind::Manifest(m) => m,
            ManifestKind::Index(index) => {
                let platform = Platform::host();
                let chosen = oci::select_platform(&index, &platform).ok_or_else(|| {
                    ImageError::NoMatchingPlatform {
                        image: image.clone(),
                        platform: platform.to_string(),
                    }
                })?;
                let doc = session.manifest(&chosen.digest, Some(chosen.size)).await?;
                match ManifestKind::parse(&doc.media_type, &doc.body)
                    .map_err(|r| invalid("manifest", r))?
                {
                    ManifestKind::Manifest(m) => {
                        manifest_digests.push(doc.digest.clone());
                        documents.push((doc.digest, doc.body));
                        m
                    }
                    ManifestKind::Index(_) => return Err(invalid("index", "nested index".into())),
                }
            }
        };
        let config_bytes = session
            .small_blob(&manifest.config.digest, manifest.config.size)
            .await?;
        let config_file: ConfigFile = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid("image config", e.to_string()))?;
        let diff_ids = &config_file.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(invalid(
                "image config",
                format!(
                    "{} diff_ids for {} layers",
                    diff_ids.len(),
                    manifest.layers.len()
                ),
            ));
        }
        let chains = oci::chain_ids(diff_ids);
        let layers: Vec<LayerInfo> = manifest
            .layers
            .iter()
            .zip(diff_ids)
            .zip(&chains)
            .map(|((d, diff), chain)| LayerInfo {
                digest: d.digest.clone(),
                diff_id: diff.clone(),
                chain_id: chain.clone(),
                size: d.size,
            })
            .collect();

        // Claimed before the first layer is looked at: from here a concurrent
        // RemoveImage's garbage collection keeps what this pull relies on.
        let blobs = documents
            .iter()
            .map(|(digest, _)| digest.clone())
            .chain([manifest.config.digest.clone()])
            .collect();
        let _guard = InflightGuard::claim(self, chains.clone(), blobs);
        if let Some(p) = progress {
            p.set_layers(
                manifest
                    .layers
                    .iter()
                    .map(|d| (d.digest.clone(), d.media_type.clone(), d.size)),
            );
        }
        try_join_all(
            layers.iter().enumerate().map(|(i, layer)| {
                self.ensure_layer(session, layer, &image, progress.map(|p| (p, i)))
            }),
        )
        .await?;
        for (digest, body) in &documents {
            self.put_blob(digest, body)?;
        }
        self.put_blob(&manifest.config.digest, &config_bytes)?;

        let id = manifest.config.digest.clone();
        let record = ImageRecord {
            id: id.clone(),
            repo_tags: reference.repo_tag().into_iter().collect(),
            repo_digests: vec![reference.repo_digest(&top.digest)],
            size: manifest.config.size + layers.iter().map(|l| l.size).sum::<u64>(),
            layers,
            manifest_digests,
            config: ImageConfig::from_file(&config_file),
            annotations: manifest.annotations.clone(),
            removed: false,
        };
        self.publish(record)?;
        Ok(id)
    }

    /// Makes `record` visible, merging tags and digests into an existing record with
    /// the same id, and moving its tag off any other image (a tag names one image).
    fn publish(&self, new: ImageRecord) -> Result<(), ImageError> {
        let mut index = self.index.lock().expect("image index lock poisoned");
        let mut changed = Vec::new();
        for other in index.images.values() {
            if other.id != new.id && other.repo_tags.iter().any(|t| new.repo_tags.contains(t)) {
                let mut other = other.clone();
                other.repo_tags.retain(|t| !new.repo_tags.contains(t));
                changed.push(other);
            }
        }
        let merged = match index.images.get(&new.id) {
            // Removed while a container used it: pulled again, it is new to the CRI.
            Some(old) if old.removed => new,
            Some(old) => {
                let mut merged = old.clone();
                for tag in &new.repo_tags {
                    if !merged.repo_tags.contains(tag) {
                        merged.repo_tags.push(tag.clone());
                    }
                }
                for digest in &new.repo_digests {
                    if !merged.repo_digests.contains(digest) {
                        merged.repo_digests.push(digest.clone());
                    }
                }
                for digest in &new.manifest_digests {
                    if !merged.manifest_digests.contains(digest) {
                        merged.manifest_digests.push(digest.clone());
                    }
                }
                merged
            }
            None => new,
        };
        // Persist first: the record on disk is what makes the image exist.
        self.records.put(&merged)?;
        for other in &changed {
            self.records.put(other)?;
        }
        for other in changed {
            index.images.insert(other.id.clone(), other);
        }
        index.images.insert(merged.id.clone(), merged);
        Ok(())
    }

    /// Makes sure the layer directory for `layer.chain_id` exists, downloading and
    /// unpacking it if needed. Concurrent callers for the same chain ID wait for one
    /// download; `progress` (the pull's, with the layer's index) watches it.
    async fn ensure_layer(
        &self,
        session: &Session,
        layer: &LayerInfo,
        image: &str,
        progress: Option<(&PullProgress, usize)>,
    ) -> Result<(), ImageError> {
        let slot = {
            let mut locks = self.layer_locks.lock().expect("layer lock map poisoned");
            locks.entry(layer.chain_id.clone()).or_default().clone()
        };
        if let Some((p, index)) = progress {
            p.attach(index, &slot.tracker);
        }
        let lock = &slot.lock;
        let result = async {
            let _held = lock.lock().await;
            let dir = self.layer_dir(&layer.chain_id);
            if dir.is_dir() {
                // DONE stays: the pull this one waited for fetched it just now.
                if slot.tracker.phase() != LayerPhase::Done {
                    slot.tracker.set_phase(LayerPhase::AlreadyPresent);
                }
                return Ok(());
            }
            let _permit = self
                .downloads
                .acquire()
                .await
                .expect("download semaphore never closes");
            // Back to WAITING with nothing counted unless the fetch completes: the
            // next pull to hold the lock starts over (also after a cancel).
            struct ResetGuard<'a>(Option<&'a LayerTracker>);
            impl Drop for ResetGuard<'_> {
                fn drop(&mut self) {
                    if let Some(t) = self.0.take() {
                        t.reset();
                    }
                }
            }
            let mut reset = ResetGuard(Some(&slot.tracker));
            self.fetch_layer(session, layer, image, dir, &slot.tracker)
                .await?;
            reset.0 = None;
            slot.tracker.set_phase(LayerPhase::Done);
            Ok(())
        }
        .await;
        // Drop the map entry when nobody else holds the lock.
        let mut locks = self.layer_locks.lock().expect("layer lock map poisoned");
        if Arc::strong_count(&slot) == 2 {
            locks.remove(&layer.chain_id);
        }
        result
    }

    async fn fetch_layer(
        &self,
        session: &Session,
        layer: &LayerInfo,
        image: &str,
        dest: PathBuf,
        tracker: &LayerTracker,
    ) -> Result<(), ImageError> {
        let started = std::time::Instant::now();
        let tmp = self.tmp_dir().join(format!(
            "{}-{}",
            &digest_hex(&layer.chain_id)[..12],
            unique()
        ));
        std::fs::create_dir(&tmp).map_err(ImageError::io("create", &tmp))?;
        // Removes the temp dir on every early return, including cancellation.
        struct TmpGuard(Option<PathBuf>);
        impl Drop for TmpGuard {
            fn drop(&mut self) {
                if let Some(path) = self.0.take() {
                    // Unpacking may still be writing into it on its blocking thread;
                    // a late leftover is removed at the next start.
                    let _ = remove_any(&path);
                }
            }
        }
        let mut guard = TmpGuard(Some(tmp.clone()));

        let mut response = session.blob(&layer.digest).await?;
        session.check_length(&response, "layer", &layer.digest, layer.size)?;
        tracker.set_phase(LayerPhase::Downloading);
        let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(CHUNK_QUEUE);
        let unpack_dir = tmp.clone();
        let max_unpacked = self.options.max_layer_unpacked_bytes;
        let unpacker = tokio::task::spawn_blocking(move || {
            let result = unpack_layer(
                ChannelReader {
                    rx,
                    current: bytes::Bytes::new(),
                },
                &unpack_dir,
                max_unpacked,
            );
            match &result {
                // One syncfs instead of an fsync per file: the layer is durable before
                // the rename makes it count.
                Ok(_) => {
                    if let Ok(dir) = std::fs::File::open(&unpack_dir) {
                        let _ = rustix::fs::syncfs(&dir);
                    }
                }
                // Clean up here too: a cancelled pull's guard may have run before we
                // stopped writing.
                Err(_) => {
                    let _ = remove_any(&unpack_dir);
                }
            }
            result
        });
        let mut download_error = None;
        // Nothing past the declared size reaches the unpacker: a registry cannot fill
        // the disk through a layer whose manifest says it is small.
        let mut limit = SizeLimit::new(layer.size);
        loop {
            match session.next_chunk(&mut response).await {
                Ok(Some(chunk)) => {
                    if !limit.take(chunk.len()) {
                        download_error = Some(session.size_mismatch("layer", &layer.digest, limit));
                        break;
                    }
                    let len = chunk.len();
                    if tx.send(chunk).await.is_err() {
                        break; // the unpacker stopped: its error says why
                    }
                    tracker.add_bytes(len);
                }
                Ok(None) => {
                    if !limit.complete() {
                        download_error = Some(session.size_mismatch("layer", &layer.digest, limit));
                    }
                    break;
                }
                Err(e) => {
                    download_error = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        if download_error.is_none() {
            tracker.set_phase(LayerPhase::Unpacking);
        }
        let unpacked = unpacker.await.expect("unpack thread panicked");
        if let Some(e) = download_error {
            return Err(e);
        }
        let unpacked = unpacked.map_err(|source| ImageError::Unpack {
            image: image.into(),
            layer: layer.digest.clone(),
            source,
        })?;
        tracker.set_phase(LayerPhase::Verifying);
        if unpacked.digest != layer.digest {
            return Err(ImageError::DigestMismatch {
                image: image.into(),
                what: format!("layer {}", layer.digest),
                expected: layer.digest.clone(),
                actual: unpacked.digest,
            });
        }
        if unpacked.diff_id != layer.diff_id {
            return Err(ImageError::DigestMismatch {
                image: image.into(),
                what: format!("uncompressed layer {}", layer.digest),
                expected: layer.diff_id.clone(),
                actual: unpacked.diff_id,
            });
        }
        match std::fs::rename(&tmp, &dest) {
            Ok(()) => {
                guard.0 = None;
                crust_state::fsync_dir(&self.root.join("layers"))
                    .map_err(ImageError::io("sync", &dest))?;
            }
            // Someone else finished the same layer first (after a cancelled pull let go
            // of the lock); theirs is as good as ours.
            Err(_) if dest.is_dir() => {}
            Err(e) => return Err(ImageError::io("publish layer", dest)(e)),
        }
        tracing::info!(
            layer = %layer.digest,
            bytes = unpacked.size,
            compression = ?unpacked.compression,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "layer unpacked"
        );
        Ok(())
    }
}

/// A blocking `Read` over chunks sent from the async download.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                // The sender is gone: end of stream (or an aborted download, which the
                // digest check then rejects).
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}
