//! Leases: client-held references that keep content, ingests and snapshots alive through GC.

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use crate::db::{self, LEASES, LEASE_RESOURCES};
use crate::digest;
use crate::error::{Error, Result};
use crate::filters::Filter;
use crate::identifiers;
use crate::labels;
use crate::records::{Labels, Lease, LeaseResource};
use crate::resource_kinds::{CONTENT, INGESTS, SNAPSHOTS_PREFIX};
use crate::store::now;
use crate::Store;

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("lease {id:?}"))
}

fn validate_resource(r: &LeaseResource) -> Result<()> {
    if r.id.is_empty() {
        return Err(Error::InvalidArgument(
            "lease resource id must not be empty".into(),
        ));
    }
    match r.kind.as_str() {
        CONTENT => {
            digest::parse(&r.id)?;
        }
        INGESTS => {}
        k if k
            .strip_prefix(SNAPSHOTS_PREFIX)
            .is_some_and(|s| !s.is_empty() && !s.contains('/')) => {}
        k => {
            return Err(Error::InvalidArgument(format!(
                "unsupported lease resource type {k:?}"
            )))
        }
    }
    Ok(())
}

/// Fails with NotFound unless the lease exists (inside a write transaction).
pub(crate) fn require_lease(txn: &WriteTransaction, ns: &str, id: &str) -> Result<()> {
    let t = txn.open_table(LEASES)?;
    if t.get((ns, id))?.is_none() {
        return Err(not_found(id));
    }
    Ok(())
}

/// Adds a resource to an existing lease (inside a write transaction).
pub(crate) fn add_resource(
    txn: &WriteTransaction,
    ns: &str,
    lease: &str,
    r: &LeaseResource,
) -> Result<()> {
    require_lease(txn, ns, lease)?;
    let mut t = txn.open_table(LEASE_RESOURCES)?;
    t.insert((ns, lease, r.kind.as_str(), r.id.as_str()), ())?;
    Ok(())
}

pub(crate) fn remove_resource(
    txn: &WriteTransaction,
    ns: &str,
    lease: &str,
    r: &LeaseResource,
) -> Result<()> {
    let mut t = txn.open_table(LEASE_RESOURCES)?;
    t.remove((ns, lease, r.kind.as_str(), r.id.as_str()))?;
    Ok(())
}

/// Every resource of one lease.
pub(crate) fn resources(
    t: &impl ReadableTable<(&'static str, &'static str, &'static str, &'static str), ()>,
    ns: &str,
    lease: &str,
) -> Result<Vec<LeaseResource>> {
    let mut out = Vec::new();
    for entry in t.range((ns, lease, "", "")..)? {
        let (k, _) = entry?;
        let (kns, klease, kind, id) = k.value();
        if kns != ns || klease != lease {
            break;
        }
        out.push(LeaseResource {
            id: id.to_string(),
            kind: kind.to_string(),
        });
    }
    Ok(out)
}

/// Deletes a lease and all its resources (inside a write transaction).
pub(crate) fn delete_lease(txn: &WriteTransaction, ns: &str, id: &str) -> Result<bool> {
    let existed = txn.open_table(LEASES)?.remove((ns, id))?.is_some();
    let mut t = txn.open_table(LEASE_RESOURCES)?;
    for r in resources(&t, ns, id)? {
        t.remove((ns, id, r.kind.as_str(), r.id.as_str()))?;
    }
    Ok(existed)
}

impl Store {
    pub fn lease_create(&self, ns: &str, id: &str, labels: Labels) -> Result<Lease> {
        identifiers::validate_lease_id(id)?;
        labels::validate(&labels)?;
        let lease = Lease {
            id: id.to_string(),
            labels,
            created_at: now(),
        };
        let txn = self.db().begin_write()?;
        db::ensure_namespace(&txn, ns)?;
        {
            let mut t = txn.open_table(LEASES)?;
            if t.get((ns, id))?.is_some() {
                return Err(Error::AlreadyExists(format!("lease {id:?}")));
            }
            t.insert((ns, id), db::encode(&lease)?.as_slice())?;
        }
        txn.commit()?;
        Ok(lease)
    }

    /// Deletes the lease and releases its resources (they become collectable at the next GC).
    pub fn lease_delete(&self, ns: &str, id: &str) -> Result<()> {
        let txn = self.db().begin_write()?;
        if !delete_lease(&txn, ns, id)? {
            return Err(not_found(id));
        }
        txn.commit()?;
        Ok(())
    }

    pub fn lease_list(&self, ns: &str, filter: &Filter) -> Result<Vec<Lease>> {
        let txn = self.db().begin_read()?;
        let all: Vec<Lease> = db::scan(&txn.open_table(LEASES)?, ns)?;
        Ok(all.into_iter().filter(|l| filter.matches(l)).collect())
    }

    pub fn lease_add_resource(&self, ns: &str, id: &str, r: LeaseResource) -> Result<()> {
        validate_resource(&r)?;
        let txn = self.db().begin_write()?;
        db::ensure_namespace(&txn, ns)?;
        add_resource(&txn, ns, id, &r)?;
        txn.commit()?;
        Ok(())
    }

    /// Removes a resource from a lease; removing one the lease does not hold is not an error.
    pub fn lease_delete_resource(&self, ns: &str, id: &str, r: LeaseResource) -> Result<()> {
        validate_resource(&r)?;
        let txn = self.db().begin_write()?;
        require_lease(&txn, ns, id)?;
        remove_resource(&txn, ns, id, &r)?;
        txn.commit()?;
        Ok(())
    }

    pub fn lease_list_resources(&self, ns: &str, id: &str) -> Result<Vec<LeaseResource>> {
        let txn = self.db().begin_read()?;
        if txn.open_table(LEASES)?.get((ns, id))?.is_none() {
            return Err(not_found(id));
        }
        resources(&txn.open_table(LEASE_RESOURCES)?, ns, id)
    }
}
