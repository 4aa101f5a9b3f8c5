//! CRI's image service over berth's images: an image's CRI id is its config digest, as containerd's;
//! every name pointing at it is a repo tag, and `<repository>@<manifest digest>` its repo digests.

use std::collections::BTreeMap;
use std::io::Read;

use berth_image::manifest::Document;
use berth_image::{select_manifest, PlatformMatcher, Reference};
use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::*;
use tonic::{Request, Response, Status};

use super::NAMESPACE;
use crate::daemon::blocking;
use crate::services::Service;
use crate::status::IntoStatus;

/// One image as the CRI sees it: its config digest and every name that points at it.
struct CriImage {
    id: String,
    size: u64,
    names: Vec<(String, String)>, // (name, target digest)
}

fn read_json(store: &berth_store::Store, digest: &str) -> Result<Vec<u8>, Status> {
    let (mut file, size) = store.content_open(NAMESPACE, digest).status()?;
    if size > berth_image::MAX_JSON_SIZE as i64 {
        return Err(Status::invalid_argument(format!("{digest}: over 4 MiB")));
    }
    let mut buf = Vec::with_capacity(size as usize);
    file.read_to_end(&mut buf)
        .map_err(|e| Status::internal(format!("read {digest}: {e}")))?;
    Ok(buf)
}

/// (config digest, size of the host platform's blobs) of an image target.
fn config_of(
    store: &berth_store::Store,
    target: &berth_store::Descriptor,
) -> Result<(String, u64), Status> {
    let bad = |e: berth_image::Error| Status::failed_precondition(e.to_string());
    let mut media_type = target.media_type.clone();
    let mut digest = target.digest.clone();
    let mut size = 0u64;
    for _ in 0..2 {
        let body = read_json(store, &digest)?;
        size += body.len() as u64;
        match Document::parse(&media_type, &body).map_err(bad)? {
            Document::Index(index) => {
                let chosen = select_manifest(&index, &PlatformMatcher::host()).map_err(bad)?;
                media_type = chosen.media_type.clone();
                digest = chosen.digest.to_string();
            }
            Document::Manifest(m) => {
                size += m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>();
                return Ok((m.config.digest.to_string(), size));
            }
        }
    }
    Err(Status::failed_precondition(format!(
        "image {}: nested index",
        target.digest
    )))
}

/// Every image of the CRI namespace, grouped by config digest.
fn cri_images(store: &berth_store::Store) -> Result<Vec<CriImage>, Status> {
    let filter = berth_store::filters::parse(&[]).status()?;
    let mut by_id: BTreeMap<String, CriImage> = BTreeMap::new();
    for img in store.image_list(NAMESPACE, &filter).status()? {
        // An image whose blobs are gone (or of another platform only) is not a runnable CRI image.
        let Ok((id, size)) = config_of(store, &img.target) else {
            continue;
        };
        by_id
            .entry(id.clone())
            .or_insert_with(|| CriImage {
                id,
                size,
                names: vec![],
            })
            .names
            .push((img.name, img.target.digest));
    }
    Ok(by_id.into_values().collect())
}

fn to_cri(img: &CriImage) -> Image {
    let mut repo_tags = Vec::new();
    let mut repo_digests = Vec::new();
    for (name, digest) in &img.names {
        let Ok(r) = Reference::parse(name) else {
            continue;
        };
        if r.tag.is_some() && r.digest.is_none() {
            repo_tags.push(name.clone());
        }
        let repo_digest = format!("{}@{digest}", r.name());
        if !repo_digests.contains(&repo_digest) {
            repo_digests.push(repo_digest);
        }
    }
    Image {
        id: img.id.clone(),
        repo_tags,
        repo_digests,
        size: img.size,
        ..Default::default()
    }
}

/// The image a CRI image spec names: an id (config digest, full or unique prefix), a name, or a
/// repo digest.
fn find(images: &[CriImage], wanted: &str) -> Option<usize> {
    if wanted.is_empty() {
        return None;
    }
    let by_id = |id: &str| images.iter().position(|i| i.id == id);
    if let Some(i) = by_id(wanted).or_else(|| by_id(&format!("sha256:{wanted}"))) {
        return Some(i);
    }
    // crictl shows (and accepts) truncated ids: a unique prefix of one image's digest names it.
    let hex = wanted.trim_start_matches("sha256:");
    if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut hits = images
            .iter()
            .enumerate()
            .filter(|(_, i)| i.id["sha256:".len()..].starts_with(hex));
        if let (Some((i, _)), None) = (hits.next(), hits.next()) {
            return Some(i);
        }
    }
    if let Ok(r) = Reference::parse(wanted) {
        let name = r.to_string();
        if let Some(i) = images
            .iter()
            .position(|i| i.names.iter().any(|(n, _)| *n == name))
        {
            return Some(i);
        }
        if let Some(d) = &r.digest {
            let repo = r.name();
            return images.iter().position(|i| {
                i.names.iter().any(|(n, t)| {
                    t == &d.to_string()
                        && Reference::parse(n)
                            .map(|x| x.name() == repo)
                            .unwrap_or(false)
                })
            });
        }
    }
    None
}

fn spec_image(spec: Option<ImageSpec>) -> Result<String, Status> {
    let image = spec.map(|s| s.image).unwrap_or_default();
    if image.is_empty() {
        return Err(Status::invalid_argument("image spec names no image"));
    }
    Ok(image)
}

