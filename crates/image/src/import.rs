//! Archive import: ONE streaming pass over an OCI-layout tar or a docker-archive (`docker save`)
//! tar. Every blob is streamed into a [`BlobSink`] while its digest is computed; only JSON
//! documents (manifests, indexes, configs) are kept in memory, each bounded by
//! [`MAX_JSON_SIZE`] and all together by [`MAX_METADATA_CACHE`].
//!
//! Naming rules (documented because archives disagree):
//! - OCI layout: `io.containerd.image.name` wins (containerd's own exports set it); otherwise
//!   `org.opencontainers.image.ref.name`: a value containing `/`, `:` or `@` is a full reference
//!   (normalised, e.g. `busybox:1` → `docker.io/library/busybox:1`); a bare tag is named
//!   `<base_name>:<tag>` (ctr's prefix rule). Entries with neither are imported unnamed
//!   (their content is stored and labelled, but no image is returned for them).
//! - docker-archive: one image per `RepoTags` entry, normalised. No tags → unnamed.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};

use serde::Deserialize;

use crate::descriptor::Descriptor;
use crate::digest::{Digest, DigestReader};
use crate::error::{Error, Result};
use crate::labels::{self, Labels};
use crate::manifest::{self, Document, Manifest, MAX_JSON_SIZE};
use crate::media_types::{self as mt, Compression};
use crate::platform::PlatformMatcher;
use crate::reference::Reference;

/// Total bytes of JSON-looking blobs kept in memory during one import.
pub const MAX_METADATA_CACHE: u64 = 64 << 20;

pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Where imported blobs go. Implemented over gRPC by the CLI and in memory by [`crate::MemoryStore`].
pub trait BlobSink {
    /// Stores all bytes of `r` as one blob and returns its descriptor. When `expected` is given,
    /// the sink must not commit bytes that do not match it (digest and size) and may return
    /// without reading `r` if it already holds that blob.
    fn put(
        &mut self,
        expected: Option<&Descriptor>,
        media_type: &str,
        size_hint: Option<u64>,
        r: &mut dyn Read,
    ) -> Result<Descriptor>;

    /// Merges `labels` into the blob's labels.
    fn set_labels(&mut self, digest: &Digest, labels: &Labels) -> Result<()>;

