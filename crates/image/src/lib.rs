//! berth-image: image logic with no daemon inside.
//!
//! Everything here is pure (no gRPC, no store): the CLI drives it over gRPC today and the daemon
//! can reuse it server-side later. Archives are processed as streams so multi-GB images never sit
//! in memory; only JSON documents (bounded to [`MAX_JSON_SIZE`]) are buffered.

pub mod chain;
pub mod descriptor;
pub mod digest;
pub mod error;
pub mod export;
pub mod import;
pub mod labels;
pub mod manifest;
pub mod media_types;
pub mod memory;
pub mod platform;
pub mod reference;
pub mod unpack;

pub use chain::{chain_id, chain_ids};
pub use descriptor::Descriptor;
pub use digest::Digest;
pub use error::{Error, ErrorKind, Result};
pub use export::{export, BlobSource, ExportOptions};
pub use import::{import, BlobSink, ImportOptions, ImportedImage};
pub use manifest::{Document, ImageConfig, Index, Manifest, MAX_JSON_SIZE};
pub use memory::MemoryStore;
pub use platform::{Platform, PlatformMatcher};
pub use reference::Reference;
pub use unpack::{plan_unpack, select_manifest, LayerStep};
