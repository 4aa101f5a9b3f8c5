//! The daemon's shared state, handed to every service.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use berth_snapshot::Snapshotter;
use berth_store::Store;
use tonic::Status;

use crate::events::Exchange;
use crate::gc::Gc;

pub struct Daemon {
    pub store: Arc<Store>,
    pub snapshotters: BTreeMap<String, Arc<dyn Snapshotter>>,
    pub default_snapshotter: String,
    pub events: Exchange,
    pub gc: Gc,
    pub tasks: Arc<berth_runtime::TaskManager>,
    pub streams: crate::streams::Streams,
    pub registry: berth_registry::Client,
    pub max_concurrent_downloads: usize,
    pub uuid: String,
    pub root: PathBuf,
    pub cri: crate::cri::Cri,
}

impl Daemon {
    pub fn snapshotter(&self, name: &str) -> Result<Arc<dyn Snapshotter>, Status> {
        let name = if name.is_empty() {
            &self.default_snapshotter
        } else {
            name
        };
        self.snapshotters.get(name).cloned().ok_or_else(|| {
            Status::invalid_argument(format!("snapshotter {name:?} is not configured"))
        })
    }
}

/// Runs file and database work off the async runtime's threads.
pub async fn blocking<T, F>(f: F) -> Result<T, Status>
where
    F: FnOnce() -> Result<T, Status> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(crate::status::from_join)?
}

/// A snapshot key as the backend sees it: namespaces share one backend, so keys carry theirs.
pub fn backend_key(ns: &str, key: &str) -> String {
    format!("{ns}/{key}")
}

/// Splits a backend key into (namespace, key); namespaces never contain '/'.
pub fn split_backend_key(k: &str) -> Option<(&str, &str)> {
    k.split_once('/')
}
