//! RemoveImage: untag, and delete the image with every layer and blob nothing else
//! uses once no tag is left.

use crate::{
    ImageError,
    store::{ImageRecord, ImageStore, find_in},
};

/// What a removal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// Nothing matched (CRI: removing a missing image succeeds).
    NotPresent,
    /// One tag was removed; the image stays (it has other tags, or a container uses it).
    Untagged { id: String },
    /// The image record is gone and unused layers and blobs were deleted.
    Deleted { id: String },
}

impl ImageStore {
    /// Removes `query` (an id, repo tag or repo digest). By tag, only that tag goes
    /// unless it was the last one; by id or digest, every tag goes. When no tag is
    /// left the image is deleted, unless `in_use(id)` says a container still uses it:
    /// it then stays, untagged, until [`ImageStore::prune_unused`] is called after the
    /// container is removed. Idempotent.
    ///
    /// ```text
    /// tagged --untag (tags left)--> tagged
    /// tagged --untag last / by id--> [in use? untagged : deleted]
    /// untagged --prune (not in use)--> deleted
    /// ```
    pub fn remove(&self, query: &str, in_use: &dyn Fn(&str) -> bool) -> Result<Removed, ImageError> {
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
            if in_use(&id) {
                record.repo_tags.clear();
                self.records.put(&record)?;
                index.images.insert(id.clone(), record);
                Removed::Untagged { id }
            } else {
                // Forget the record first: once it is gone from disk the image no
                // longer exists, and its files are ordinary garbage.
                self.records.remove::<ImageRecord>(crust_state::Record::id(&record))?;
                index.images.remove(&id);
                Removed::Deleted { id }
            }
        };
        if matches!(outcome, Removed::Deleted { .. }) {
            self.collect_garbage()?;
        }
        Ok(outcome)
    }

    /// Deletes untagged images that `in_use` says no container uses any more, then
    /// their unused layers and blobs. Returns the ids deleted.
    pub fn prune_unused(&self, in_use: &dyn Fn(&str) -> bool) -> Result<Vec<String>, ImageError> {
        let doomed: Vec<ImageRecord> = {
            let index = self.index.lock().expect("image index lock poisoned");
            index.images.values().filter(|r| r.repo_tags.is_empty() && !in_use(&r.id)).cloned().collect()
        };
        let mut deleted = Vec::new();
        for record in doomed {
            self.records.remove::<ImageRecord>(crust_state::Record::id(&record))?;
            self.index.lock().expect("image index lock poisoned").images.remove(&record.id);
            deleted.push(record.id);
        }
        if !deleted.is_empty() {
            self.collect_garbage()?;
        }
        Ok(deleted)
    }
}
