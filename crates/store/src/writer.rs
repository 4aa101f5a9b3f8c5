//! Content writers: append to an ingest with a running sha256, then verify and move the data
//! into the blob store and record it, in that order, so a crash leaves either the ingest or the
//! committed blob (an unrecorded blob is an orphan that GC removes).

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::SystemTime;

use redb::ReadableTable;
use sha2::{Digest as _, Sha256};

use crate::content::record_content;
use crate::db::{self, CONTENT};
use crate::digest::{self, Digest};
use crate::error::{Error, Result};
use crate::identifiers;
use crate::ingest::{self, IngestMeta, DATA};
use crate::labels;
use crate::leases;
use crate::records::{IngestStatus, Labels, LeaseResource};
use crate::resource_kinds::{CONTENT as KIND_CONTENT, INGESTS as KIND_INGESTS};
use crate::store::{now, Inner};
use crate::Store;

/// Chunk size used when re-reading a kept prefix to rebuild the hash.
const REHASH_CHUNK: usize = 1 << 20;

/// A live writer on one ingest. Holds the (namespace, ref) lock until dropped.
pub struct Writer {
    lock: RefLock,
    ns: String,
    dir: PathBuf,
    file: File,
    hasher: Sha256,
    offset: i64,
    meta: IngestMeta,
    updated_at: SystemTime,
    lease: Option<String>,
    committed: bool,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("ns", &self.ns)
            .field("reference", &self.meta.reference)
            .field("offset", &self.offset)
            .field("total", &self.meta.total)
            .field("committed", &self.committed)
            .finish()
    }
}

/// The in-process lock on an ingest key, released on drop (also when opening fails halfway).
struct RefLock {
    inner: Arc<Inner>,
    key: String,
}

impl RefLock {
    fn acquire(inner: &Arc<Inner>, key: String, reference: &str) -> Result<RefLock> {
        let mut locks = inner.locks.lock().unwrap_or_else(PoisonError::into_inner);
        if !locks.insert(key.clone()) {
            return Err(Error::Unavailable(format!("ref {reference:?} locked")));
        }
        Ok(RefLock {
            inner: Arc::clone(inner),
            key,
        })
    }
}

