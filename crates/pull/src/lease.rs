//! The pull's lease: everything written is attached to it, so a crash mid-pull leaves only
//! garbage that expires, and a finished pull hands ownership to the image record.

use std::sync::Arc;
use std::time::Duration;

use berth_store::{Labels, Store};

use crate::ctx::blocking;
use crate::error::{Error, Result};

/// How long a crashed pull's lease protects its content before GC may take it.
const EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

pub(crate) async fn create(store: &Arc<Store>, ns: &str) -> Result<String> {
    let id = format!("pull-{}", uuid::Uuid::new_v4().simple());
    let expire = (time::OffsetDateTime::now_utc() + EXPIRY)
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::Internal(format!("format lease expiry: {e}")))?;
    let labels = Labels::from([(berth_store::gc_labels::EXPIRE.to_string(), expire)]);
    let (store, ns2, id2) = (store.clone(), ns.to_string(), id.clone());
    blocking(move || {
        store.namespace_ensure(&ns2)?;
        store.lease_create(&ns2, &id2, labels)?;
        Ok(())
    })
    .await?;
    Ok(id)
}

pub(crate) async fn delete(store: &Arc<Store>, ns: &str, id: &str) {
    let (store, ns, id) = (store.clone(), ns.to_string(), id.to_string());
    let res = blocking(move || Ok(store.lease_delete(&ns, &id)?)).await;
    if let Err(e) = res {
        // The lease expires on its own; a leftover is harmless.
        tracing::warn!(error = %e, "deleting pull lease");
    }
}
