//! Rootfs mounts from a CreateTask request, mounted under `<bundle>/rootfs`.

use std::path::Path;

use containerd_shim_protos::api::Mount;

use crate::error::{Error, Result};

/// Mounts each entry onto `target` in order; on failure undoes what was mounted.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    std::fs::create_dir_all(target).map_err(Error::io(format!("mkdir {}", target.display())))?;
    for m in mounts {
        let r = containerd_shim::mount::mount_rootfs(
            Some(m.type_.as_str()).filter(|t| !t.is_empty()),
            Some(m.source.as_str()).filter(|s| !s.is_empty()),
            &m.options,
            target,
        );
        if let Err(e) = r {
            unmount(target);
            return Err(Error::Other(format!(
                "mount {} ({}) on {}: {e}",
                m.source,
                m.type_,
                target.display()
            )));
        }
    }
    Ok(())
}

/// Unmounts everything at or below `target` (best effort, lazily if busy).
pub fn unmount(target: &Path) {
    let Some(t) = target.to_str() else { return };
    if let Err(e) = containerd_shim::mount::umount_recursive(Some(t), 0) {
        log::warn!("unmount {t}: {e}; detaching");
        let _ = containerd_shim::mount::umount_recursive(Some(t), libc::MNT_DETACH);
    }
}
