//! The pull pipeline's source, backed by berth's registry client.

use berth_image::Descriptor;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

pub struct RegistryFetcher {
    pub client: berth_registry::Client,
    /// The reference being pulled: blobs are fetched from its repository.
    pub reference: String,
}

fn to_pull(e: berth_registry::Error) -> berth_pull::Error {
    use berth_registry::ErrorKind as K;
    if let berth_registry::Error::DigestMismatch {
        what,
        expected,
        actual,
    } = e
    {
        return berth_pull::Error::DigestMismatch {
            what,
            expected,
            actual,
        };
    }
    let msg = e.to_string();
    match e.kind() {
        K::NotFound => berth_pull::Error::NotFound(msg),
        K::Unauthenticated | K::PermissionDenied => berth_pull::Error::Unauthenticated(msg),
        K::InvalidArgument => berth_pull::Error::InvalidArgument(msg),
        K::TooLarge => berth_pull::Error::TooLarge(msg),
        K::Timeout => berth_pull::Error::Timeout(msg),
        K::Unavailable => berth_pull::Error::Unavailable(msg),
        _ => berth_pull::Error::Internal(msg),
    }
}

#[async_trait::async_trait]
impl berth_pull::Fetcher for RegistryFetcher {
    async fn resolve(&self, reference: &str) -> berth_pull::Result<(String, Descriptor)> {
        self.client.resolve(reference).await.map_err(to_pull)
    }

    async fn fetch(&self, desc: &Descriptor) -> berth_pull::Result<Bytes> {
        self.client
            .fetch_manifest(&self.reference, desc)
            .await
            .map_err(to_pull)
    }

    async fn fetch_blob(
        &self,
        desc: &Descriptor,
        offset: u64,
    ) -> berth_pull::Result<BoxStream<'static, berth_pull::Result<Bytes>>> {
        let stream = self
            .client
            .fetch_blob(&self.reference, desc, offset)
            .await
            .map_err(to_pull)?;
        Ok(stream.map(|r| r.map_err(to_pull)).boxed())
    }
}
