//! Content records and reading blobs. A blob file is shared by every namespace that records it;
//! a namespace only sees the blobs it has a record for.

use std::fs::File;

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use crate::db::{self, CONTENT};
use crate::digest;
use crate::error::{Error, Result};
use crate::filters::Filter;
use crate::labels;
use crate::records::{ContentInfo, Labels};
use crate::store::now;
use crate::Store;

pub(crate) fn not_found(digest: &str) -> Error {
    Error::NotFound(format!("content {digest:?}"))
}

/// Records `digest` in `ns` unless it is there already. Returns true when a record was added.
pub(crate) fn record_content(
    txn: &WriteTransaction,
    ns: &str,
    digest: &str,
    size: i64,
    labels: Labels,
) -> Result<bool> {
    db::ensure_namespace(txn, ns)?;
    let mut t = txn.open_table(CONTENT)?;
    if t.get((ns, digest))?.is_some() {
        return Ok(false);
    }
    let ts = now();
    let info = ContentInfo {
        digest: digest.to_string(),
        size,
        labels,
        created_at: ts,
        updated_at: ts,
    };
    t.insert((ns, digest), db::encode(&info)?.as_slice())?;
    Ok(true)
}

impl Store {
    pub fn content_info(&self, ns: &str, digest: &str) -> Result<ContentInfo> {
        digest::parse(digest)?;
        let txn = self.db().begin_read()?;
        db::get(&txn.open_table(CONTENT)?, ns, digest)?.ok_or_else(|| not_found(digest))
    }

    /// Only labels are mutable. Field paths: `labels`, `labels.<k>`; empty replaces labels.
    pub fn content_update(
        &self,
        ns: &str,
        info: ContentInfo,
        fieldpaths: &[String],
    ) -> Result<ContentInfo> {
        digest::parse(&info.digest)?;
        let txn = self.db().begin_write()?;
        let updated = {
            let mut t = txn.open_table(CONTENT)?;
            let mut cur: ContentInfo =
                db::get(&t, ns, &info.digest)?.ok_or_else(|| not_found(&info.digest))?;
            if fieldpaths.is_empty() {
                cur.labels = info.labels;
            } else {
                for path in fieldpaths {
                    if !labels::apply_map_path(path, "labels", &mut cur.labels, &info.labels) {
                        return Err(Error::InvalidArgument(format!(
                            "cannot update {path:?} field on content {:?}",
                            info.digest
                        )));
                    }
                }
            }
            labels::validate(&cur.labels)?;
            cur.updated_at = now();
            t.insert((ns, cur.digest.as_str()), db::encode(&cur)?.as_slice())?;
            cur
        };
        txn.commit()?;
        Ok(updated)
    }

    pub fn content_list(&self, ns: &str, filter: &Filter) -> Result<Vec<ContentInfo>> {
        let txn = self.db().begin_read()?;
        let all: Vec<ContentInfo> = db::scan(&txn.open_table(CONTENT)?, ns)?;
        Ok(all.into_iter().filter(|c| filter.matches(c)).collect())
    }

    /// Removes the namespace's record. The blob file is removed by GC once no namespace
    /// records it.
    pub fn content_delete(&self, ns: &str, digest: &str) -> Result<()> {
        digest::parse(digest)?;
        let txn = self.db().begin_write()?;
        {
            let mut t = txn.open_table(CONTENT)?;
            if t.remove((ns, digest))?.is_none() {
                return Err(not_found(digest));
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Opens a blob for reading, with its size. NotFound when `ns` has no record of it.
    pub fn content_open(&self, ns: &str, digest: &str) -> Result<(File, i64)> {
        let d = digest::parse(digest)?;
        self.content_info(ns, digest)?;
        let path = self.inner.blob_path(d.hex());
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::NotFound(format!("content {digest:?}: blob file missing"))
            }
            _ => Error::Io {
                context: format!("open {}", path.display()),
                source: e,
            },
        })?;
        let len = file
            .metadata()
            .map_err(Error::io(format!("stat {}", path.display())))?
            .len();
        let size = i64::try_from(len)
            .map_err(|_| Error::Internal(format!("content {digest:?}: size overflow")))?;
        Ok((file, size))
    }
}