impl Drop for RefLock {
    fn drop(&mut self) {
        self.inner
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

impl Store {
    /// Opens a writer on ingest `reference`, resuming it if it exists.
    ///
    /// When `expected` names a blob that already exists (in this namespace, or on disk for
    /// another one), it is recorded in `ns` (and `lease`) and AlreadyExists is returned:
    /// containerd clients treat that as "nothing to write".
    pub fn content_writer(
        &self,
        ns: &str,
        reference: &str,
        total: i64,
        expected: Option<&str>,
        lease: Option<&str>,
    ) -> Result<Writer> {
        identifiers::validate(ns)?;
        ingest::validate_ref(reference)?;
        if total < 0 {
            return Err(Error::InvalidArgument(format!(
                "ingest ref {reference:?}: negative total {total}"
            )));
        }
        let expected = expected
            .filter(|e| !e.is_empty())
            .map(digest::parse)
            .transpose()?;
        let lease = lease.filter(|l| !l.is_empty());
        if let Some(l) = lease {
            // Checked before anything touches disk, so a bad lease leaves no ingest behind.
            self.lease_list_resources(ns, l)?;
        }
        if let Some(d) = &expected {
            self.record_if_present(ns, d, lease)?;
        }

        let key = ingest::key(ns, reference);
        let lock = RefLock::acquire(&self.inner, key.clone(), reference)?;
        let dir = self.inner.ingest_dir(&key);
        fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let meta = match ingest::read_meta(&dir)? {
            Some(mut meta) => {
                if meta.namespace != ns || meta.reference != reference {
                    return Err(Error::Internal(format!(
                        "ingest ref {reference:?}: metadata names another ref"
                    )));
                }
                // A resuming client may learn the total or expected digest late.
                let mut changed = false;
                if total > 0 && meta.total != total {
                    meta.total = total;
                    changed = true;
                }
                if let Some(d) = &expected {
                    if meta.expected.as_deref() != Some(d.as_str()) {
                        meta.expected = Some(d.to_string());
                        changed = true;
                    }
                }
                if changed {
                    ingest::write_meta(&dir, &meta)?;
                }
                meta
            }
            None => {
                let meta = IngestMeta {
                    namespace: ns.to_string(),
                    reference: reference.to_string(),
                    total,
                    expected: expected.as_ref().map(|d| d.to_string()),
                    started_at: now(),
                };
                ingest::write_meta(&dir, &meta)?;
                meta
            }
        };

        let data = dir.join(DATA);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data)
            .map_err(Error::io(format!("open {}", data.display())))?;
        let md = file
            .metadata()
            .map_err(Error::io(format!("stat {}", data.display())))?;
        let offset = i64::try_from(md.len())
            .map_err(|_| Error::Internal(format!("ingest ref {reference:?}: size overflow")))?;
        let hasher = hash_prefix(&file, offset)?;
        let updated_at = md.modified().unwrap_or(meta.started_at);

        if let Some(l) = lease {
            let txn = self.db().begin_write()?;
            db::ensure_namespace(&txn, ns)?;
            let r = LeaseResource {
                id: reference.to_string(),
                kind: KIND_INGESTS.to_string(),
            };
            leases::add_resource(&txn, ns, l, &r)?;
            txn.commit()?;
        }

        Ok(Writer {
            lock,
            ns: ns.to_string(),
            dir,
            file,
            hasher,
            offset,
            meta,
            updated_at,
            lease: lease.map(str::to_string),
            committed: false,
        })
    }

    /// The `expected` short-cut of [`Store::content_writer`]: Ok(()) when the blob is absent.
    fn record_if_present(&self, ns: &str, d: &Digest, lease: Option<&str>) -> Result<()> {
        let _blobs = self.inner.read_blobs();
        let txn = self.db().begin_write()?;
        let in_ns = txn.open_table(CONTENT)?.get((ns, d.as_str()))?.is_some();
        if !in_ns {
            let size = match fs::metadata(self.inner.blob_path(d.hex())) {
                Ok(md) => i64::try_from(md.len())
                    .map_err(|_| Error::Internal(format!("content {d}: size overflow")))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => {
                    return Err(Error::Io {
                        context: format!("stat blob {d}"),
                        source: e,
                    })
                }
            };
            record_content(&txn, ns, d.as_str(), size, Labels::new())?;
        }
        if let Some(l) = lease {
            let r = LeaseResource {
                id: d.to_string(),
                kind: KIND_CONTENT.to_string(),
            };
            leases::add_resource(&txn, ns, l, &r)?;
        }
        txn.commit()?;
        Err(Error::AlreadyExists(format!("content {d}")))
    }
}

/// Rebuilds the running hash over the first `len` bytes of `file`.
fn hash_prefix(file: &File, len: i64) -> Result<Sha256> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; REHASH_CHUNK];
    let mut pos: u64 = 0;
    let end = u64::try_from(len).unwrap_or(0);
    while pos < end {
        let n = usize::try_from((end - pos).min(REHASH_CHUNK as u64)).unwrap_or(REHASH_CHUNK);
        file.read_exact_at(&mut buf[..n], pos)
            .map_err(Error::io("re-read ingest data"))?;
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(hasher)
}

impl Writer {
    /// The ingest's status as this writer sees it (no I/O; a `Result` for API stability).
    pub fn status(&self) -> Result<IngestStatus> {
        Ok(IngestStatus {
            reference: self.meta.reference.clone(),
            offset: self.offset,
            total: self.meta.total,
            expected: self.meta.expected.clone(),
            started_at: self.meta.started_at,
            updated_at: self.updated_at,
        })
    }

    /// The digest of what has been written so far.
    pub fn digest(&self) -> String {
        Digest::from_sha256(&self.hasher.clone().finalize()).to_string()
    }

