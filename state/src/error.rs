use std::{io, path::PathBuf};

/// What can go wrong in the state layer. Every variant names the object and the path.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("invalid {kind} record id {id:?}: {reason}")]
    InvalidId {
        kind: &'static str,
        id: String,
        reason: &'static str,
    },

    #[error("create state directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },

    #[error("encode {kind} record {id}: {source}")]
    Encode {
        kind: &'static str,
        id: String,
        source: serde_json::Error,
    },

    #[error("write {kind} record {id} to {path}: {source}")]
    Write {
        kind: &'static str,
        id: String,
        path: PathBuf,
        source: io::Error,
    },

    #[error("read {kind} record {id} from {path}: {source}")]
    Read {
        kind: &'static str,
        id: String,
        path: PathBuf,
        source: io::Error,
    },

    #[error("{kind} record {id} at {path} is unreadable: {reason}")]
    Corrupt {
        kind: &'static str,
        id: String,
        path: PathBuf,
        reason: String,
    },

    #[error("list {kind} records in {path}: {source}")]
    ReadDir {
        kind: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    #[error("remove {kind} record {id} at {path}: {source}")]
    Remove {
        kind: &'static str,
        id: String,
        path: PathBuf,
        source: io::Error,
    },
}
