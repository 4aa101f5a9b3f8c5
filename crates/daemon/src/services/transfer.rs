//! containerd's Transfer service: pulls (registry → image store) run here, in berthd, with progress on a
//! client stream; pushes (image store → registry) too. Credentials come from berthd's config, or from
//! the client over its `auth_stream` (containerd's protocol: the server asks, the client answers).

use std::time::Duration;

use berth_api::server::transfer::transfer_server::Transfer;
use berth_api::services::v1::TransferRequest;
use berth_api::types::transfer::{
    AuthRequest, AuthResponse, ImageStore, OciRegistry, Progress as PbProgress,
};
use berth_api::types::Descriptor as PbDescriptor;
use berth_image::manifest::Document;
use berth_image::{Descriptor, Platform, PlatformMatcher, Reference};
use prost::Message;
use prost_types::Any;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::Service;
use crate::context;
use crate::daemon::blocking;
use crate::fetcher::RegistryFetcher;
use crate::status::IntoStatus;

const OCI_REGISTRY: &str = "containerd.types.transfer.OCIRegistry";
const IMAGE_STORE: &str = "containerd.types.transfer.ImageStore";
/// containerd's label naming the repositories of a registry a blob was pulled from.
const SOURCE_LABEL: &str = "containerd.io/distribution.source.";
/// Topic of pull progress on the event service.
pub const PULL_PROGRESS_TOPIC: &str = "/images/pull/progress";
/// Byte progress is published on the event service at most this often per layer.
const EVENT_BYTES_STEP: u64 = 16 << 20;
/// How long a client has to answer a credentials request on its auth stream.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

fn decode<M: Message + Default>(any: &Any, name: &str) -> Result<M, Status> {
    M::decode(any.value.as_slice())
        .map_err(|e| Status::invalid_argument(format!("bad {name}: {e}")))
}

fn kind_of(any: &Option<Any>) -> &str {
    any.as_ref()
        .map(|a| a.type_url.rsplit('/').next().unwrap_or(&a.type_url))
        .unwrap_or("")
}

pub fn pull_status(e: berth_pull::Error) -> Status {
    use berth_pull::ErrorKind as K;
    let msg = e.to_string();
    match e.kind() {
        K::NotFound => Status::not_found(msg),
        K::InvalidArgument | K::TooLarge => Status::invalid_argument(msg),
        K::DigestMismatch => Status::data_loss(msg),
        K::Unauthenticated => Status::unauthenticated(msg),
        K::Timeout => Status::deadline_exceeded(msg),
        K::Unavailable => Status::unavailable(msg),
        K::Internal => Status::internal(msg),
    }
}

pub fn registry_status(e: berth_registry::Error) -> Status {
    use berth_registry::ErrorKind as K;
    let msg = e.to_string();
    match e.kind() {
        K::NotFound => Status::not_found(msg),
        K::Unauthenticated => Status::unauthenticated(msg),
        K::PermissionDenied => Status::permission_denied(msg),
        K::InvalidArgument | K::TooLarge => Status::invalid_argument(msg),
        K::Timeout => Status::deadline_exceeded(msg),
        K::Unavailable => Status::unavailable(msg),
        K::DigestMismatch => Status::data_loss(msg),
        K::Internal => Status::internal(msg),
    }
}

/// Progress as containerd's transfer reports it (`containerd.types.transfer.Progress`).
fn progress_any(event: &str, name: &str, done: i64, total: i64) -> Any {
    berth_api::to_any(&PbProgress {
        event: event.into(),
        name: name.into(),
        parents: vec![],
        progress: done,
        total,
        desc: None::<PbDescriptor>,
    })
}