    /// Whether the sink already holds the blob.
    fn exists(&mut self, digest: &Digest) -> Result<bool>;
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Prefix for OCI entries named only by a bare tag: `<base_name>:<tag>`.
    pub base_name: String,
    /// Require (and label) every platform's content, not only `platform`'s.
    pub all_platforms: bool,
    pub platform: PlatformMatcher,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            base_name: "import".to_string(),
            all_platforms: false,
            platform: PlatformMatcher::host(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    pub name: String,
    pub target: Descriptor,
}

/// What one pass over the tar collected.
#[derive(Default)]
struct Collected {
    /// Blobs stored in this pass: digest → size.
    blobs: HashMap<Digest, u64>,
    /// JSON-looking small blobs by digest (bounded, see [`MAX_METADATA_CACHE`]).
    json: HashMap<Digest, Vec<u8>>,
    json_total: u64,
    json_overflow: bool,
    oci_layout: Option<Vec<u8>>,
    index_json: Option<Vec<u8>>,
    manifest_json: Option<Vec<u8>>,
    /// Every regular file by archive path (docker-archive refers to files by path).
    files: HashMap<String, FileInfo>,
    /// Symlinks and hardlinks: path → target path (both archive-relative, normalised).
    links: HashMap<String, String>,
}

#[derive(Clone)]
struct FileInfo {
    digest: Digest,
    size: u64,
    compression: Compression,
}

/// Imports every image in the archive `tar` into `sink`. See the module docs for naming.
pub fn import(
    tar: impl Read,
    sink: &mut dyn BlobSink,
    opts: &ImportOptions,
) -> Result<Vec<ImportedImage>> {
    let c = collect(tar, sink)?;
    if let Some(index) = &c.index_json {
        let layout = c
            .oci_layout
            .as_deref()
            .ok_or_else(|| Error::UnknownArchive("index.json without oci-layout".into()))?;
        check_layout(layout)?;
        return import_oci(&c, index, sink, opts);
    }
    if let Some(m) = &c.manifest_json {
        return import_docker(&c, m, sink);
    }
    Err(Error::UnknownArchive(
        "neither index.json (OCI layout) nor manifest.json (docker-archive) found".into(),
    ))
}

/// Archive paths are compared after dropping `./` and empty components; `..` can only make a
/// name not match anything (we never touch the filesystem by archive path).
fn clean_path(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for comp in p.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

fn collect(tar: impl Read, sink: &mut dyn BlobSink) -> Result<Collected> {
    let mut c = Collected::default();
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(Error::Tar)? {
        let mut entry = entry.map_err(Error::Tar)?;
        let path = clean_path(&String::from_utf8_lossy(&entry.path_bytes()));
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let resolved = if kind.is_symlink() && !target.starts_with('/') {
                let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                clean_path(&format!("{dir}/{target}"))
            } else {
                clean_path(&target)
            };
            c.links.insert(path, resolved);
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = entry.header().size().map_err(Error::Tar)?;
        match path.as_str() {
            "oci-layout" => c.oci_layout = Some(manifest::read_bounded(&mut entry, "oci-layout")?),
            "index.json" => c.index_json = Some(manifest::read_bounded(&mut entry, "index.json")?),
            "manifest.json" => {
                c.manifest_json = Some(manifest::read_bounded(&mut entry, "manifest.json")?)
            }
            "repositories" => {}
            _ => {
                let expected = match path.strip_prefix("blobs/").and_then(|p| p.split_once('/')) {
                    Some(("sha256", hex)) => Some(Descriptor::new(
                        "",
                        Digest::from_hex(hex).map_err(|_| {
                            Error::malformed("OCI layout", format!("bad blob path {path:?}"))
                        })?,
                        size,
                    )),
                    // Other algorithms cannot be verified here: leave them out.
                    Some((_, _)) => continue,
                    None => None,
                };
                let info = store_blob(&mut c, sink, expected.as_ref(), size, &mut entry, &path)?;
                c.files.insert(path, info);
            }
        }
    }
    Ok(c)
}

/// Records the first bytes (for compression magic) and, for small JSON-looking blobs, the
/// whole content, while passing everything through.
struct Tee<R> {
    inner: R,
    head: Vec<u8>,
    full: Option<Vec<u8>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let data = &buf[..n];
        if self.head.len() < 8 {
            let take = (8 - self.head.len()).min(n);
            self.head.extend_from_slice(&data[..take]);
        }
        if let Some(full) = &mut self.full {
            full.extend_from_slice(data);
        }
        Ok(n)
    }
}

fn store_blob(
    c: &mut Collected,
    sink: &mut dyn BlobSink,
    expected: Option<&Descriptor>,
    size: u64,
    entry: &mut dyn Read,
    path: &str,
) -> Result<FileInfo> {
    let cache = size <= MAX_JSON_SIZE && !c.json_overflow;
    let mut tee = Tee {
        inner: DigestReader::new(entry),
        head: Vec::new(),
        full: cache.then(Vec::new),
    };
    let stored = sink.put(expected, "", Some(size), &mut tee)?;
    // The sink may skip a blob it already has: drain the rest so the digest covers every byte.
    io::copy(&mut tee, &mut io::sink())?;
    let digest = tee.inner.digest();
    let count = tee.inner.count();
    if count != size {
        return Err(Error::SizeMismatch {
            what: path.to_string(),
            expected: size,
            actual: count,
        });
    }
    let want = expected.map_or(&stored.digest, |e| &e.digest);
    if *want != digest {
        return Err(Error::DigestMismatch {
            what: path.to_string(),
            expected: want.to_string(),
            actual: digest.to_string(),
        });
    }
    if let Some(full) = tee.full.take() {
        let looks_json = full.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if looks_json {
            if c.json_total + full.len() as u64 > MAX_METADATA_CACHE {
                c.json_overflow = true;
            } else {
                c.json_total += full.len() as u64;
                c.json.insert(digest.clone(), full);
            }
        }
    }
    c.blobs.insert(digest.clone(), size);
    Ok(FileInfo {
        digest,
        size,
        compression: mt::detect_compression(&tee.head),
    })
}

fn check_layout(bytes: &[u8]) -> Result<()> {
    #[derive(Deserialize)]
    struct Layout {
        #[serde(rename = "imageLayoutVersion")]
        version: String,
    }
    let l: Layout = serde_json::from_slice(bytes).map_err(|e| Error::malformed("oci-layout", e))?;
    if l.version != mt::OCI_LAYOUT_VERSION {
        return Err(Error::UnknownArchive(format!(
            "unsupported OCI layout version {:?}",
            l.version
        )));
    }
    Ok(())
}

impl Collected {
    fn json_for(&self, d: &Descriptor) -> Result<&[u8]> {
        match self.json.get(&d.digest) {
            Some(b) => Ok(b),
            None if self.json_overflow => Err(Error::TooLarge {
                what: "archive metadata (manifests, indexes, configs)".into(),
                limit: MAX_METADATA_CACHE,
            }),
            None => Err(Error::malformed(
                "archive",
                format!("{} is not a JSON document", d.digest),
            )),
        }
    }

