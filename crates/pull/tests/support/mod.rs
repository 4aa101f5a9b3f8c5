//! Test doubles and fixtures: a Fetcher serving an OCI layout (or generated images) from
//! memory, with knobs to break a stream once and to serve a wrong blob, and counters.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use berth_image::{media_types as mt, Descriptor, Digest, Platform};
use berth_pull::{Error, Fetcher, Result};
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

const CHUNK: usize = 32 << 10;

#[derive(Default)]
pub struct LayoutFetcher {
    pub blobs: Mutex<HashMap<Digest, Bytes>>,
    pub refs: Mutex<HashMap<String, Descriptor>>,
    /// Cut this blob's stream after N bytes, once.
    pub cut_after: Mutex<HashMap<Digest, u64>>,
    /// Cut this blob's stream after N bytes, every time.
    pub always_cut: Mutex<HashMap<Digest, u64>>,
    /// Serve this body instead of the real one.
    pub wrong: Mutex<HashMap<Digest, Bytes>>,
    /// Every (digest, offset) asked of fetch_blob.
    pub blob_requests: Mutex<Vec<(Digest, u64)>>,
    /// Every digest asked of fetch.
    pub doc_requests: Mutex<Vec<Digest>>,
    pub in_flight: Arc<AtomicUsize>,
    pub max_in_flight: Arc<AtomicUsize>,
    /// Pause between chunks, to make downloads overlap.
    pub chunk_delay: Mutex<Duration>,
    /// Before the last chunk of this blob, wait (up to 10 s) until the check passes; the
    /// outcome is recorded in `gate_results`.
    pub gate: Mutex<HashMap<Digest, Gate>>,
    pub gate_results: Arc<Mutex<Vec<bool>>>,
}

pub type Gate = Arc<dyn Fn() -> bool + Send + Sync>;

struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl LayoutFetcher {
    /// Loads an OCI layout directory; `ref.name` annotations become `docker.io/library/<n>:latest`.
    pub fn from_layout(dir: &Path) -> LayoutFetcher {
        let f = LayoutFetcher::default();
        let blobs = dir.join("blobs/sha256");
        for e in std::fs::read_dir(&blobs).expect("read blobs") {
            let e = e.expect("entry");
            let body = std::fs::read(e.path()).expect("read blob");
            f.add_blob(body);
        }
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index"))
                .expect("index json");
        for m in index["manifests"].as_array().expect("manifests") {
            let d: Descriptor = serde_json::from_value(m.clone()).expect("descriptor");
            if let Some(n) = d.annotations.get("org.opencontainers.image.ref.name") {
                f.add_ref(&format!("docker.io/library/{n}:latest"), d.clone());
            }
        }
        f
    }

    pub fn add_blob(&self, body: Vec<u8>) -> Digest {
        let d = Digest::of(&body);
        self.blobs
            .lock()
            .expect("lock")
            .insert(d.clone(), Bytes::from(body));
        d
    }

    pub fn add_ref(&self, name: &str, d: Descriptor) {
        self.refs.lock().expect("lock").insert(name.to_string(), d);
    }

    pub fn desc_of(&self, media_type: &str, body: Vec<u8>) -> Descriptor {
        let size = body.len() as u64;
        Descriptor::new(media_type, self.add_blob(body), size)
    }

    /// Adds an image of `layers` (already-compressed bodies with their media types and the
    /// uncompressed tar they hold) for `arch`; returns the manifest descriptor.
    pub fn add_image(&self, arch: &str, layers: &[(Vec<u8>, &str, Vec<u8>)]) -> Descriptor {
        self.add_image_typed(arch, layers, mt::OCI_MANIFEST, mt::OCI_CONFIG)
    }

    /// [`LayoutFetcher::add_image`] with the manifest and config media types given (Docker
    /// schema 2 or OCI).
    pub fn add_image_typed(
        &self,
        arch: &str,
        layers: &[(Vec<u8>, &str, Vec<u8>)],
        manifest_type: &str,
        config_type: &str,
    ) -> Descriptor {
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|(_, _, tar)| Digest::of(tar).to_string())
            .collect();
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config = self.desc_of(config_type, serde_json::to_vec(&config).expect("json"));
        let layer_descs: Vec<Descriptor> = layers
            .iter()
            .map(|(body, t, _)| self.desc_of(t, body.clone()))
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": manifest_type,
            "config": config, "layers": layer_descs,
        });
        let mut d = self.desc_of(manifest_type, serde_json::to_vec(&manifest).expect("json"));
        d.platform = Some(Platform::new("linux", arch, ""));
        d
    }

    pub fn add_index(&self, manifests: Vec<Descriptor>) -> Descriptor {
        let index = serde_json::json!({
            "schemaVersion": 2, "mediaType": mt::OCI_INDEX, "manifests": manifests,
        });
        self.desc_of(mt::OCI_INDEX, serde_json::to_vec(&index).expect("json"))
    }

    pub fn blob_request_count(&self) -> usize {
        self.blob_requests.lock().expect("lock").len()
    }

    pub fn doc_request_count(&self) -> usize {
        self.doc_requests.lock().expect("lock").len()
    }
}

