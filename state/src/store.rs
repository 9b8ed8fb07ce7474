//! The record store: typed, versioned JSON records, one file each.

use std::{
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::{
    StateError,
    atomic::{TEMP_PREFIX, fsync_dir, replace_atomic, sync_replaced, write_atomic},
};

/// An object crust persists.
///
/// `VERSION` is the schema version written with every record. When a record's schema
/// changes incompatibly, bump it and teach [`Record::upgrade`] to turn the old JSON
/// into the new; a file whose version cannot be upgraded is quarantined, not guessed at.
pub trait Record: Serialize + DeserializeOwned {
    /// Directory name of this kind of record, e.g. `"sandbox"`. Lowercase, `[a-z0-9-]`.
    const KIND: &'static str;
    /// Current schema version.
    const VERSION: u32;
    /// The record's id; it is also its file name, so it must pass [`validate_id`].
    fn id(&self) -> &str;
    /// Converts the JSON of an older schema version into the current one. Returns
    /// `None` when `from` is not a version this build knows, which quarantines the file.
    fn upgrade(from: u32, value: Value) -> Option<Value> {
        let _ = (from, value);
        None
    }
}

/// The on-disk envelope around every record.
#[derive(serde::Serialize)]
struct EnvelopeOut<'a, R> {
    kind: &'a str,
    version: u32,
    id: &'a str,
    record: &'a R,
}

#[derive(serde::Deserialize)]
struct EnvelopeIn {
    kind: String,
    version: u32,
    id: String,
    record: Value,
}

/// A record file that could not be loaded and was set aside.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Quarantined {
    /// Kind of record the file was found under.
    pub kind: &'static str,
    /// Where the file was.
    pub path: PathBuf,
    /// Where it was moved; `None` if moving it failed too (it then stays in place and
    /// is reported again on the next start).
    pub moved_to: Option<PathBuf>,
    /// Why it could not be loaded.
    pub reason: String,
}

/// Result of loading every record of one kind.
#[derive(Debug)]
pub struct Loaded<R> {
    /// Records that loaded, sorted by id.
    pub records: Vec<R>,
    /// Files that did not, now under the quarantine directory.
    pub quarantined: Vec<Quarantined>,
}

/// A directory of records, one subdirectory per kind.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    quarantine: PathBuf,
}

