//! Table layout of `metadata.redb` and small typed helpers over it.
//!
//! Every namespaced table is keyed by `(namespace, id)` so a namespace is one contiguous key
//! range; values are JSON (records are small, and JSON keeps the file inspectable and lets
//! records gain fields with `#[serde(default)]`).

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Result;
use crate::identifiers;
use crate::records::Namespace;

pub(crate) type NsKey = (&'static str, &'static str);
pub(crate) type Def = TableDefinition<'static, NsKey, &'static [u8]>;

pub(crate) const NAMESPACES: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("namespaces");
pub(crate) const IMAGES: Def = TableDefinition::new("images");
pub(crate) const CONTAINERS: Def = TableDefinition::new("containers");
pub(crate) const LEASES: Def = TableDefinition::new("leases");
pub(crate) const CONTENT: Def = TableDefinition::new("content");
/// `(namespace, lease id, resource kind, resource id)`; the key is the whole record.
pub(crate) const LEASE_RESOURCES: TableDefinition<
    'static,
    (&'static str, &'static str, &'static str, &'static str),
    (),
> = TableDefinition::new("lease_resources");

/// Creates every table so read transactions can open them unconditionally.
pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(NAMESPACES)?;
    for def in [IMAGES, CONTAINERS, LEASES, CONTENT] {
        txn.open_table(def)?;
    }
    txn.open_table(LEASE_RESOURCES)?;
    Ok(())
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(v)?)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(serde_json::from_slice(bytes)?)
}

/// Reads one `(ns, id)` record.
pub(crate) fn get<T: DeserializeOwned>(
    table: &impl ReadableTable<NsKey, &'static [u8]>,
    ns: &str,
    id: &str,
) -> Result<Option<T>> {
    match table.get((ns, id))? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

/// Reads every record of one namespace, in key order.
pub(crate) fn scan<T: DeserializeOwned>(
    table: &impl ReadableTable<NsKey, &'static [u8]>,
    ns: &str,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for entry in table.range((ns, "")..)? {
        let (k, v) = entry?;
        if k.value().0 != ns {
            break;
        }
        out.push(decode(v.value())?);
    }
    Ok(out)
}

/// True when the namespace holds at least one record in `table`.
pub(crate) fn ns_has_any(
    table: &impl ReadableTable<NsKey, &'static [u8]>,
    ns: &str,
) -> Result<bool> {
    match table.range((ns, "")..)?.next() {
        Some(entry) => Ok(entry?.0.value().0 == ns),
        None => Ok(false),
    }
}

/// containerd creates a namespace implicitly on first write; every write path calls this inside
/// its own transaction so the namespace and the object appear together.
pub(crate) fn ensure_namespace(txn: &WriteTransaction, name: &str) -> Result<()> {
    identifiers::validate(name)?;
    let mut table = txn.open_table(NAMESPACES)?;
    if table.get(name)?.is_none() {
        let ns = Namespace {
            name: name.to_string(),
            labels: Default::default(),
        };
        table.insert(name, encode(&ns)?.as_slice())?;
    }
    Ok(())
}
