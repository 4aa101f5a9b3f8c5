//! berth-store: containerd's metadata store (namespaces, images, containers, leases, content
//! records) on redb, the content blob store on plain files, containerd's list filters, and the
//! mark-and-sweep core of garbage collection.
//!
//! Layout under the root:
//! - `metadata.redb`: every record, namespaced; each change is one transaction.
//! - `content/blobs/sha256/<hex>`: committed blobs, shared by all namespaces.
//! - `content/ingest/<sha256(ns "\0" ref)>/`: in-progress writes (`data` + `meta.json`).
//!
//! The API is synchronous (the daemon calls it from `spawn_blocking`); [`Store`] is `Send + Sync`.
//!
//! Concurrency: metadata changes are serialised by redb's single writer. [`Store::gc`] assumes
//! the caller has paused other mutations (the daemon holds its own lock); it additionally
//! excludes content commits internally so a freshly renamed blob is never swept as an orphan.
//! Only one [`Store`] may be open on a root at a time (redb locks the database file).

pub mod digest;
pub mod error;
pub mod filters;
pub mod identifiers;
pub mod labels;

mod containers;
mod content;
mod db;
mod gc;
mod images;
mod ingest;
mod leases;
mod namespaces;
mod records;
mod store;
mod writer;

pub use error::{Error, ErrorKind, Result};
pub use filters::{Adaptor, Filter};
pub use gc::{GcReport, SnapshotNode};
pub use records::{
    AnyBlob, Container, ContentInfo, Descriptor, Image, IngestStatus, Labels, Lease, LeaseResource,
    Namespace, Runtime,
};
pub use store::Store;
pub use writer::Writer;

/// Well-known label names used by garbage collection (containerd's).
pub mod gc_labels {
    /// Marks content or a snapshot as a GC root.
    pub const ROOT: &str = "containerd.io/gc.root";
    /// On a lease: RFC3339 time after which the lease is expired.
    pub const EXPIRE: &str = "containerd.io/gc.expire";
    /// Content reference: exact key, or with a `.<anything>` suffix.
    pub const REF_CONTENT: &str = "containerd.io/gc.ref.content";
    /// Snapshot reference prefix: `containerd.io/gc.ref.snapshot.<snapshotter>[/<suffix>]`.
    pub const REF_SNAPSHOT_PREFIX: &str = "containerd.io/gc.ref.snapshot.";
}

/// Lease resource kinds (containerd's resource types).
pub mod resource_kinds {
    pub const CONTENT: &str = "content";
    pub const INGESTS: &str = "ingests";
    /// Followed by the snapshotter name.
    pub const SNAPSHOTS_PREFIX: &str = "snapshots/";
}
