//! Namespaces: the top-level partition of every other record.

use redb::{ReadableDatabase, ReadableTable};

use crate::db::{self, CONTAINERS, CONTENT, IMAGES, LEASES, NAMESPACES};
use crate::error::{Error, Result};
use crate::identifiers;
use crate::labels;
use crate::records::{Labels, Namespace};
use crate::Store;

fn not_found(name: &str) -> Error {
    Error::NotFound(format!("namespace {name:?}"))
}

impl Store {
    pub fn namespace_create(&self, name: &str, labels: Labels) -> Result<Namespace> {
        identifiers::validate(name)?;
        labels::validate(&labels)?;
        let ns = Namespace {
            name: name.to_string(),
            labels,
        };
        let txn = self.db().begin_write()?;
        {
            let mut t = txn.open_table(NAMESPACES)?;
            if t.get(name)?.is_some() {
                return Err(Error::AlreadyExists(format!("namespace {name:?}")));
            }
            t.insert(name, db::encode(&ns)?.as_slice())?;
        }
        txn.commit()?;
        Ok(ns)
    }

    /// Creates the namespace if it does not exist (no error when it does).
    pub fn namespace_ensure(&self, name: &str) -> Result<()> {
        let txn = self.db().begin_write()?;
        db::ensure_namespace(&txn, name)?;
        txn.commit()?;
        Ok(())
    }

    pub fn namespace_get(&self, name: &str) -> Result<Namespace> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(NAMESPACES)?;
        let v = t.get(name)?.ok_or_else(|| not_found(name))?;
        db::decode(v.value())
    }

    pub fn namespace_list(&self) -> Result<Vec<Namespace>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(NAMESPACES)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            out.push(db::decode(entry?.1.value())?);
        }
        Ok(out)
    }

    /// Field paths: `labels` (replace) or `labels.<k>` (set, or remove when absent/empty in
    /// `labels`); empty = replace labels.
    pub fn namespace_update(
        &self,
        name: &str,
        labels: Labels,
        fieldpaths: &[String],
    ) -> Result<Namespace> {
        let txn = self.db().begin_write()?;
        let ns = {
            let mut t = txn.open_table(NAMESPACES)?;
            let mut ns: Namespace = {
                let v = t.get(name)?.ok_or_else(|| not_found(name))?;
                db::decode(v.value())?
            };
            if fieldpaths.is_empty() {
                ns.labels = labels;
            } else {
                for path in fieldpaths {
                    if !labels::apply_map_path(path, "labels", &mut ns.labels, &labels) {
                        return Err(Error::InvalidArgument(format!(
                            "cannot update {path:?} field on namespace {name:?}"
                        )));
                    }
                }
            }
            labels::validate(&ns.labels)?;
            t.insert(name, db::encode(&ns)?.as_slice())?;
            ns
        };
        txn.commit()?;
        Ok(ns)
    }

    /// Deletes an empty namespace (images, containers, content, leases). Snapshots are not
    /// visible to the store: the caller checks its snapshotters first, or uses
    /// [`Store::namespace_delete_with`].
    pub fn namespace_delete(&self, name: &str) -> Result<()> {
        self.namespace_delete_with(name, false)
    }

    /// Like [`Store::namespace_delete`], with the caller's answer to "does it hold snapshots?"
    /// folded into the same FailedPrecondition message.
    pub fn namespace_delete_with(&self, name: &str, has_snapshots: bool) -> Result<()> {
        let txn = self.db().begin_write()?;
        {
            let mut held = Vec::new();
            for (what, def) in [
                ("images", IMAGES),
                ("containers", CONTAINERS),
                ("content", CONTENT),
                ("leases", LEASES),
            ] {
                if db::ns_has_any(&txn.open_table(def)?, name)? {
                    held.push(what);
                }
            }
            if has_snapshots {
                held.push("snapshots");
            }
            let mut t = txn.open_table(NAMESPACES)?;
            if t.get(name)?.is_none() {
                return Err(not_found(name));
            }
            if !held.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "namespace {name:?} must be empty, but it still has {}",
                    held.join(", ")
                )));
            }
            t.remove(name)?;
        }
        txn.commit()?;
        Ok(())
    }
}
