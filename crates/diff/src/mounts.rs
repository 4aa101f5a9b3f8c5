//! Applying a layer to the mounts of an active snapshot.

use std::io::Read;
use std::path::PathBuf;

use berth_snapshot::mount::TempMount;
use berth_snapshot::Mount;

use crate::apply::{apply_layer, Applied, ApplyOptions, WhiteoutMode};
use crate::error::{Error, Result};

/// Applies a layer onto `mounts`: straight into an overlay's upper dir or a bind mount's
/// source when possible (no mount needed), otherwise through a temporary mount.
pub fn apply_to_mounts(r: impl Read + Send, media_type: &str, mounts: &[Mount]) -> Result<Applied> {
    crate::media::check_media_type(media_type)?;
    if let [m] = mounts {
        if m.mount_type == "overlay" {
            let (upper, lowers) = overlay_dirs(m)?;
            let opts = ApplyOptions {
                whiteouts: WhiteoutMode::Overlay,
                parents: lowers,
            };
            return apply_layer(r, media_type, &upper, &opts);
        }
        if m.mount_type == "bind" {
            if m.options.iter().any(|o| o == "ro") {
                return Err(Error::InvalidArgument(format!(
                    "cannot apply a layer to read-only mount of {}",
                    m.source
                )));
            }
            let opts = ApplyOptions {
                whiteouts: WhiteoutMode::Remove,
                parents: Vec::new(),
            };
            return apply_layer(r, media_type, &PathBuf::from(&m.source), &opts);
        }
    }
    let tmp = TempMount::new(mounts)?;
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Remove,
        parents: Vec::new(),
    };
    let applied = apply_layer(r, media_type, tmp.path(), &opts)?;
    tmp.release()?;
    Ok(applied)
}

/// `upperdir` and the `lowerdir` list (nearest first) of an overlay mount.
fn overlay_dirs(m: &Mount) -> Result<(PathBuf, Vec<PathBuf>)> {
    let mut upper = None;
    let mut lowers = Vec::new();
    for opt in &m.options {
        if let Some(u) = opt.strip_prefix("upperdir=") {
            upper = Some(PathBuf::from(u));
        } else if let Some(l) = opt.strip_prefix("lowerdir=") {
            lowers = l
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect();
        }
    }
    let upper = upper.ok_or_else(|| {
        Error::InvalidArgument("overlay mount has no upperdir (read-only)".into())
    })?;
    Ok((upper, lowers))
}
