//! Export to an OCI-layout tar: `oci-layout`, every reachable blob under `blobs/sha256/`, then
//! `index.json` naming each image. Blobs stream from the [`BlobSource`] straight into the tar;
//! only manifests and indexes (bounded) are read into memory to walk the graph.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};

use crate::descriptor::Descriptor;
use crate::digest::{Digest, DigestReader};
use crate::error::{Error, Result};
use crate::import::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
use crate::labels;
use crate::manifest::{self, Document, Index};
use crate::media_types as mt;
use crate::platform::PlatformMatcher;

/// Where exported blobs come from.
pub trait BlobSource {
    /// Opens a blob for reading; `Ok(None)` when the source does not have it.
    fn open(&mut self, desc: &Descriptor) -> Result<Option<Box<dyn Read + '_>>>;
    fn exists(&mut self, digest: &Digest) -> Result<bool>;
}

#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Platform whose content must be complete. Other platforms' manifests are included when
    /// all their blobs are present and silently skipped otherwise (as containerd does).
    pub platform: PlatformMatcher,
    /// Require every platform's content.
    pub all_platforms: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            platform: PlatformMatcher::host(),
            all_platforms: false,
        }
    }
}

struct Plan {
    /// Blobs to write, in order, without duplicates.
    order: Vec<Descriptor>,
    seen: HashSet<Digest>,
    /// Manifest / index bytes already read while walking (written from memory).
    docs: HashMap<Digest, Vec<u8>>,
}

/// Writes `images` (name, target) and everything they reference as an OCI-layout tar.
pub fn export(
    images: &[(String, Descriptor)],
    source: &mut dyn BlobSource,
    opts: &ExportOptions,
    out: impl Write,
) -> Result<()> {
    let mut plan = Plan {
        order: Vec::new(),
        seen: HashSet::new(),
        docs: HashMap::new(),
    };
    for (_, target) in images {
        let mut part = Vec::new();
        walk(source, opts, target, true, &mut plan, &mut part)?;
        push_all(&mut plan, part);
    }

    let mut tar = tar::Builder::new(out);
    let layout = format!(r#"{{"imageLayoutVersion":"{}"}}"#, mt::OCI_LAYOUT_VERSION);
    append_bytes(&mut tar, "oci-layout", layout.as_bytes())?;
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        tar.append_data(&mut h, dir, io::empty())?;
    }
    for desc in &plan.order {
        let path = format!("blobs/sha256/{}", desc.digest.hex());
        if let Some(bytes) = plan.docs.get(&desc.digest) {
            append_bytes(&mut tar, &path, bytes)?;
            continue;
        }
        let r = source
            .open(desc)?
            .ok_or_else(|| Error::NotFound(format!("blob {}", desc.digest)))?;
        let mut r = DigestReader::new(Exact {
            inner: r,
            left: desc.size,
        });
        let mut h = file_header(desc.size);
        tar.append_data(&mut h, &path, &mut r)?;
        if r.digest() != desc.digest {
            return Err(Error::DigestMismatch {
                what: path,
                expected: desc.digest.to_string(),
                actual: r.digest().to_string(),
            });
        }
    }
    let index = Index {
        schema_version: 2,
        media_type: Some(mt::OCI_INDEX.to_string()),
        manifests: images
            .iter()
            .map(|(name, target)| {
                let mut d = target.clone();
                d.annotations
                    .insert(ANNOTATION_REF_NAME.to_string(), name.clone());
                d.annotations
                    .insert(ANNOTATION_IMAGE_NAME.to_string(), name.clone());
                d
            })
            .collect(),
        annotations: Default::default(),
    };
    let bytes = serde_json::to_vec(&index).map_err(|e| Error::malformed("index.json", e))?;
    append_bytes(&mut tar, "index.json", &bytes)?;
    tar.into_inner()?.flush()?;
    Ok(())
}

fn push_all(plan: &mut Plan, part: Vec<Descriptor>) {
    for d in part {
        if plan.seen.insert(d.digest.clone()) {
            plan.order.push(d);
        }
    }
}

/// Adds `desc` and its children to `part` (children first). Returns false, adding nothing,
/// when something is missing and `required` is false.
fn walk(
    source: &mut dyn BlobSource,
    opts: &ExportOptions,
    desc: &Descriptor,
    required: bool,
    plan: &mut Plan,
    part: &mut Vec<Descriptor>,
) -> Result<bool> {
    let missing =
        |d: &Descriptor| Error::NotFound(format!("content {} ({})", d.digest, d.media_type));
    if !mt::is_manifest(&desc.media_type) && !mt::is_index(&desc.media_type) {
        return Err(Error::UnsupportedMediaType(desc.media_type.clone()));
    }
    let bytes = match plan.docs.get(&desc.digest) {
        Some(b) => b.clone(),
        None => {
            let Some(mut r) = source.open(desc)? else {
                return if required {
                    Err(missing(desc))
                } else {
                    Ok(false)
                };
            };
            let b = manifest::read_bounded(&mut r, &desc.media_type)?;
            let got = Digest::of(&b);
            if got != desc.digest {
                return Err(Error::DigestMismatch {
                    what: desc.media_type.clone(),
                    expected: desc.digest.to_string(),
                    actual: got.to_string(),
                });
            }
            b
        }
    };
    let mut mine = Vec::new();
    match Document::parse(&desc.media_type, &bytes)? {
        Document::Manifest(m) => {
            for child in labels::manifest_children(&m) {
                if !plan.seen.contains(&child.digest) && !source.exists(&child.digest)? {
                    return if required {
                        Err(missing(&child))
                    } else {
                        Ok(false)
                    };
                }
                mine.push(child);
            }
        }
        Document::Index(idx) => {
            for child in &idx.manifests {
                let wanted = opts.all_platforms
                    || child
                        .platform
                        .as_ref()
                        .is_none_or(|p| opts.platform.matches(p));
                let is_doc = mt::is_manifest(&child.media_type) || mt::is_index(&child.media_type);
                if !is_doc {
                    continue;
                }
                let mut sub = Vec::new();
                if walk(source, opts, child, wanted, plan, &mut sub)? {
                    mine.extend(sub);
                }
            }
        }
    }
    plan.docs.insert(desc.digest.clone(), bytes);
    mine.push(desc.clone());
    part.extend(mine);
    Ok(true)
}

fn file_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o444);
    h.set_size(size);
    h.set_mtime(0);
    h
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> Result<()> {
    let mut h = file_header(bytes.len() as u64);
    tar.append_data(&mut h, path, bytes)?;
    Ok(())
}

/// Yields exactly `left` bytes: a short source is an error rather than a corrupt tar entry.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "blob shorter than its descriptor size",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
