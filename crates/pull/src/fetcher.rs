//! What the pull needs from a registry client, and what it reports while it works.

use async_trait::async_trait;
use berth_image::{Descriptor, PlatformMatcher};
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::Result;

/// The source of an image: a registry client in the daemon, a layout directory in tests.
#[async_trait]
pub trait Fetcher: Send + Sync {
    /// Normalised reference and the descriptor of what it names (index or manifest).
    async fn resolve(&self, reference: &str) -> Result<(String, Descriptor)>;
    /// A manifest/index/config body (bounded; the fetcher refuses > 4 MiB).
    async fn fetch(&self, desc: &Descriptor) -> Result<Bytes>;
    /// A blob body from `offset` (for resume).
    async fn fetch_blob(
        &self,
        desc: &Descriptor,
        offset: u64,
    ) -> Result<BoxStream<'static, Result<Bytes>>>;
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform to pick from an index (host by default).
    pub platform: PlatformMatcher,
    /// Fetch every manifest of an index; only the host's is unpacked.
    pub all_platforms: bool,
    /// Name used in GC labels and lease resources; empty means the snapshotter's own name.
    pub snapshotter: String,
    pub unpack: bool,
    pub max_concurrent_downloads: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: PlatformMatcher::host(),
            all_platforms: false,
            snapshotter: String::new(),
            unpack: true,
            max_concurrent_downloads: 3,
        }
    }
}

/// Progress events, in order per layer. Digests are `sha256:<hex>` strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The reference resolved to `digest` under the normalised `name`.
    Resolved {
        name: String,
        digest: String,
    },
    LayerStarted {
        digest: String,
        size: u64,
    },
    LayerBytes {
        digest: String,
        done: u64,
        total: u64,
    },
    /// The layer blob is committed (or was already present).
    LayerDone {
        digest: String,
    },
    /// The layer is applied and committed as snapshot `chain_id` (or it already existed).
    Unpacked {
        digest: String,
        chain_id: String,
    },
    /// The image record exists.
    Done {
        name: String,
        digest: String,
    },
}