fn progress_to_pb(p: &berth_pull::Progress) -> Any {
    use berth_pull::Progress as P;
    match p {
        P::Resolved { name, digest } => progress_any("resolved", &format!("{name}@{digest}"), 0, 0),
        P::LayerStarted { digest, size } => progress_any("downloading", digest, 0, *size as i64),
        P::LayerBytes {
            digest,
            done,
            total,
        } => progress_any("downloading", digest, *done as i64, *total as i64),
        P::LayerDone { digest } => progress_any("complete", digest, 0, 0),
        P::Unpacked { digest, chain_id } => {
            progress_any("unpacked", &format!("{digest} {chain_id}"), 0, 0)
        }
        P::Done { name, digest } => progress_any("saved", &format!("{name}@{digest}"), 0, 0),
    }
}

impl Service {
    /// The registry client for one transfer: berthd's, or one reading the request's host dir, with
    /// credentials the client gave on its auth stream.
    async fn registry_for(
        &self,
        ns: &str,
        source: &OciRegistry,
        host: &str,
    ) -> Result<berth_registry::Client, Status> {
        let resolver = source.resolver.clone().unwrap_or_default();
        let mut client = if resolver.host_dir.is_empty() {
            self.registry.clone()
        } else {
            berth_registry::Client::new(berth_registry::RegistryConfig {
                config_path: Some(resolver.host_dir.clone().into()),
                ..Default::default()
            })
            .map_err(registry_status)?
        };
        if !resolver.auth_stream.is_empty() {
            let mut stream = self.streams.take(ns, &resolver.auth_stream)?;
            let ask = AuthRequest {
                host: host.to_string(),
                reference: source.reference.clone(),
                wwwauthenticate: vec![],
            };
            stream
                .to_client
                .send(Ok(berth_api::to_any(&ask)))
                .await
                .map_err(|_| Status::cancelled("auth stream closed"))?;
            let answer = tokio::time::timeout(AUTH_TIMEOUT, stream.from_client.recv())
                .await
                .map_err(|_| Status::deadline_exceeded("no answer on the auth stream"))?
                .ok_or_else(|| Status::cancelled("auth stream closed"))?;
            let auth: AuthResponse = decode(&answer, "AuthResponse")?;
            if !auth.username.is_empty() || !auth.secret.is_empty() {
                client = client.with_credentials(
                    host,
                    berth_registry::Credentials {
                        username: auth.username,
                        password: auth.secret,
                    },
                );
            }
        }
        Ok(client)
    }

    async fn pull(
        &self,
        ns: String,
        source: OciRegistry,
        dest: ImageStore,
        progress: Option<String>,
    ) -> Result<(), Status> {
        let reference = Reference::parse(&source.reference)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let client = self.registry_for(&ns, &source, &reference.domain).await?;
        let unpack = dest.unpacks.first().cloned();
        let snapshotter = self.snapshotter(
            unpack
                .as_ref()
                .map(|u| u.snapshotter.as_str())
                .unwrap_or(""),
        )?;
        let wanted = dest
            .platforms
            .first()
            .or(unpack.as_ref().and_then(|u| u.platform.as_ref()))
            .map(|p| PlatformMatcher::new(Platform::new(&p.os, &p.architecture, &p.variant)))
            .unwrap_or_else(PlatformMatcher::host);
        let opts = berth_pull::PullOptions {
            platform: wanted,
            all_platforms: dest.all_metadata,
            snapshotter: snapshotter.name().to_string(),
            unpack: !dest.unpacks.is_empty(),
            max_concurrent_downloads: self.max_concurrent_downloads,
        };
        let to_client = match &progress {
            Some(id) => Some(self.streams.take(&ns, id)?.to_client),
            None => None,
        };
        // Progress comes from inside the pull (synchronously); a task forwards it to the client.
        let (ptx, mut prx) = mpsc::unbounded_channel::<berth_pull::Progress>();
        // Subscribers of the event service see it too (`/images/pull/progress`), thinned: byte
        // counts at most every 16 MiB per layer, every other step as it happens.
        let events = self.events.clone();
        let ns_events = ns.clone();
        let forward = tokio::spawn(async move {
            let mut last_published: std::collections::HashMap<String, u64> = Default::default();
            let mut client_gone = false;
            while let Some(p) = prx.recv().await {
                let msg = progress_to_pb(&p);
                let publish = match &p {
                    berth_pull::Progress::LayerBytes {
                        digest,
                        done,
                        total,
                    } => {
                        let last = last_published.entry(digest.clone()).or_insert(0);
                        let due = *done >= *last + EVENT_BYTES_STEP || done == total;
                        if due {
                            *last = *done;
                        }
                        due
                    }
                    _ => true,
                };
                if publish {
                    events.publish_any(&ns_events, PULL_PROGRESS_TOPIC, Some(msg.clone()));
                }
                if let (Some(tx), false) = (&to_client, client_gone) {
                    // A client that stopped reading does not stop the pull.
                    client_gone = tx.send(Ok(msg)).await.is_err();
                }
            }
        });
        let result = self
            .run_pull(&ns, client, &source.reference, &opts, snapshotter, ptx)
            .await;
        let _ = forward.await;
        let image = result?;
        if !dest.name.is_empty() && dest.name != image.name {
            // The client asked for another name: the pulled image is stored under it too.
            let mut named = image.clone();
            named.name = dest.name.clone();
            let s = self.clone();
            let ns2 = ns.clone();
            blocking(move || match s.store.image_create(&ns2, named.clone()) {
                Err(e) if e.kind() == berth_store::ErrorKind::AlreadyExists => {
                    s.store.image_update(&ns2, named, &[]).status().map(|_| ())
                }
                r => r.status().map(|_| ()),
            })
            .await?;
        }
        Ok(())
    }

