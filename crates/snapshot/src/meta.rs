//! The metastore: one redb file mapping snapshot keys to records.
//!
//! Keys are arbitrary client strings, so they only ever appear as redb keys; directories are
//! named by the numeric `id` allocated here.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::{Info, Kind};

/// key -> JSON-encoded [`Record`].
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
/// Counters; currently only `next_id`.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const NEXT_ID: &str = "next_id";

/// Longest parent chain we will walk; guards against a corrupted (cyclic) store.
const MAX_DEPTH: usize = 4096;

/// What is stored per snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub id: u64,
    pub kind: StoredKind,
    pub parent: Option<String>,
    pub labels: HashMap<String, String>,
    pub created_ns: u64,
    pub updated_ns: u64,
    /// Usage recorded at commit time (zero for active snapshots and views).
    pub size: i64,
    pub inodes: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StoredKind {
    View,
    Active,
    Committed,
}

impl From<StoredKind> for Kind {
    fn from(k: StoredKind) -> Kind {
        match k {
            StoredKind::View => Kind::View,
            StoredKind::Active => Kind::Active,
            StoredKind::Committed => Kind::Committed,
        }
    }
}

impl Record {
    pub fn kind(&self) -> Kind {
        self.kind.into()
    }

    pub fn info(&self, name: &str) -> Info {
        Info {
            name: name.to_string(),
            parent: self.parent.clone(),
            kind: self.kind(),
            labels: self.labels.clone(),
            created_at: from_ns(self.created_ns),
            updated_at: from_ns(self.updated_ns),
        }
    }
}

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_ns(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn decode(key: &str, bytes: &[u8]) -> Result<Record> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Metadata(format!("corrupt record for {key:?}: {e}")))
}

fn encode(rec: &Record) -> Result<Vec<u8>> {
    serde_json::to_vec(rec).map_err(|e| Error::Metadata(format!("encode record: {e}")))
}

/// Handle to the metadata database.
pub(crate) struct MetaStore {
    db: Database,
}

/// Read access used by both read and write transactions.
pub(crate) trait Lookup {
    fn get(&self, key: &str) -> Result<Option<Record>>;

    /// Ids of `key`'s ancestors, nearest first (not including `key` itself).
    fn ancestor_ids(&self, rec: &Record) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        let mut next = rec.parent.clone();
        while let Some(p) = next {
            if out.len() >= MAX_DEPTH {
                return Err(Error::Metadata(format!("parent chain too deep at {p:?}")));
            }
            let prec = self
                .get(&p)?
                .ok_or_else(|| Error::Metadata(format!("dangling parent {p:?}")))?;
            out.push(prec.id);
            next = prec.parent;
        }
        Ok(out)
    }
}

impl<T: ReadableTable<&'static str, &'static [u8]>> Lookup for T {
    fn get(&self, key: &str) -> Result<Option<Record>> {
        match ReadableTable::get(self, key)? {
            Some(v) => Ok(Some(decode(key, v.value())?)),
            None => Ok(None),
        }
    }
}

impl MetaStore {
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path)?;
        // Make sure tables exist so read transactions never see "table missing".
        let tx = db.begin_write()?;
        {
            tx.open_table(SNAPSHOTS)?;
            tx.open_table(COUNTERS)?;
        }
        tx.commit()?;
        Ok(MetaStore { db })
    }

    /// Runs `f` against a read-only view of the snapshots table.
    pub fn read<R>(
        &self,
        f: impl FnOnce(&redb::ReadOnlyTable<&'static str, &'static [u8]>) -> Result<R>,
    ) -> Result<R> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(SNAPSHOTS)?;
        f(&table)
    }

    /// Runs `f` inside one write transaction; commits only if `f` succeeds.
    ///
    /// `f` may perform a filesystem step that must happen before the commit (a rename);
    /// the caller undoes it if this returns an error.
    pub fn write<R>(&self, f: impl FnOnce(&mut WriteTx<'_>) -> Result<R>) -> Result<R> {
        let tx = self.db.begin_write()?;
        let result = {
            let snapshots = tx.open_table(SNAPSHOTS)?;
            let counters = tx.open_table(COUNTERS)?;
            let mut w = WriteTx {
                snapshots,
                counters,
            };
            f(&mut w)?
        };
        tx.commit()?;
        Ok(result)
    }
}

/// Tables open inside a write transaction.
pub(crate) struct WriteTx<'t> {
    snapshots: redb::Table<'t, &'static str, &'static [u8]>,
    counters: redb::Table<'t, &'static str, u64>,
}

impl<'t> WriteTx<'t> {
    pub fn lookup(&self) -> &(impl Lookup + use<'t>) {
        &self.snapshots
    }

    pub fn get(&self, key: &str) -> Result<Option<Record>> {
        Lookup::get(&self.snapshots, key)
    }

    pub fn put(&mut self, key: &str, rec: &Record) -> Result<()> {
        let bytes = encode(rec)?;
        self.snapshots.insert(key, bytes.as_slice())?;
        Ok(())
    }

    pub fn delete(&mut self, key: &str) -> Result<()> {
        self.snapshots.remove(key)?;
        Ok(())
    }

    /// Allocates a fresh directory id; ids are never reused.
    pub fn next_id(&mut self) -> Result<u64> {
        let current = self.counters.get(NEXT_ID)?.map(|v| v.value()).unwrap_or(1);
        self.counters.insert(NEXT_ID, current + 1)?;
        Ok(current)
    }

    /// True if any snapshot names `key` as its parent.
    pub fn has_children(&self, key: &str) -> Result<bool> {
        for item in self.snapshots.iter()? {
            let (k, v) = item?;
            let rec = decode(k.value(), v.value())?;
            if rec.parent.as_deref() == Some(key) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Every record, as `(key, record)`.
pub(crate) fn all<T: ReadableTable<&'static str, &'static [u8]>>(
    t: &T,
) -> Result<Vec<(String, Record)>> {
    let mut out = Vec::new();
    for item in t.iter()? {
        let (k, v) = item?;
        let key = k.value().to_string();
        let rec = decode(&key, v.value())?;
        out.push((key, rec));
    }
    Ok(out)
}
