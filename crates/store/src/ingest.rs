//! In-progress writes on disk. Each ingest is a directory named by sha256(ns "\0" ref) (never by
//! the client's ref itself) holding `data` and `meta.json`; everything needed to resume or list
//! it lives there, so a crash leaves nothing to reconcile with the database.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::filters::Filter;
use crate::identifiers;
use crate::records::IngestStatus;
use crate::store::Inner;
use crate::Store;

/// Refs are free-form client strings, but bounded.
pub(crate) const MAX_REF: usize = 4096;

pub(crate) const DATA: &str = "data";
const META: &str = "meta.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct IngestMeta {
    pub(crate) namespace: String,
    pub(crate) reference: String,
    pub(crate) total: i64,
    pub(crate) expected: Option<String>,
    pub(crate) started_at: SystemTime,
}

pub(crate) fn validate_ref(reference: &str) -> Result<()> {
    if reference.is_empty() {
        return Err(Error::InvalidArgument(
            "ingest ref must not be empty".into(),
        ));
    }
    if reference.len() > MAX_REF {
        return Err(Error::InvalidArgument(format!(
            "ingest ref longer than {MAX_REF} bytes"
        )));
    }
    Ok(())
}

/// The directory name (and lock key) of an ingest.
pub(crate) fn key(ns: &str, reference: &str) -> String {
    let mut h = Sha256::new();
    h.update(ns.as_bytes());
    h.update([0u8]);
    h.update(reference.as_bytes());
    hex::encode(h.finalize())
}

impl Inner {
    pub(crate) fn ingest_dir(&self, key: &str) -> PathBuf {
        self.ingest_root().join(key)
    }
}

pub(crate) fn read_meta(dir: &Path) -> Result<Option<IngestMeta>> {
    let path = dir.join(META);
    match fs::read(&path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io {
            context: format!("read {}", path.display()),
            source: e,
        }),
    }
}

/// Replaces meta.json atomically (write, fsync, rename).
pub(crate) fn write_meta(dir: &Path, meta: &IngestMeta) -> Result<()> {
    let tmp = dir.join("meta.json.tmp");
    let mut f = fs::File::create(&tmp).map_err(Error::io(format!("create {}", tmp.display())))?;
    f.write_all(&serde_json::to_vec(meta)?)
        .and_then(|()| f.sync_all())
        .map_err(Error::io(format!("write {}", tmp.display())))?;
    fs::rename(&tmp, dir.join(META)).map_err(Error::io(format!("rename {}", tmp.display())))
}

/// Status from what is on disk: the data file's length is the offset, its mtime the update time.
fn status_from_disk(dir: &Path, meta: IngestMeta) -> Result<IngestStatus> {
    let data = dir.join(DATA);
    let (offset, updated_at) = match fs::metadata(&data) {
        Ok(md) => (
            i64::try_from(md.len()).unwrap_or(i64::MAX),
            md.modified().unwrap_or(meta.started_at),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, meta.started_at),
        Err(e) => {
            return Err(Error::Io {
                context: format!("stat {}", data.display()),
                source: e,
            })
        }
    };
    Ok(IngestStatus {
        reference: meta.reference,
        offset,
        total: meta.total,
        expected: meta.expected,
        started_at: meta.started_at,
        updated_at,
    })
}

/// Every ingest on disk with its metadata, across namespaces (skips half-created dirs).
pub(crate) fn all(inner: &Inner) -> Result<Vec<(PathBuf, IngestMeta)>> {
    let root = inner.ingest_root();
    let entries = fs::read_dir(&root).map_err(Error::io(format!("read {}", root.display())))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io(format!("read {}", root.display())))?;
        let dir = entry.path();
        // A directory without readable meta is a crash leftover from creation; ignore it here.
        if let Ok(Some(meta)) = read_meta(&dir) {
            out.push((dir, meta));
        }
    }
    Ok(out)
}

impl Store {
    pub fn ingest_status(&self, ns: &str, reference: &str) -> Result<IngestStatus> {
        validate_ref(reference)?;
        let dir = self.inner.ingest_dir(&key(ns, reference));
        let meta = read_meta(&dir)?.ok_or_else(|| ingest_not_found(reference))?;
        status_from_disk(&dir, meta)
    }

    pub fn ingest_list(&self, ns: &str, filter: &Filter) -> Result<Vec<IngestStatus>> {
        identifiers::validate(ns)?;
        let mut out = Vec::new();
        for (dir, meta) in all(&self.inner)? {
            if meta.namespace != ns {
                continue;
            }
            let st = status_from_disk(&dir, meta)?;
            if filter.matches(&st) {
                out.push(st);
            }
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Removes an ingest. A live writer on it will then fail to commit.
    pub fn ingest_abort(&self, ns: &str, reference: &str) -> Result<()> {
        validate_ref(reference)?;
        let dir = self.inner.ingest_dir(&key(ns, reference));
        if read_meta(&dir)?.is_none() {
            return Err(ingest_not_found(reference));
        }
        fs::remove_dir_all(&dir).map_err(Error::io(format!("remove {}", dir.display())))
    }
}

pub(crate) fn ingest_not_found(reference: &str) -> Error {
    Error::NotFound(format!("ingest ref {reference:?}"))
}
