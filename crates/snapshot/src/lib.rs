//! Snapshotters as containerd defines them: an overlayfs snapshotter and a native (copying)
//! one, behind the [`Snapshotter`] trait, plus helpers to perform the mounts they return.
//!
//! Namespacing is the caller's job: keys arrive already prefixed. Keys are never used as
//! paths; each snapshot lives in a directory named by a numeric id from the metastore.

mod engine;
mod error;
mod fsutil;
mod meta;
pub mod mount;
mod native;
mod overlay;
mod types;

use std::collections::HashMap;
use std::path::Path;

pub use error::{Error, ErrorKind, Result};
pub use native::NativeSnapshotter;
pub use overlay::OverlaySnapshotter;
pub use types::{Info, Kind, Mount, Usage};

/// A snapshotter backend. Synchronous: the daemon calls it from blocking threads.
pub trait Snapshotter: Send + Sync {
    /// "overlayfs" or "native".
    fn name(&self) -> &str;
    fn stat(&self, key: &str) -> Result<Info>;
    /// Updates labels only: fieldpaths "labels", "labels.<key>", or empty (replace labels).
    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info>;
    fn usage(&self, key: &str) -> Result<Usage>;
    /// Mounts of an active snapshot or view; a committed one is a FailedPrecondition.
    fn mounts(&self, key: &str) -> Result<Vec<Mount>>;
    fn prepare(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>>;
    fn view(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>>;
    fn commit(&self, name: &str, key: &str, labels: HashMap<String, String>) -> Result<()>;
    /// Removes a snapshot without children.
    fn remove(&self, key: &str) -> Result<()>;
    /// Every snapshot; the caller filters.
    fn list(&self) -> Result<Vec<Info>>;
    /// Removes directories no record points to (also run at open).
    fn cleanup(&self) -> Result<()>;
}

/// Opens (creating if needed) the overlayfs snapshotter rooted at `root`.
pub fn open_overlay(root: &Path) -> Result<OverlaySnapshotter> {
    OverlaySnapshotter::open(root)
}

/// Opens (creating if needed) the native snapshotter rooted at `root`.
pub fn open_native(root: &Path) -> Result<NativeSnapshotter> {
    NativeSnapshotter::open(root)
}

/// Implements [`Snapshotter`] for a newtype over `engine::Engine`.
macro_rules! delegate_snapshotter {
    ($ty:ty, $name:expr) => {
        impl $crate::Snapshotter for $ty {
            fn name(&self) -> &str {
                $name
            }
            fn stat(&self, key: &str) -> $crate::Result<$crate::Info> {
                self.engine.stat(key)
            }
            fn update(
                &self,
                info: $crate::Info,
                fieldpaths: &[String],
            ) -> $crate::Result<$crate::Info> {
                self.engine.update(info, fieldpaths)
            }
            fn usage(&self, key: &str) -> $crate::Result<$crate::Usage> {
                self.engine.usage(key)
            }
            fn mounts(&self, key: &str) -> $crate::Result<Vec<$crate::Mount>> {
                self.engine.mounts(key)
            }
            fn prepare(
                &self,
                key: &str,
                parent: Option<&str>,
                labels: std::collections::HashMap<String, String>,
            ) -> $crate::Result<Vec<$crate::Mount>> {
                self.engine
                    .create($crate::Kind::Active, key, parent, labels)
            }
            fn view(
                &self,
                key: &str,
                parent: Option<&str>,
                labels: std::collections::HashMap<String, String>,
            ) -> $crate::Result<Vec<$crate::Mount>> {
                self.engine.create($crate::Kind::View, key, parent, labels)
            }
            fn commit(
                &self,
                name: &str,
                key: &str,
                labels: std::collections::HashMap<String, String>,
            ) -> $crate::Result<()> {
                self.engine.commit(name, key, labels)
            }
            fn remove(&self, key: &str) -> $crate::Result<()> {
                self.engine.remove(key)
            }
            fn list(&self) -> $crate::Result<Vec<$crate::Info>> {
                self.engine.list()
            }
            fn cleanup(&self) -> $crate::Result<()> {
                self.engine.cleanup()
            }
        }
    };
}
pub(crate) use delegate_snapshotter;
