//! The overlayfs snapshotter: each snapshot stores only its own changes (`fs`), and mounts
//! stack the parent chain as overlay lower dirs.

use std::path::Path;

use crate::engine::{Engine, Flavor};
use crate::error::Result;

/// Overlayfs snapshotter rooted at `<berth root>/snapshots/overlayfs`.
pub struct OverlaySnapshotter {
    engine: Engine,
}

impl OverlaySnapshotter {
    pub(crate) fn open(root: &Path) -> Result<Self> {
        Ok(OverlaySnapshotter {
            engine: Engine::open(
                root,
                Flavor::Overlay {
                    index_off: supports_index_off(),
                },
            )?,
        })
    }
}

/// The `index` module parameter exists exactly on kernels that understand `index=off`
/// (the same probe containerd uses); passing it elsewhere makes the mount fail.
fn supports_index_off() -> bool {
    Path::new("/sys/module/overlay/parameters/index").exists()
}

crate::delegate_snapshotter!(OverlaySnapshotter, "overlayfs");
