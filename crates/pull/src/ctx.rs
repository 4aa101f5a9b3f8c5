//! State shared by every step of one pull: where to write, under which lease, whom to tell.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use berth_snapshot::Snapshotter;
use berth_store::{LeaseResource, Store};

use crate::error::Result;
use crate::fetcher::{Fetcher, Progress};

pub(crate) struct Ctx<'a> {
    pub store: Arc<Store>,
    pub snapshotter: Arc<dyn Snapshotter>,
    /// Name used in labels and lease resource kinds.
    pub snapshotter_name: String,
    pub ns: String,
    pub lease: String,
    pub fetcher: &'a dyn Fetcher,
    pub progress: &'a (dyn Fn(Progress) + Send + Sync),
    /// Ingest refs this pull opened: aborted if the pull fails.
    pub ingests: Mutex<BTreeSet<String>>,
}

impl Ctx<'_> {
    /// A snapshot key as the backend sees it (namespaces share one backend).
    pub fn backend_key(&self, key: &str) -> String {
        format!("{}/{key}", self.ns)
    }

    pub fn track_ingest(&self, reference: &str) {
        self.ingests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(reference.to_string());
    }

    /// Keeps snapshot `key` (unprefixed) alive until the pull's lease goes.
    pub async fn lease_snapshot(&self, key: &str) -> Result<()> {
        let r = LeaseResource {
            id: key.to_string(),
            kind: format!(
                "{}{}",
                berth_store::resource_kinds::SNAPSHOTS_PREFIX,
                self.snapshotter_name
            ),
        };
        let (store, ns, lease) = (self.store.clone(), self.ns.clone(), self.lease.clone());
        blocking(move || Ok(store.lease_add_resource(&ns, &lease, r)?)).await
    }
}

/// Runs file or database work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await?
}