    /// `Ok(true)` when the blob is in this archive (with the right size) or already in the sink.
    fn present(&self, sink: &mut dyn BlobSink, d: &Descriptor) -> Result<bool> {
        match self.blobs.get(&d.digest) {
            Some(&size) if size == d.size => Ok(true),
            Some(&size) => Err(Error::SizeMismatch {
                what: d.digest.to_string(),
                expected: d.size,
                actual: size,
            }),
            None => sink.exists(&d.digest),
        }
    }
}

fn import_oci(
    c: &Collected,
    index_json: &[u8],
    sink: &mut dyn BlobSink,
    opts: &ImportOptions,
) -> Result<Vec<ImportedImage>> {
    let index = manifest::parse_index(index_json)?;
    let mut done = HashSet::new();
    let mut out = Vec::new();
    for desc in &index.manifests {
        walk(c, sink, opts, desc, true, &mut done)?;
        if let Some(name) = oci_name(desc, &opts.base_name)? {
            out.push(ImportedImage {
                name,
                target: desc.clone(),
            });
        }
    }
    Ok(out)
}

fn oci_name(desc: &Descriptor, base: &str) -> Result<Option<String>> {
    if let Some(n) = desc.annotations.get(ANNOTATION_IMAGE_NAME) {
        return Reference::parse(n).map(|r| Some(r.to_string()));
    }
    let Some(n) = desc.annotations.get(ANNOTATION_REF_NAME) else {
        return Ok(None);
    };
    if n.contains(['/', ':', '@']) {
        return Reference::parse(n).map(|r| Some(r.to_string()));
    }
    // A bare tag: validate it as one by parsing the resulting name.
    let name = format!("{base}:{n}");
    Reference::parse(&name)?;
    Ok(Some(name))
}

/// Checks a manifest / index and what it references, and labels them for GC. Returns whether
/// `desc` is present; a missing one is an error only when `required`.
fn walk(
    c: &Collected,
    sink: &mut dyn BlobSink,
    opts: &ImportOptions,
    desc: &Descriptor,
    required: bool,
    done: &mut HashSet<Digest>,
) -> Result<bool> {
    if !c.present(sink, desc)? {
        if required {
            return Err(Error::NotFound(format!(
                "blob {} ({}) referenced by the archive",
                desc.digest,
                if desc.media_type.is_empty() {
                    "unknown type"
                } else {
                    &desc.media_type
                }
            )));
        }
        return Ok(false);
    }
    if !done.insert(desc.digest.clone()) {
        return Ok(true);
    }
    if !c.blobs.contains_key(&desc.digest) {
        // Already in the sink from an earlier import: it was checked and labelled then.
        return Ok(true);
    }
    let known = desc.media_type.is_empty()
        || mt::is_manifest(&desc.media_type)
        || mt::is_index(&desc.media_type);
    if !known {
        return Err(Error::UnsupportedMediaType(desc.media_type.clone()));
    }
    match Document::parse(&desc.media_type, c.json_for(desc)?)? {
        Document::Manifest(m) => {
            for child in labels::manifest_children(&m) {
                if !c.present(sink, &child)? {
                    return Err(Error::NotFound(format!(
                        "blob {} ({}) referenced by manifest {}",
                        child.digest, child.media_type, desc.digest
                    )));
                }
            }
            sink.set_labels(&desc.digest, &labels::manifest_labels(&m))?;
            label_layers(c, sink, &m)?;
        }
        Document::Index(idx) => {
            // Like containerd's FilterPlatforms: other platforms' children are neither
            // required nor walked (they may legitimately be absent); the index labels still
            // name them so GC keeps whatever of them is present.
            for child in idx.manifests.iter().filter(|d| wanted(opts, d)) {
                walk(c, sink, opts, child, true, done)?;
            }
            sink.set_labels(&desc.digest, &labels::index_labels(&idx))?;
        }
    }
    Ok(true)
}

/// Descriptors without a platform are kept, as containerd does (nested indexes have none).
fn wanted(opts: &ImportOptions, d: &Descriptor) -> bool {
    opts.all_platforms || d.platform.as_ref().is_none_or(|p| opts.platform.matches(p))
}

/// Labels each layer with its diff id (from the config) when the config is in this archive.
fn label_layers(c: &Collected, sink: &mut dyn BlobSink, m: &Manifest) -> Result<()> {
    let Some(bytes) = c.json.get(&m.config.digest) else {
        return Ok(());
    };
    let config = manifest::parse_config(bytes)?;
    if config.rootfs.diff_ids.len() != m.layers.len() {
        return Err(Error::malformed(
            "image",
            format!(
                "manifest has {} layers but config {} has {} diff_ids",
                m.layers.len(),
                m.config.digest,
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    for (layer, diff_id) in m.layers.iter().zip(&config.rootfs.diff_ids) {
        sink.set_labels(&layer.digest, &labels::layer_labels(diff_id))?;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

impl Collected {
    fn docker_file(&self, path: &str) -> Result<&FileInfo> {
        let mut p = clean_path(path);
        // Bounded hop count: link cycles in a hostile archive must not loop forever.
        for _ in 0..16 {
            if let Some(f) = self.files.get(&p) {
                return Ok(f);
            }
            match self.links.get(&p) {
                Some(next) => p = next.clone(),
                None => break,
            }
        }
        Err(Error::NotFound(format!(
            "file {path:?} referenced by manifest.json"
        )))
    }
}

fn import_docker(
    c: &Collected,
    manifest_json: &[u8],
    sink: &mut dyn BlobSink,
) -> Result<Vec<ImportedImage>> {
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(manifest_json).map_err(|e| Error::malformed("manifest.json", e))?;
    let mut out = Vec::new();
    for e in entries {
        let cfg = c.docker_file(&e.config)?;
        let config_desc = Descriptor::new(mt::DOCKER_CONFIG, cfg.digest.clone(), cfg.size);
        let config = manifest::parse_config(c.json_for(&config_desc)?)?;
        let layers: Vec<Descriptor> = e
            .layers
            .iter()
            .map(|p| {
                c.docker_file(p).map(|f| {
                    Descriptor::new(
                        mt::docker_layer_type(f.compression),
                        f.digest.clone(),
                        f.size,
                    )
                })
            })
            .collect::<Result<_>>()?;
        let m = Manifest {
            schema_version: 2,
            media_type: Some(mt::DOCKER_MANIFEST.to_string()),
            config: config_desc,
            layers,
            annotations: Default::default(),
        };
        if config.rootfs.diff_ids.len() != m.layers.len() {
            return Err(Error::malformed(
                "manifest.json",
                format!(
                    "{} layers but config has {} diff_ids",
                    m.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            ));
        }
        let bytes = serde_json::to_vec(&m).map_err(|e| Error::malformed("manifest", e))?;
        let target = Descriptor::new(mt::DOCKER_MANIFEST, Digest::of(&bytes), bytes.len() as u64);
        sink.put(
            Some(&target),
            mt::DOCKER_MANIFEST,
            Some(target.size),
            &mut &bytes[..],
        )?;
        sink.set_labels(&target.digest, &labels::manifest_labels(&m))?;
        for (layer, diff_id) in m.layers.iter().zip(&config.rootfs.diff_ids) {
            sink.set_labels(&layer.digest, &labels::layer_labels(diff_id))?;
        }
        for tag in e.repo_tags.unwrap_or_default() {
            out.push(ImportedImage {
                name: Reference::parse(&tag)?.to_string(),
                target: target.clone(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path("./blobs//sha256/ab"), "blobs/sha256/ab");
        assert_eq!(clean_path("a/../../b"), "b");
        assert_eq!(clean_path("/abs/x"), "abs/x");
    }

    #[test]
    fn names_follow_documented_rule() {
        let d = |k: &str, v: &str| {
            let mut d = Descriptor::new(mt::OCI_MANIFEST, Digest::of(b"x"), 1);
            d.annotations.insert(k.into(), v.into());
            d
        };
        let n = |desc: Descriptor| oci_name(&desc, "base").expect("valid");
        assert_eq!(
            n(d(ANNOTATION_REF_NAME, "busybox:1")).as_deref(),
            Some("docker.io/library/busybox:1")
        );
        assert_eq!(
            n(d(ANNOTATION_REF_NAME, "v1.2")).as_deref(),
            Some("base:v1.2")
        );
        assert_eq!(
            n(d(ANNOTATION_IMAGE_NAME, "quay.io/a/b")).as_deref(),
            Some("quay.io/a/b:latest")
        );
        assert_eq!(n(Descriptor::new("", Digest::of(b"x"), 1)), None);
        assert!(oci_name(&d(ANNOTATION_REF_NAME, "Bad/Name:x"), "b").is_err());
    }
}
