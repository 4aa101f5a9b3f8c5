//! Container records (metadata only: tasks live elsewhere).

use redb::{ReadableDatabase, ReadableTable};

use crate::db::{self, CONTAINERS};
use crate::error::{Error, Result};
use crate::filters::Filter;
use crate::identifiers;
use crate::labels;
use crate::records::Container;
use crate::store::now;
use crate::Store;

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("container {id:?}"))
}

fn validate(c: &Container) -> Result<()> {
    identifiers::validate(&c.id)?;
    labels::validate(&c.labels)?;
    if c.runtime.name.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "container {:?}: runtime name must be set",
            c.id
        )));
    }
    if c.spec.is_none() {
        return Err(Error::InvalidArgument(format!(
            "container {:?}: spec must be set",
            c.id
        )));
    }
    if !c.snapshot_key.is_empty() && c.snapshotter.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "container {:?}: snapshotter must be set with a snapshot key",
            c.id
        )));
    }
    if c.extensions.keys().any(String::is_empty) {
        return Err(Error::InvalidArgument(format!(
            "container {:?}: extension key must not be empty",
            c.id
        )));
    }
    Ok(())
}

impl Store {
    pub fn container_get(&self, ns: &str, id: &str) -> Result<Container> {
        let txn = self.db().begin_read()?;
        db::get(&txn.open_table(CONTAINERS)?, ns, id)?.ok_or_else(|| not_found(id))
    }

    pub fn container_list(&self, ns: &str, filter: &Filter) -> Result<Vec<Container>> {
        let txn = self.db().begin_read()?;
        let all: Vec<Container> = db::scan(&txn.open_table(CONTAINERS)?, ns)?;
        Ok(all.into_iter().filter(|c| filter.matches(c)).collect())
    }

    /// Creates a container record; timestamps are set by the store.
    pub fn container_create(&self, ns: &str, mut c: Container) -> Result<Container> {
        validate(&c)?;
        let txn = self.db().begin_write()?;
        db::ensure_namespace(&txn, ns)?;
        {
            let mut t = txn.open_table(CONTAINERS)?;
            if t.get((ns, c.id.as_str()))?.is_some() {
                return Err(Error::AlreadyExists(format!("container {:?}", c.id)));
            }
            let ts = now();
            c.created_at = ts;
            c.updated_at = ts;
            t.insert((ns, c.id.as_str()), db::encode(&c)?.as_slice())?;
        }
        txn.commit()?;
        Ok(c)
    }

    /// Field paths: `labels`, `labels.<k>`, `spec`, `image`, `snapshotkey`, `snapshotter`,
    /// `runtime`, `extensions`, `extensions.<k>`, `sandbox`. Empty replaces labels, spec,
    /// extensions, image and snapshot key, and (like containerd) refuses a different snapshotter
    /// or runtime name.
    pub fn container_update(
        &self,
        ns: &str,
        c: Container,
        fieldpaths: &[String],
    ) -> Result<Container> {
        identifiers::validate(&c.id)?;
        let txn = self.db().begin_write()?;
        db::ensure_namespace(&txn, ns)?;
        let updated = {
            let mut t = txn.open_table(CONTAINERS)?;
            let mut cur: Container = db::get(&t, ns, &c.id)?.ok_or_else(|| not_found(&c.id))?;
            if fieldpaths.is_empty() {
                if c.snapshotter != cur.snapshotter {
                    return Err(Error::InvalidArgument(format!(
                        "container {:?}: snapshotter field is immutable",
                        c.id
                    )));
                }
                if c.runtime.name != cur.runtime.name {
                    return Err(Error::InvalidArgument(format!(
                        "container {:?}: runtime name field is immutable",
                        c.id
                    )));
                }
                cur.labels = c.labels;
                cur.spec = c.spec;
                cur.extensions = c.extensions;
                cur.image = c.image;
                cur.snapshot_key = c.snapshot_key;
            } else {
                for path in fieldpaths {
                    apply_path(&mut cur, &c, path)?;
                }
            }
            validate(&cur)?;
            cur.updated_at = now();
            t.insert((ns, cur.id.as_str()), db::encode(&cur)?.as_slice())?;
            cur
        };
        txn.commit()?;
        Ok(updated)
    }

    pub fn container_delete(&self, ns: &str, id: &str) -> Result<()> {
        let txn = self.db().begin_write()?;
        {
            let mut t = txn.open_table(CONTAINERS)?;
            if t.remove((ns, id))?.is_none() {
                return Err(not_found(id));
            }
        }
        txn.commit()?;
        Ok(())
    }
}

fn apply_path(cur: &mut Container, from: &Container, path: &str) -> Result<()> {
    if labels::apply_map_path(path, "labels", &mut cur.labels, &from.labels)
        || labels::apply_map_path(path, "extensions", &mut cur.extensions, &from.extensions)
    {
        return Ok(());
    }
    match path {
        "spec" => cur.spec = from.spec.clone(),
        "image" => cur.image = from.image.clone(),
        "snapshotkey" => cur.snapshot_key = from.snapshot_key.clone(),
        "snapshotter" => cur.snapshotter = from.snapshotter.clone(),
        "runtime" => cur.runtime = from.runtime.clone(),
        "sandbox" => cur.sandbox = from.sandbox.clone(),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "cannot update {path:?} field on container {:?}",
                cur.id
            )))
        }
    }
    Ok(())
}