    /// One pull, shared by the Transfer service and CRI's PullImage: under the collector's shared
    /// hold, retried once when a host served a blob not matching its digest (the registry client
    /// then avoids that host for the blob); blobs get their source labels; `/images/create` goes out.
    pub async fn run_pull(
        &self,
        ns: &str,
        client: berth_registry::Client,
        reference: &str,
        opts: &berth_pull::PullOptions,
        snapshotter: std::sync::Arc<dyn berth_snapshot::Snapshotter>,
        progress: mpsc::UnboundedSender<berth_pull::Progress>,
    ) -> Result<berth_store::Image, Status> {
        let parsed =
            Reference::parse(reference).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let fetcher = RegistryFetcher {
            client,
            reference: reference.to_string(),
        };
        let span = tracing::info_span!("pull", ns = %ns, reference = %reference);
        let result = async {
            // A collection must not sweep what this pull made before its lease names it.
            let _hold = self.gc.hold().await;
            let mut retried = false;
            loop {
                let ptx = progress.clone();
                let r = berth_pull::pull(
                    self.store.clone(),
                    snapshotter.clone(),
                    ns,
                    &fetcher,
                    reference,
                    opts,
                    move |p| {
                        let _ = ptx.send(p);
                    },
                )
                .await;
                match r {
                    // What the first attempt committed is reused; the bad host is skipped now.
                    Err(e) if e.kind() == berth_pull::ErrorKind::DigestMismatch && !retried => {
                        tracing::warn!(error = %e, "blob did not match its digest; pulling again from the next host");
                        retried = true;
                    }
                    r => break r,
                }
            }
        }
        .instrument(span)
        .await;
        drop(progress);
        let image = result.map_err(pull_status)?;
        self.label_sources(ns, &image.target.digest, &image.target.media_type, &parsed)
            .await?;
        self.events.publish(
            ns,
            "/images/create",
            &berth_api::services::v1::ImageCreate {
                name: image.name.clone(),
                labels: image.labels.clone(),
            },
        );
        Ok(image)
    }

