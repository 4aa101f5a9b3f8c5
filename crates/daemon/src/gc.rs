//! Garbage collection: mark and sweep over content and snapshots of every namespace.
//!
//! Mutations (writes, creates, prepares) hold the shared side of a lock for the time of their change;
//! a collection holds the exclusive side, so it never sweeps something created half-way through it.
//! Deletes only schedule a collection; a burst of deletes gives one collection.

use std::sync::Arc;
use std::time::Duration;

use berth_store::SnapshotNode;
use tokio::sync::{Notify, RwLock, RwLockReadGuard};
use tonic::Status;

use crate::daemon::{backend_key, blocking, split_backend_key, Daemon};
use crate::status::IntoStatus;

pub struct Gc {
    lock: RwLock<()>,
    wake: Notify,
    delay: Duration,
}

#[derive(Default)]
pub struct Report {
    pub content: usize,
    pub blobs: usize,
    pub snapshots: usize,
}

impl Gc {
    pub fn new(delay: Duration) -> Gc {
        Gc {
            lock: RwLock::new(()),
            wake: Notify::new(),
            delay,
        }
    }

    /// Held by a mutation while it creates something a collection must not race with.
    pub async fn hold(&self) -> RwLockReadGuard<'_, ()> {
        self.lock.read().await
    }

    /// Asks for a collection soon (after deletes).
    pub fn schedule(&self) {
        self.wake.notify_one();
    }
}

/// Runs one collection now.
pub async fn collect(daemon: &Arc<Daemon>) -> Result<Report, Status> {
    let _exclusive = daemon.gc.lock.write().await;
    let d = daemon.clone();
    let report = blocking(move || sweep(&d)).await?;
    tracing::debug!(
        content = report.content,
        blobs = report.blobs,
        snapshots = report.snapshots,
        "garbage collection done"
    );
    Ok(report)
}

/// The background collector: waits for a schedule, lets the burst settle, collects.
pub fn spawn_collector(daemon: Arc<Daemon>) {
    tokio::spawn(async move {
        loop {
            daemon.gc.wake.notified().await;
            tokio::time::sleep(daemon.gc.delay).await;
            if let Err(e) = collect(&daemon).await {
                tracing::warn!(error = %e, "garbage collection failed");
            }
        }
    });
}

fn sweep(d: &Daemon) -> Result<Report, Status> {
    let mut nodes = Vec::new();
    for (name, sn) in &d.snapshotters {
        for info in sn.list().status()? {
            let Some((ns, key)) = split_backend_key(&info.name) else {
                continue;
            };
            nodes.push(SnapshotNode {
                ns: ns.to_string(),
                snapshotter: name.clone(),
                key: key.to_string(),
                parent: info
                    .parent
                    .as_deref()
                    .and_then(split_backend_key)
                    .map(|(_, p)| p.to_string()),
                labels: info.labels.clone(),
            });
        }
    }
    let gc = d.store.gc(&nodes).status()?;
    let mut report = Report {
        content: gc.removed_content.len(),
        blobs: gc.removed_blobs,
        snapshots: 0,
    };
    for node in gc.removed_snapshots {
        let Some(sn) = d.snapshotters.get(&node.snapshotter) else {
            continue;
        };
        match sn.remove(&backend_key(&node.ns, &node.key)) {
            Ok(()) => report.snapshots += 1,
            Err(e) => {
                tracing::warn!(ns = %node.ns, key = %node.key, error = %e, "gc: snapshot not removed")
            }
        }
    }
    Ok(report)
}
