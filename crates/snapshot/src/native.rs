//! The native snapshotter: each snapshot is a full copy of its parent, mounted with a bind
//! mount. Works on any filesystem, at the cost of disk space and copy time.

use std::path::Path;

use crate::engine::{Engine, Flavor};
use crate::error::Result;

/// Native (copying) snapshotter rooted at `<berth root>/snapshots/native`.
pub struct NativeSnapshotter {
    engine: Engine,
}

impl NativeSnapshotter {
    pub(crate) fn open(root: &Path) -> Result<Self> {
        Ok(NativeSnapshotter {
            engine: Engine::open(root, Flavor::Native)?,
        })
    }
}

crate::delegate_snapshotter!(NativeSnapshotter, "native");
