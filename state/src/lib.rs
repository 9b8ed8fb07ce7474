//! Durable state for crust: one versioned JSON file per object, replaced atomically.
//!
//! Every sandbox, container, image and node setting crust keeps is a [`Record`]. A
//! record lives at `<root>/<kind>/<id>.json` inside an envelope that names its kind, id
//! and schema version. Writes go through [`write_atomic`] (temp file, fsync, rename,
//! fsync of the directory), so after a crash a reader sees either the old or the new
//! record, never a mix. Loading never fails because of one bad file: a record that does
//! not parse, or carries a schema version this build cannot read, is moved to
//! `<quarantine>/<kind>/` and reported, and the rest load.
//!
//! ```
//! use crust_state::{Record, Store};
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Node { name: String, pod_cidr: String }
//! impl Record for Node {
//!     const KIND: &'static str = "node";
//!     const VERSION: u32 = 1;
//!     fn id(&self) -> &str { &self.name }
//! }
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path().join("records"), dir.path().join("quarantine")).unwrap();
//! store.put(&Node { name: "n1".into(), pod_cidr: "10.0.0.0/24".into() }).unwrap();
//! let loaded = store.load_all::<Node>().unwrap();
//! assert_eq!(loaded.records[0].pod_cidr, "10.0.0.0/24");
//! assert!(loaded.quarantined.is_empty());
//! ```

mod atomic;
mod error;
mod store;

pub use atomic::{fsync_dir, replace_atomic, sync_replaced, write_atomic};
pub use error::StateError;
pub use store::{Loaded, PendingSync, Quarantined, Record, Store, validate_id};
