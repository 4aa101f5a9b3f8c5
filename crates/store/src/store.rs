//! The [`Store`] handle: opening the root, and state shared with live writers.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use redb::Database;

use crate::db;
use crate::error::{Error, Result};

/// The metadata and content store. Cheap to share as `Arc<Store>`.
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: Database,
    pub(crate) root: PathBuf,
    /// Ingest keys held by a live [`crate::Writer`]; one writer per (namespace, ref).
    pub(crate) locks: Mutex<HashSet<String>>,
    /// Blob files appear before their record (rename, then transaction); GC holds this for
    /// writing so it never sees a just-renamed blob as an orphan. Committers hold it for reading.
    pub(crate) blob_lock: RwLock<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.inner.root)
            .finish()
    }
}

impl Store {
    /// Opens (or creates) a store rooted at `root`.
    pub fn open(root: &Path) -> Result<Store> {
        let inner = Inner {
            db: open_db(root)?,
            root: root.to_path_buf(),
            locks: Mutex::new(HashSet::new()),
            blob_lock: RwLock::new(()),
        };
        for dir in [inner.blobs_dir(), inner.ingest_root()] {
            fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        }
        Ok(Store {
            inner: Arc::new(inner),
        })
    }

    /// The root directory this store was opened on.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub(crate) fn db(&self) -> &Database {
        &self.inner.db
    }
}

fn open_db(root: &Path) -> Result<Database> {
    fs::create_dir_all(root).map_err(Error::io(format!("create {}", root.display())))?;
    let db = Database::create(root.join("metadata.redb"))?;
    let txn = db.begin_write()?;
    db::create_tables(&txn)?;
    txn.commit()?;
    Ok(db)
}

impl Inner {
    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("content").join("blobs").join("sha256")
    }

    pub(crate) fn ingest_root(&self) -> PathBuf {
        self.root.join("content").join("ingest")
    }

    /// Path of a blob; `hex` must come from a validated [`crate::digest::Digest`].
    pub(crate) fn blob_path(&self, hex: &str) -> PathBuf {
        self.blobs_dir().join(hex)
    }

    pub(crate) fn read_blobs(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        // A poisoned lock only means another thread panicked while holding it; the guarded
        // state lives on disk and in redb, both consistent, so carry on.
        self.blob_lock
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn write_blobs(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.blob_lock
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(crate) fn now() -> SystemTime {
    SystemTime::now()
}