#[async_trait]
impl Fetcher for LayoutFetcher {
    async fn resolve(&self, reference: &str) -> Result<(String, Descriptor)> {
        let d = self
            .refs
            .lock()
            .expect("lock")
            .get(reference)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("reference {reference}")))?;
        Ok((reference.to_string(), d))
    }

    async fn fetch(&self, desc: &Descriptor) -> Result<Bytes> {
        self.doc_requests
            .lock()
            .expect("lock")
            .push(desc.digest.clone());
        self.blobs
            .lock()
            .expect("lock")
            .get(&desc.digest)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("blob {}", desc.digest)))
    }

    async fn fetch_blob(
        &self,
        desc: &Descriptor,
        offset: u64,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        self.blob_requests
            .lock()
            .expect("lock")
            .push((desc.digest.clone(), offset));
        let wrong = self.wrong.lock().expect("lock").get(&desc.digest).cloned();
        let body = match wrong {
            Some(b) => b,
            None => self
                .blobs
                .lock()
                .expect("lock")
                .get(&desc.digest)
                .cloned()
                .ok_or_else(|| Error::NotFound(format!("blob {}", desc.digest)))?,
        };
        let cut = self
            .cut_after
            .lock()
            .expect("lock")
            .remove(&desc.digest)
            .or_else(|| {
                self.always_cut
                    .lock()
                    .expect("lock")
                    .get(&desc.digest)
                    .copied()
            });
        let start = (offset as usize).min(body.len());
        let end = cut
            .map(|c| (c as usize).clamp(start, body.len()))
            .unwrap_or(body.len());
        let mut items: Vec<Result<Bytes>> = (start..end)
            .step_by(CHUNK)
            .map(|s| Ok(body.slice(s..(s + CHUNK).min(end))))
            .collect();
        if cut.is_some() {
            items.push(Err(Error::Unavailable(
                "connection reset (test cut)".into(),
            )));
        }
        let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(n, Ordering::SeqCst);
        let guard = InFlight(self.in_flight.clone());
        let delay = *self.chunk_delay.lock().expect("lock");
        let gate = self.gate.lock().expect("lock").get(&desc.digest).cloned();
        let results = self.gate_results.clone();
        let last = items.len().saturating_sub(1);
        let s = stream::iter(items.into_iter().enumerate()).then(move |(i, item)| {
            let _keep = &guard;
            let gate = gate.clone().filter(|_| i == last);
            let results = results.clone();
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if let Some(g) = gate {
                    let mut ok = false;
                    for _ in 0..1000 {
                        if g() {
                            ok = true;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    results.lock().expect("lock").push(ok);
                }
                item
            }
        });
        Ok(s.boxed())
    }
}

pub enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
}

pub fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        match e {
            Entry::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_cksum();
                b.append_data(&mut h, p, std::io::empty()).expect("dir");
            }
            Entry::File(p, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append_data(&mut h, p, *data).expect("file");
            }
        }
    }
    b.into_inner().expect("tar")
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 1).expect("zstd")
}

/// A temp root holding a store and an overlay snapshotter.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: Arc<berth_store::Store>,
    pub sn: Arc<dyn berth_snapshot::Snapshotter>,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("berth-pull-test-")
            .tempdir()
            .expect("tempdir");
        let store = Arc::new(berth_store::Store::open(&dir.path().join("store")).expect("store"));
        let sn: Arc<dyn berth_snapshot::Snapshotter> =
            Arc::new(berth_snapshot::open_overlay(&dir.path().join("snapshots")).expect("overlay"));
        Env { dir, store, sn }
    }

    /// Mounts a view of snapshot `chain` (namespace `ns`), runs `f` on it, cleans up.
    pub fn with_view<T>(&self, ns: &str, chain: &str, f: impl FnOnce(&Path) -> T) -> T {
        let key = format!("{ns}/view-{}", uuid_like());
        let mounts = self
            .sn
            .view(&key, Some(&format!("{ns}/{chain}")), HashMap::new())
            .expect("view");
        let out = {
            let m = berth_snapshot::mount::TempMount::new(&mounts).expect("mount view");
            let out = f(m.path());
            m.release().expect("unmount view");
            out
        };
        self.sn.remove(&key).expect("remove view");
        out
    }
}

fn uuid_like() -> String {
    format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

/// Removes every snapshot (children first) so no directory is left behind.
impl Drop for Env {
    fn drop(&mut self) {
        for _ in 0..16 {
            let Ok(list) = self.sn.list() else { return };
            if list.is_empty() {
                return;
            }
            for i in list {
                let _ = self.sn.remove(&i.name);
            }
        }
    }
}

/// Incompressible bytes (sha256 in counter mode), so compressed layers keep their size.
pub fn noise(n: usize, seed: u32) -> Vec<u8> {
    use sha2::{Digest as _, Sha256};
    let mut out = Vec::with_capacity(n + 32);
    let mut i = 0u64;
    while out.len() < n {
        let mut h = Sha256::new();
        h.update(seed.to_le_bytes());
        h.update(i.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        i += 1;
    }
    out.truncate(n);
    out
}
