//! Applying image layers (tar streams, possibly compressed) onto snapshot mounts.
//!
//! Layer data is hostile: entries are confined to the target root (no `..`, no symlink
//! escape, no hard link out), extension headers are bounded, and errors say what was wrong.

mod apply;
mod digest;
mod error;
mod guard;
mod media;
mod mounts;
mod path;
mod root;

pub use apply::{apply_layer, Applied, ApplyOptions, WhiteoutMode};
pub use error::{Error, ErrorKind, Result};
pub use media::{check_media_type, decompress};
pub use mounts::apply_to_mounts;