/// CRI credentials: username/password, or `auth` = base64("user:password").
fn credentials(auth: Option<AuthConfig>) -> Result<Option<berth_registry::Credentials>, Status> {
    let Some(a) = auth else { return Ok(None) };
    if !a.username.is_empty() || !a.password.is_empty() {
        return Ok(Some(berth_registry::Credentials {
            username: a.username,
            password: a.password,
        }));
    }
    if !a.auth.is_empty() {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .map_err(|e| Status::invalid_argument(format!("auth config: bad base64: {e}")))?;
        let text = String::from_utf8(raw)
            .map_err(|_| Status::invalid_argument("auth config: not UTF-8"))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| Status::invalid_argument("auth config: expected user:password"))?;
        return Ok(Some(berth_registry::Credentials {
            username: u.into(),
            password: p.into(),
        }));
    }
    Ok(None)
}

#[tonic::async_trait]
impl ImageService for Service {
    async fn list_images(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let wanted = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .unwrap_or_default();
        let s = self.clone();
        let images = blocking(move || cri_images(&s.store)).await?;
        let images = match find(&images, &wanted) {
            Some(i) => vec![to_cri(&images[i])],
            None if wanted.is_empty() => images.iter().map(to_cri).collect(),
            None => vec![],
        };
        Ok(Response::new(ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        req: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let req = req.into_inner();
        let wanted = spec_image(req.image)?;
        let s = self.clone();
        let images = blocking(move || cri_images(&s.store)).await?;
        // CRI: an image that is not there is an empty answer, not an error.
        let image = find(&images, &wanted).map(|i| to_cri(&images[i]));
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            if let Some(i) = find(&images, &wanted) {
                info.insert(
                    "info".to_string(),
                    serde_json::json!({"id": images[i].id, "names": images[i].names.iter().map(|(n, _)| n).collect::<Vec<_>>()})
                        .to_string(),
                );
            }
        }
        Ok(Response::new(ImageStatusResponse { image, info }))
    }

    async fn pull_image(
        &self,
        req: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let req = req.into_inner();
        let wanted = spec_image(req.image)?;
        let reference =
            Reference::parse(&wanted).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut client = self.registry.clone();
        if let Some(c) = credentials(req.auth)? {
            client = client.with_credentials(&reference.domain, c);
        }
        let name = reference.to_string();
        self.pull_into(NAMESPACE.to_string(), client, &name).await?;
        let s = self.clone();
        let images = blocking(move || cri_images(&s.store)).await?;
        let id = find(&images, &name)
            .map(|i| images[i].id.clone())
            .ok_or_else(|| Status::internal(format!("pulled {name} but cannot find its config")))?;
        Ok(Response::new(PullImageResponse { image_ref: id }))
    }

    async fn remove_image(
        &self,
        req: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let wanted = spec_image(req.into_inner().image)?;
        let s = self.clone();
        blocking(move || {
            let images = cri_images(&s.store)?;
            // Removing what is not there succeeds: the kubelet retries removals.
            let Some(i) = find(&images, &wanted) else {
                return Ok(());
            };
            for (name, _) in &images[i].names {
                match s.store.image_delete(NAMESPACE, name) {
                    Err(e) if e.kind() != berth_store::ErrorKind::NotFound => {
                        return Err(crate::status::from_store(e))
                    }
                    _ => {}
                }
            }
            Ok(())
        })
        .await?;
        self.gc.schedule();
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _req: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        let mountpoint = self.root.join("snapshots").join(&self.default_snapshotter);
        let dir = mountpoint.clone();
        let (bytes, inodes) = blocking(move || Ok(disk_usage(&dir))).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let usage = FilesystemUsage {
            timestamp: now,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: mountpoint.display().to_string(),
            }),
            used_bytes: Some(UInt64Value { value: bytes }),
            inodes_used: Some(UInt64Value { value: inodes }),
        };
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![usage],
            container_filesystems: vec![],
        }))
    }
}

/// Bytes (allocated blocks) and inodes under `dir`, hard links once.
fn disk_usage(dir: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if seen.insert((m.dev(), m.ino())) {
                bytes += m.blocks() * 512;
                inodes += 1;
            }
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

/// An image ready to run: its CRI id, a name that points at it, its config blob and the
/// snapshot (chain id) of its unpacked layers.
pub struct RunnableImage {
    pub id: String,
    pub name: String,
    pub config: Vec<u8>,
    pub chain_id: String,
}

/// The image a CRI request names (name, id, unique id prefix or repo digest); None if absent.
pub fn resolve_runnable(
    store: &berth_store::Store,
    wanted: &str,
) -> Result<Option<RunnableImage>, Status> {
    let images = cri_images(store)?;
    let Some(i) = find(&images, wanted) else {
        return Ok(None);
    };
    let Some((name, _)) = images[i].names.first().cloned() else {
        return Ok(None);
    };
    let img = store.image_get(NAMESPACE, &name).status()?;
    let (config_digest, _) = config_of(store, &img.target)?;
    let config = read_json(store, &config_digest)?;
    let parsed: berth_image::ImageConfig = serde_json::from_slice(&config)
        .map_err(|e| Status::failed_precondition(format!("image {name}: config: {e}")))?;
    let chain = berth_image::chain_id(&parsed.rootfs.diff_ids)
        .ok_or_else(|| Status::failed_precondition(format!("image {name} has no layers")))?;
    Ok(Some(RunnableImage {
        id: images[i].id.clone(),
        name,
        config,
        chain_id: chain.to_string(),
    }))
}