/// Checks that `id` is usable as a file name on every filesystem we care about: 1 to 128
/// characters of `[A-Za-z0-9_.-]`, not starting with a dot (dot files are ours: temp
/// files and the like).
pub fn validate_id(kind: &'static str, id: &str) -> Result<(), StateError> {
    let invalid = |reason| {
        Err(StateError::InvalidId {
            kind,
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return invalid("empty");
    }
    if id.len() > 128 {
        return invalid("longer than 128 characters");
    }
    if id.starts_with('.') {
        return invalid("starts with a dot");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return invalid("only letters, digits, '_', '.' and '-' are allowed");
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) a store whose records live under `root` and whose
    /// unreadable files are moved under `quarantine`.
    pub fn open(
        root: impl Into<PathBuf>,
        quarantine: impl Into<PathBuf>,
    ) -> Result<Store, StateError> {
        let store = Store {
            root: root.into(),
            quarantine: quarantine.into(),
        };
        for dir in [&store.root, &store.quarantine] {
            fs::create_dir_all(dir).map_err(|source| StateError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(store)
    }

    /// Root directory of the records.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn kind_dir<R: Record>(&self) -> Result<PathBuf, StateError> {
        let dir = self.root.join(R::KIND);
        fs::create_dir_all(&dir).map_err(|source| StateError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        Ok(dir)
    }

    /// The record's directory, file name and envelope bytes.
    fn encode<R: Record>(&self, record: &R) -> Result<(PathBuf, String, Vec<u8>), StateError> {
        let id = record.id();
        validate_id(R::KIND, id)?;
        let envelope = EnvelopeOut {
            kind: R::KIND,
            version: R::VERSION,
            id,
            record,
        };
        let bytes = serde_json::to_vec_pretty(&envelope).map_err(|source| StateError::Encode {
            kind: R::KIND,
            id: id.to_string(),
            source,
        })?;
        Ok((self.kind_dir::<R>()?, format!("{id}.json"), bytes))
    }

    /// Persists `record`, replacing any previous version atomically. When this returns
    /// `Ok`, the record survives a crash or power loss.
    pub fn put<R: Record>(&self, record: &R) -> Result<(), StateError> {
        let id = record.id();
        let (dir, name, bytes) = self.encode(record)?;
        write_atomic(&dir, &name, &bytes).map_err(|source| StateError::Write {
            kind: R::KIND,
            id: id.to_string(),
            path: dir.join(&name),
            source,
        })
    }

    /// Replaces `record` atomically and makes it visible to every process at once, but
    /// leaves it to the returned [`PendingSync`] to make it durable: the caller may
    /// overlap the fsyncs with other work. Until the sync has returned, a crash of
    /// crustd (any process) still finds the new record, a power loss may find the old
    /// one (or, for a record new since the last sync, a file that is quarantined at
    /// load). So use it only where everything done before the sync is lost with a
    /// power loss anyway (volatile namespaces, mounts under `/run`, processes,
    /// cgroups) and sync before anything that outlives one.
    pub fn put_visible<R: Record>(&self, record: &R) -> Result<PendingSync, StateError> {
        let id = record.id();
        let (dir, name, bytes) = self.encode(record)?;
        replace_atomic(&dir, &name, &bytes).map_err(|source| StateError::Write {
            kind: R::KIND,
            id: id.to_string(),
            path: dir.join(&name),
            source,
        })?;
        Ok(PendingSync {
            kind: R::KIND,
            id: id.to_string(),
            dir,
            name,
        })
    }

    /// Reads one record. `Ok(None)` when it does not exist; [`StateError::Corrupt`]
    /// when the file is there but unreadable (it is left in place).
    pub fn get<R: Record>(&self, id: &str) -> Result<Option<R>, StateError> {
        validate_id(R::KIND, id)?;
        let path = self.root.join(R::KIND).join(format!("{id}.json"));
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Read {
                    kind: R::KIND,
                    id: id.to_string(),
                    path,
                    source,
                });
            }
        };
        decode::<R>(&bytes, id)
            .map(Some)
            .map_err(|reason| StateError::Corrupt {
                kind: R::KIND,
                id: id.to_string(),
                path,
                reason,
            })
    }

    /// Deletes a record durably. Removing a record that does not exist succeeds.
    pub fn remove<R: Record>(&self, id: &str) -> Result<(), StateError> {
        validate_id(R::KIND, id)?;
        let dir = self.root.join(R::KIND);
        let path = dir.join(format!("{id}.json"));
        let remove_err = |source| StateError::Remove {
            kind: R::KIND,
            id: id.to_string(),
            path: path.clone(),
            source,
        };
        match fs::remove_file(&path) {
            Ok(()) => fsync_dir(&dir).map_err(remove_err),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(remove_err(e)),
        }
    }

    /// Loads every record of kind `R`. Leftover temp files from interrupted writes are
    /// deleted (the rename never happened, so the record they were meant to replace is
    /// still intact). Files that cannot be decoded are quarantined and reported, and the
    /// rest still load: one bad file never hides the others.
    pub fn load_all<R: Record>(&self) -> Result<Loaded<R>, StateError> {
        let dir = self.kind_dir::<R>()?;
        let read_dir_err = |source| StateError::ReadDir {
            kind: R::KIND,
            path: dir.clone(),
            source,
        };
        let mut records = Vec::new();
        let mut quarantined = Vec::new();
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .map_err(read_dir_err)?
            .collect::<Result<_, _>>()
            .map_err(read_dir_err)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TEMP_PREFIX) {
                if let Err(error) = fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), %error, "cannot remove leftover temp file");
                }
                continue;
            }
            let outcome = match name.strip_suffix(".json") {
                None => Err("not a record file (no .json suffix)".to_string()),
                Some(id) => match fs::read(&path) {
                    Ok(bytes) => decode::<R>(&bytes, id),
                    Err(e) => Err(format!("read: {e}")),
                },
            };
            match outcome {
                Ok(record) => records.push(record),
                Err(reason) => quarantined.push(self.quarantine(R::KIND, &path, &name, reason)),
            }
        }
        Ok(Loaded {
            records,
            quarantined,
        })
    }

    fn quarantine(
        &self,
        kind: &'static str,
        path: &Path,
        name: &str,
        reason: String,
    ) -> Quarantined {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = self.quarantine.join(kind);
        let target = dir.join(format!("{name}.{stamp}"));
        let moved = fs::create_dir_all(&dir)
            .and_then(|()| fs::rename(path, &target))
            .and_then(|()| {
                // The reason travels with the file so an operator can tell why later.
                write_atomic(
                    &dir,
                    &format!("{name}.{stamp}.reason"),
                    format!("{reason}\n").as_bytes(),
                )
            });
        let moved_to = match moved {
            Ok(()) => Some(target),
            Err(error) if target.exists() => {
                tracing::warn!(path = %target.display(), %error, "quarantined record but could not write the reason file");
                Some(target)
            }
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "cannot move unreadable record to quarantine");
                None
            }
        };
        tracing::error!(kind, path = %path.display(), reason = %reason, "quarantined unreadable record");
        Quarantined {
            kind,
            path: path.to_path_buf(),
            moved_to,
            reason,
        }
    }
}