    /// Writes `data` at `offset`: equal to the current offset appends; smaller truncates to
    /// `offset` first (the kept prefix is re-hashed); larger is InvalidArgument.
    /// Returns the new offset.
    pub fn write(&mut self, offset: i64, data: &[u8]) -> Result<i64> {
        self.check_open()?;
        if offset < 0 || offset > self.offset {
            return Err(Error::InvalidArgument(format!(
                "ingest ref {:?}: write offset {offset} is not within 0..={}",
                self.meta.reference, self.offset
            )));
        }
        let len = i64::try_from(data.len())
            .ok()
            .and_then(|l| offset.checked_add(l))
            .ok_or_else(|| Error::InvalidArgument("write too large".into()))?;
        if offset < self.offset {
            self.file
                .set_len(offset as u64)
                .map_err(Error::io("truncate ingest data"))?;
            self.hasher = hash_prefix(&self.file, offset)?;
            self.offset = offset;
        }
        self.file
            .write_all_at(data, offset as u64)
            .map_err(Error::io("write ingest data"))?;
        self.hasher.update(data);
        self.offset = len;
        self.updated_at = now();
        Ok(self.offset)
    }

    /// Verifies and commits the data: `size` (0 = don't check) must equal what was written and
    /// the digest must match `expected` (or the one given when opening). Records the content in
    /// the namespace (and the writer's lease) and removes the ingest. If the blob already
    /// existed, it is recorded and AlreadyExists is returned, like containerd.
    pub fn commit(&mut self, size: i64, expected: Option<&str>, labels: Labels) -> Result<String> {
        self.check_open()?;
        labels::validate(&labels)?;
        if size < 0 {
            return Err(Error::InvalidArgument(format!(
                "negative commit size {size}"
            )));
        }
        if size != 0 && size != self.offset {
            return Err(Error::FailedPrecondition(format!(
                "unexpected commit size {}, expected {size}",
                self.offset
            )));
        }
        let actual = Digest::from_sha256(&self.hasher.clone().finalize());
        let expected = match expected.filter(|e| !e.is_empty()) {
            Some(e) => Some(digest::parse(e)?.to_string()),
            None => self.meta.expected.clone(),
        };
        if let Some(exp) = expected {
            if exp != actual.as_str() {
                return Err(Error::FailedPrecondition(format!(
                    "unexpected commit digest {actual}, expected {exp}"
                )));
            }
        }
        self.file
            .sync_all()
            .map_err(Error::io("fsync ingest data"))?;

        let inner = Arc::clone(&self.lock.inner);
        let existed = {
            let _blobs = inner.read_blobs();
            let blob = inner.blob_path(actual.hex());
            let existed = blob.exists();
            if !existed {
                fs::rename(self.dir.join(DATA), &blob).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => ingest::ingest_not_found(&self.meta.reference),
                    _ => Error::Io {
                        context: format!("rename ingest into {}", blob.display()),
                        source: e,
                    },
                })?;
                sync_dir(&inner.blobs_dir())?;
            }
            let txn = inner.db.begin_write()?;
            record_content(&txn, &self.ns, actual.as_str(), self.offset, labels)?;
            if let Some(l) = &self.lease {
                let content = LeaseResource {
                    id: actual.to_string(),
                    kind: KIND_CONTENT.to_string(),
                };
                leases::add_resource(&txn, &self.ns, l, &content)?;
                let ingest = LeaseResource {
                    id: self.meta.reference.clone(),
                    kind: KIND_INGESTS.to_string(),
                };
                leases::remove_resource(&txn, &self.ns, l, &ingest)?;
            }
            txn.commit()?;
            existed
        };
        self.committed = true;
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            // The content is committed; a leftover ingest dir is only clutter.
            tracing::warn!(dir = %self.dir.display(), error = %e, "removing committed ingest");
        }
        if existed {
            return Err(Error::AlreadyExists(format!("content {actual}")));
        }
        Ok(actual.to_string())
    }

    fn check_open(&self) -> Result<()> {
        if self.committed {
            return Err(Error::FailedPrecondition(format!(
                "ingest ref {:?}: already committed",
                self.meta.reference
            )));
        }
        Ok(())
    }
}

fn sync_dir(dir: &std::path::Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(format!("fsync {}", dir.display())))
}
