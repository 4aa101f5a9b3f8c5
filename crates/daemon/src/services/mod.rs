//! containerd's gRPC services, thin over the store, snapshotters and differ.

pub mod containers;
pub mod content;
pub mod diff;
pub mod events;
pub mod images;
pub mod introspection;
pub mod leases;
pub mod namespaces;
pub mod snapshots;
pub mod streaming;
pub mod tasks;
pub mod transfer;
pub mod version;

use std::sync::Arc;

use crate::daemon::Daemon;

/// Every service holds the daemon; this names the pattern once.
#[derive(Clone)]
pub struct Service(pub Arc<Daemon>);

impl std::ops::Deref for Service {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.0
    }
}