/// The durable half of [`Store::put_visible`]: blocking (two fsyncs), so async callers
/// run it on the blocking pool.
#[derive(Debug)]
#[must_use = "the record is not durable until synced"]
pub struct PendingSync {
    kind: &'static str,
    id: String,
    dir: PathBuf,
    name: String,
}

impl PendingSync {
    /// Fsyncs the record file and its directory. When this returns `Ok`, the record
    /// (or a later version of it) survives a power loss.
    pub fn sync(self) -> Result<(), StateError> {
        sync_replaced(&self.dir, &self.name).map_err(|source| StateError::Write {
            kind: self.kind,
            path: self.dir.join(&self.name),
            id: self.id,
            source,
        })
    }
}

/// Decodes one record file, checking that the envelope matches the file it came from.
fn decode<R: Record>(bytes: &[u8], file_id: &str) -> Result<R, String> {
    let envelope: EnvelopeIn =
        serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON envelope: {e}"))?;
    if envelope.kind != R::KIND {
        return Err(format!(
            "envelope kind {:?} does not match directory {:?}",
            envelope.kind,
            R::KIND
        ));
    }
    if envelope.id != file_id {
        return Err(format!(
            "envelope id {:?} does not match file name {file_id:?}",
            envelope.id
        ));
    }
    let value = match envelope.version {
        v if v == R::VERSION => envelope.record,
        v if v < R::VERSION => R::upgrade(v, envelope.record)
            .ok_or_else(|| format!("schema version {v} cannot be upgraded to {}", R::VERSION))?,
        v => {
            return Err(format!(
                "schema version {v} is newer than this build understands ({})",
                R::VERSION
            ));
        }
    };
    serde_json::from_value(value).map_err(|e| format!("invalid {} record: {e}", R::KIND))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Thing {
        id: String,
        size: u64,
    }

    impl Record for Thing {
        const KIND: &'static str = "thing";
        const VERSION: u32 = 2;
        fn id(&self) -> &str {
            &self.id
        }
        // Version 1 called the field `bytes`.
        fn upgrade(from: u32, mut value: Value) -> Option<Value> {
            if from != 1 {
                return None;
            }
            let fields = value.as_object_mut()?;
            let bytes = fields.remove("bytes")?;
            fields.insert("size".into(), bytes);
            Some(value)
        }
    }

    fn thing(id: &str, size: u64) -> Thing {
        Thing {
            id: id.into(),
            size,
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("records"), dir.path().join("quarantine")).unwrap();
        (dir, store)
    }

    fn record_path(store: &Store, id: &str) -> PathBuf {
        store.root().join("thing").join(format!("{id}.json"))
    }

    #[test]
    fn put_get_overwrite_remove() {
        let (_dir, store) = store();
        assert_eq!(store.get::<Thing>("a").unwrap(), None);
        store.put(&thing("a", 1)).unwrap();
        assert_eq!(store.get::<Thing>("a").unwrap(), Some(thing("a", 1)));
        store.put(&thing("a", 2)).unwrap();
        assert_eq!(store.get::<Thing>("a").unwrap(), Some(thing("a", 2)));
        store.remove::<Thing>("a").unwrap();
        assert_eq!(store.get::<Thing>("a").unwrap(), None);
        store
            .remove::<Thing>("a")
            .expect("removing a missing record is not an error");
    }

    #[test]
    fn put_visible_is_readable_before_and_after_sync() {
        let (_dir, store) = store();
        store.put(&thing("a", 1)).unwrap();
        let pending = store.put_visible(&thing("a", 2)).unwrap();
        assert_eq!(
            store.get::<Thing>("a").unwrap(),
            Some(thing("a", 2)),
            "the new version must be visible before the sync"
        );
        pending.sync().unwrap();
        let loaded = store.load_all::<Thing>().unwrap();
        assert_eq!(loaded.records, vec![thing("a", 2)]);
        assert!(loaded.quarantined.is_empty());
    }

    #[test]
    fn load_all_returns_sorted_records() {
        let (_dir, store) = store();
        for (id, size) in [("c", 3), ("a", 1), ("b", 2)] {
            store.put(&thing(id, size)).unwrap();
        }
        let loaded = store.load_all::<Thing>().unwrap();
        assert_eq!(
            loaded.records,
            vec![thing("a", 1), thing("b", 2), thing("c", 3)]
        );
        assert!(loaded.quarantined.is_empty());
    }

    #[test]
    fn bad_files_are_quarantined_and_the_rest_load() {
        // Each case: file name, content, a word the reason must contain.
        let cases: &[(&str, &[u8], &str)] = &[
            ("torn.json", br#"{"kind":"thing","version":2,"id":"torn","rec"#, "invalid JSON"),
            ("garbage.json", b"\x00\xff not json", "invalid JSON"),
            ("empty.json", b"", "invalid JSON"),
            ("future.json", br#"{"kind":"thing","version":9,"id":"future","record":{}}"#, "newer"),
            ("ancient.json", br#"{"kind":"thing","version":0,"id":"ancient","record":{}}"#, "cannot be upgraded"),
            ("wrongkind.json", br#"{"kind":"other","version":2,"id":"wrongkind","record":{}}"#, "kind"),
            ("renamed.json", br#"{"kind":"thing","version":2,"id":"elsewhere","record":{"id":"elsewhere","size":1}}"#, "file name"),
            ("badfields.json", br#"{"kind":"thing","version":2,"id":"badfields","record":{"id":"badfields"}}"#, "invalid thing record"),
            ("notes.txt", b"hello", "no .json suffix"),
        ];
        let (dir, store) = store();
        store.put(&thing("good", 7)).unwrap();
        let kind_dir = store.root().join("thing");
        for (name, content, _) in cases {
            fs::write(kind_dir.join(name), content).unwrap();
        }

        let loaded = store.load_all::<Thing>().unwrap();
        assert_eq!(
            loaded.records,
            vec![thing("good", 7)],
            "the good record must still load"
        );
        assert_eq!(loaded.quarantined.len(), cases.len());
        for (name, _, word) in cases {
            let q = loaded
                .quarantined
                .iter()
                .find(|q| q.path.file_name().unwrap() == *name)
                .unwrap_or_else(|| panic!("{name} was not quarantined"));
            assert!(
                q.reason.contains(word),
                "{name}: reason {:?} should mention {word:?}",
                q.reason
            );
            let moved = q
                .moved_to
                .as_ref()
                .unwrap_or_else(|| panic!("{name} was not moved"));
            assert!(
                moved.starts_with(dir.path().join("quarantine/thing")),
                "{name} moved to {moved:?}"
            );
            assert!(
                moved.exists(),
                "{name}: quarantined copy must be kept, not deleted"
            );
            assert!(
                !kind_dir.join(name).exists(),
                "{name} must leave the records directory"
            );
            let reason_file = PathBuf::from(format!("{}.reason", moved.display()));
            assert!(
                fs::read_to_string(reason_file).unwrap().contains(word),
                "{name}: reason file"
            );
        }
        // A second load is clean: nothing is reported twice.
        let again = store.load_all::<Thing>().unwrap();
        assert_eq!(again.records.len(), 1);
        assert!(again.quarantined.is_empty());
    }

    #[test]
    fn leftover_temp_files_are_removed_and_old_record_kept() {
        // A crash between writing the temp file and the rename leaves the temp file
        // (maybe torn) beside the previous, intact record.
        let (_dir, store) = store();
        store.put(&thing("a", 1)).unwrap();
        let torn_temp = store
            .root()
            .join("thing")
            .join(format!("{TEMP_PREFIX}a.json-123-0"));
        fs::write(&torn_temp, br#"{"kind":"thing","vers"#).unwrap();
        let loaded = store.load_all::<Thing>().unwrap();
        assert_eq!(loaded.records, vec![thing("a", 1)]);
        assert!(loaded.quarantined.is_empty(), "a temp file is not a record");
        assert!(!torn_temp.exists(), "temp file must be cleaned up");
    }

    #[test]
    fn older_versions_are_upgraded() {
        let (_dir, store) = store();
        fs::create_dir_all(store.root().join("thing")).unwrap();
        fs::write(
            record_path(&store, "old"),
            br#"{"kind":"thing","version":1,"id":"old","record":{"id":"old","bytes":42}}"#,
        )
        .unwrap();
        let loaded = store.load_all::<Thing>().unwrap();
        assert_eq!(loaded.records, vec![thing("old", 42)]);
        assert_eq!(store.get::<Thing>("old").unwrap(), Some(thing("old", 42)));
    }

    #[test]
    fn get_of_corrupt_record_is_an_error_naming_it() {
        let (_dir, store) = store();
        fs::create_dir_all(store.root().join("thing")).unwrap();
        fs::write(record_path(&store, "bad"), b"{").unwrap();
        let err = store.get::<Thing>("bad").unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("bad.json"), "{err}");
        assert!(
            record_path(&store, "bad").exists(),
            "get must not move files"
        );
    }

    #[test]
    fn ids_are_validated() {
        let cases = [
            ("", false),
            (".hidden", false),
            ("a/b", false),
            ("..", false),
            ("a b", false),
            (&"x".repeat(129) as &str, false),
            ("abc-DEF_0.9", true),
            (&"f".repeat(64) as &str, true),
        ];
        for (id, ok) in cases {
            assert_eq!(validate_id("thing", id).is_ok(), ok, "id {id:?}");
        }
        let (_dir, store) = store();
        assert!(matches!(
            store.put(&thing("../escape", 1)),
            Err(StateError::InvalidId { .. })
        ));
    }
}