    /// A pull for the host platform into the default snapshotter, without progress (CRI).
    pub async fn pull_into(
        &self,
        ns: String,
        client: berth_registry::Client,
        reference: &str,
    ) -> Result<berth_store::Image, Status> {
        let snapshotter = self.snapshotter("")?;
        let opts = berth_pull::PullOptions {
            platform: PlatformMatcher::host(),
            all_platforms: false,
            snapshotter: snapshotter.name().to_string(),
            unpack: true,
            max_concurrent_downloads: self.max_concurrent_downloads,
        };
        let (ptx, _prx) = mpsc::unbounded_channel();
        self.run_pull(&ns, client, reference, &opts, snapshotter, ptx)
            .await
    }

    /// Records where the pulled blobs came from, as containerd does
    /// (`containerd.io/distribution.source.<host>` = repositories), so a push to another
    /// repository of that registry can mount them instead of uploading them again.
    async fn label_sources(
        &self,
        ns: &str,
        digest: &str,
        media_type: &str,
        from: &Reference,
    ) -> Result<(), Status> {
        let key = format!("{SOURCE_LABEL}{}", from.domain);
        let repo = from.path.clone();
        let mut todo = vec![(digest.to_string(), media_type.to_string())];
        while let Some((digest, media_type)) = todo.pop() {
            let s = self.clone();
            let (ns2, d2, key2, repo2) =
                (ns.to_string(), digest.clone(), key.clone(), repo.clone());
            // Blobs of other platforms were not pulled: nothing to label.
            let present = blocking(move || {
                let Ok(mut info) = s.store.content_info(&ns2, &d2) else {
                    return Ok(false);
                };
                let mut repos: Vec<String> = info
                    .labels
                    .get(&key2)
                    .map(|v| v.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
                if !repos.contains(&repo2) {
                    repos.push(repo2);
                    info.labels.insert(key2.clone(), repos.join(","));
                    s.store
                        .content_update(&ns2, info, &[format!("labels.{key2}")])
                        .status()?;
                }
                Ok(true)
            })
            .await?;
            if !present
                || !(berth_image::media_types::is_manifest(&media_type)
                    || berth_image::media_types::is_index(&media_type))
            {
                continue;
            }
            let body = self.read_blob(ns, &digest).await?;
            match Document::parse(&media_type, &body)
                .map_err(|e| Status::internal(e.to_string()))?
            {
                Document::Manifest(m) => {
                    for d in std::iter::once(&m.config).chain(m.layers.iter()) {
                        todo.push((d.digest.to_string(), d.media_type.clone()));
                    }
                }
                Document::Index(i) => {
                    for d in &i.manifests {
                        todo.push((d.digest.to_string(), d.media_type.clone()));
                    }
                }
            }
        }
        Ok(())
    }

    async fn push(&self, ns: String, source: ImageStore, dest: OciRegistry) -> Result<(), Status> {
        let target_ref = Reference::parse(&dest.reference)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let client = self.registry_for(&ns, &dest, &target_ref.domain).await?;
        let s = self.clone();
        let (ns2, name) = (ns.clone(), source.name.clone());
        let image = blocking(move || s.store.image_get(&ns2, &name).status()).await?;
        let top: Descriptor = serde_json::from_value(serde_json::json!({
            "mediaType": image.target.media_type, "digest": image.target.digest, "size": image.target.size,
        }))
        .map_err(|e| Status::internal(format!("image target: {e}")))?;
        let repo = target_ref.name();
        self.push_tree(&ns, &client, &repo, &top, &dest.reference)
            .await
    }

    /// Pushes a manifest's blobs, an index's manifests, and the document itself last.
    fn push_tree<'a>(
        &'a self,
        ns: &'a str,
        client: &'a berth_registry::Client,
        repo: &'a str,
        desc: &'a Descriptor,
        reference: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(), Status>> {
        Box::pin(async move {
            let body = self.read_blob(ns, &desc.digest.to_string()).await?;
            match Document::parse(&desc.media_type, &body)
                .map_err(|e| Status::invalid_argument(e.to_string()))?
            {
                Document::Manifest(m) => {
                    for blob in std::iter::once(&m.config).chain(m.layers.iter()) {
                        self.push_blob(ns, client, reference, blob).await?;
                    }
                }
                Document::Index(i) => {
                    for child in &i.manifests {
                        let digest = child.digest.to_string();
                        let s = self.clone();
                        let (ns2, d2) = (ns.to_string(), digest.clone());
                        // Other platforms' manifests may not be here; push what the store holds.
                        if blocking(move || Ok(s.store.content_info(&ns2, &d2).is_ok())).await? {
                            self.push_tree(ns, client, repo, child, &format!("{repo}@{digest}"))
                                .await?;
                        }
                    }
                }
            }
            client
                .push_manifest(reference, &desc.media_type, body.into())
                .await
                .map_err(registry_status)?;
            Ok(())
        })
    }

    async fn push_blob(
        &self,
        ns: &str,
        client: &berth_registry::Client,
        reference: &str,
        desc: &Descriptor,
    ) -> Result<(), Status> {
        if client
            .blob_exists(reference, desc)
            .await
            .map_err(registry_status)?
        {
            return Ok(());
        }
        let target =
            Reference::parse(reference).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let s = self.clone();
        let (ns2, digest) = (ns.to_string(), desc.digest.to_string());
        let key = format!("{SOURCE_LABEL}{}", target.domain);
        let (file, mount_from) = blocking(move || {
            let (file, _) = s.store.content_open(&ns2, &digest).status()?;
            // Another repository of the same registry has it: ask for a cross-repo mount.
            let from = s.store.content_info(&ns2, &digest).ok().and_then(|i| {
                i.labels
                    .get(&key)
                    .and_then(|v| v.split(',').find(|r| *r != target.path).map(str::to_string))
            });
            Ok((file, from))
        })
        .await?;
        client
            .push_blob(
                reference,
                desc,
                tokio::fs::File::from_std(file),
                mount_from.as_deref(),
            )
            .await
            .map_err(registry_status)
    }

    async fn read_blob(&self, ns: &str, digest: &str) -> Result<Vec<u8>, Status> {
        let s = self.clone();
        let (ns2, d2) = (ns.to_string(), digest.to_string());
        blocking(move || {
            let (mut file, size) = s.store.content_open(&ns2, &d2).status()?;
            if size > berth_registry::MAX_MANIFEST_SIZE as i64 {
                return Err(Status::invalid_argument(format!(
                    "{d2}: manifest over 4 MiB"
                )));
            }
            let mut buf = Vec::with_capacity(size as usize);
            std::io::Read::read_to_end(&mut file, &mut buf)
                .map_err(|e| Status::internal(format!("read {d2}: {e}")))?;
            Ok(buf)
        })
        .await
    }
}

#[tonic::async_trait]
impl Transfer for Service {
    async fn transfer(&self, req: Request<TransferRequest>) -> Result<Response<()>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        let progress = req
            .options
            .as_ref()
            .map(|o| o.progress_stream.clone())
            .filter(|s| !s.is_empty());
        match (kind_of(&req.source), kind_of(&req.destination)) {
            (OCI_REGISTRY, IMAGE_STORE) => {
                let source: OciRegistry = decode(&req.source.unwrap_or_default(), "OCIRegistry")?;
                let dest: ImageStore = decode(&req.destination.unwrap_or_default(), "ImageStore")?;
                self.pull(ns, source, dest, progress).await?;
            }
            (IMAGE_STORE, OCI_REGISTRY) => {
                let source: ImageStore = decode(&req.source.unwrap_or_default(), "ImageStore")?;
                let dest: OciRegistry = decode(&req.destination.unwrap_or_default(), "OCIRegistry")?;
                self.push(ns, source, dest).await?;
            }
            (src, dst) => {
                return Err(Status::unimplemented(format!(
                    "transfer from {src:?} to {dst:?} is not supported (berth transfers OCIRegistry <-> ImageStore)"
                )))
            }
        }
        Ok(Response::new(()))
    }
}
