//! Pulling: resolve a reference to a descriptor, fetch manifests (bounded, verified) and blobs
//! (streamed, resumable with `Range`, stall-bounded, verified when read from the start).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use berth_image::{media_types, Descriptor, Digest, Reference};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::{header, Method, StatusCode};
use sha2::{Digest as _, Sha256};

use crate::client::{content_length, error_chain, read_limited, status_error, Access, Client};
use crate::error::{Error, Result};
use crate::hosts::{Capability, RegistryHost};

/// Manifests and indexes are JSON documents; bigger ones are refused before being read.
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;

/// What `resolve` accepts, most specific first (as containerd sends it).
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, */*;q=0.8";

/// A stream of blob bytes.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

pub(crate) fn parse_ref(reference: &str) -> Result<Reference> {
    Reference::parse(reference).map_err(|e| Error::InvalidArgument(e.to_string()))
}

/// `<base>/<repo>/<tail>`, plus `?ns=<registry>` for mirrors so they know which upstream.
pub(crate) fn api_url(host: &RegistryHost, r: &Reference, tail: &str) -> String {
    let mut u = format!("{}/{}/{}", host.base(), r.path, tail);
    if host.is_mirror {
        u.push_str(if u.contains('?') { "&ns=" } else { "?ns=" });
        u.push_str(&r.domain);
    }
    u
}

fn bare_media_type(v: Option<&header::HeaderValue>) -> Option<String> {
    let s = v?.to_str().ok()?;
    let s = s.split(';').next()?.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// The media type a manifest declares, for registries that send a generic Content-Type.
fn sniff_media_type(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(body) {
        Ok(Probe {
            media_type: Some(m),
            ..
        }) if !m.is_empty() => m,
        Ok(Probe {
            manifests: Some(_), ..
        }) => media_types::OCI_INDEX.to_string(),
        _ => media_types::OCI_MANIFEST.to_string(),
    }
}

fn is_manifest_type(mt: &str) -> bool {
    media_types::is_index(mt) || media_types::is_manifest(mt)
}

impl Client {
    /// Resolves `reference` to its normalised form and the descriptor of its manifest or index.
    pub async fn resolve(&self, reference: &str) -> Result<(String, Descriptor)> {
        let r = parse_ref(reference)?;
        let name = r.to_string();
        let mut errors = Vec::new();
        for host in self.hosts(&r.domain, Capability::Resolve).await? {
            match self.resolve_on(&host, &r, &name).await {
                Ok(d) => return Ok((name, d)),
                Err(e) => {
                    tracing::debug!(host = %host.authority, error = %e, "resolve failed");
                    errors.push((host.authority.clone(), e))
                }
            }
        }
        Err(Client::combine(&format!("resolving {name}"), errors))
    }

    async fn resolve_on(
        &self,
        host: &RegistryHost,
        r: &Reference,
        name: &str,
    ) -> Result<Descriptor> {
        let target = match (&r.digest, &r.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => {
                return Err(Error::InvalidArgument(format!("{name}: no tag or digest")))
            }
        };
        let url = api_url(host, r, &format!("manifests/{target}"));
        let access = Access::pull(&r.path);
        // HEAD first: most registries answer with the digest, sparing the body.
        let resp = self
            .send(host, &access, &format!("manifest {name}"), None, &mut |c| {
                c.request(Method::HEAD, &url)
                    .header(header::ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        match resp.status() {
            StatusCode::OK => {
                let mt = bare_media_type(resp.headers().get(header::CONTENT_TYPE));
                let digest = match &r.digest {
                    Some(d) => Some(d.clone()),
                    None => resp
                        .headers()
                        .get("docker-content-digest")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|s| Digest::parse(s).ok()),
                };
                if let (Some(mt), Some(digest), Some(size)) = (mt, digest, content_length(&resp)) {
                    if is_manifest_type(&mt) {
                        if size > MAX_MANIFEST_SIZE {
                            return Err(Error::TooLarge {
                                what: format!("manifest {name}"),
                                size,
                                limit: MAX_MANIFEST_SIZE,
                            });
                        }
                        return Ok(Descriptor::new(mt, digest, size));
                    }
                }
            }
            StatusCode::NOT_FOUND => return Err(Error::NotFound(format!("manifest {name}"))),
            _ => {} // some registries refuse HEAD: GET tells
        }
        let resp = self
            .send(host, &access, &format!("manifest {name}"), None, &mut |c| {
                c.get(&url).header(header::ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        if resp.status() != StatusCode::OK {
            return Err(status_error(host, &format!("manifest {name}"), resp).await);
        }
        let mt = bare_media_type(resp.headers().get(header::CONTENT_TYPE));
        let what = format!("manifest {name}");
        let body = read_limited(
            resp,
            MAX_MANIFEST_SIZE as usize,
            &what,
            self.stall_timeout(),
        )
        .await?;
        let digest = Digest::of(&body);
        if let Some(want) = &r.digest {
            if *want != digest {
                return Err(Error::DigestMismatch {
                    what,
                    expected: want.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        let mt = match mt {
            Some(m) if is_manifest_type(&m) => m,
            _ => sniff_media_type(&body),
        };
        Ok(Descriptor::new(mt, digest, body.len() as u64))
    }

    /// Fetches the manifest or index `desc` of `reference`'s repository, verified and bounded
    /// to [`MAX_MANIFEST_SIZE`]. Other small documents (an image config) come from the blob
    /// endpoint, picked by media type as containerd's fetcher does.
    pub async fn fetch_manifest(&self, reference: &str, desc: &Descriptor) -> Result<Bytes> {
        let r = parse_ref(reference)?;
        let is_doc = desc.media_type.is_empty() || is_manifest_type(&desc.media_type);
        let (kind, endpoint) = if is_doc {
            ("manifest", "manifests")
        } else {
            ("blob", "blobs")
        };
        let what = format!("{kind} {}@{}", r.name(), desc.digest);
        if desc.size > MAX_MANIFEST_SIZE {
            return Err(Error::TooLarge {
                what,
                size: desc.size,
                limit: MAX_MANIFEST_SIZE,
            });
        }
        let accept = if desc.media_type.is_empty() {
            MANIFEST_ACCEPT.to_string()
        } else {
            format!("{}, {MANIFEST_ACCEPT}", desc.media_type)
        };
        let mut errors = Vec::new();
        for host in self.hosts(&r.domain, Capability::Pull).await? {
            let url = api_url(&host, &r, &format!("{endpoint}/{}", desc.digest));
            let res = async {
                let resp = self
                    .send(&host, &Access::pull(&r.path), &what, None, &mut |c| {
                        c.get(&url).header(header::ACCEPT, &accept)
                    })
                    .await?;
                if resp.status() != StatusCode::OK {
                    return Err(status_error(&host, &what, resp).await);
                }
                let body = read_limited(
                    resp,
                    MAX_MANIFEST_SIZE as usize,
                    &what,
                    self.stall_timeout(),
                )
                .await?;
                let got = Digest::of(&body);
                if got != desc.digest {
                    return Err(Error::DigestMismatch {
                        what: what.clone(),
                        expected: desc.digest.to_string(),
                        actual: got.to_string(),
                    });
                }
                Ok(body)
            }
            .await;
            match res {
                Ok(b) => return Ok(b),
                Err(e) => errors.push((host.authority.clone(), e)),
            }
        }
        Err(Client::combine(&what, errors))
    }

    /// Streams blob `desc` of `reference`'s repository from byte `offset` on (`Range:
    /// bytes=<offset>-`; a server ignoring Range has the prefix skipped). The stream ends with
    /// an error if the body breaks or stalls (the caller resumes with a larger offset), and, when
    /// read from offset 0, if its digest or size is wrong.
    pub async fn fetch_blob(
        &self,
        reference: &str,
        desc: &Descriptor,
        offset: u64,
    ) -> Result<BlobStream> {
        let r = parse_ref(reference)?;
        let what = format!("blob {} of {}", desc.digest, r.name());
        if offset > desc.size {
            return Err(Error::InvalidArgument(format!(
                "{what}: offset {offset} is past its size {}",
                desc.size
            )));
        }
        let mut errors = Vec::new();
        let mut hosts = self.hosts(&r.domain, Capability::Pull).await?;
        let digest = desc.digest.to_string();
        let served_bad = |h: &RegistryHost| {
            crate::client::lock(&self.inner.bad_blobs)
                .contains(&(h.authority.clone(), digest.clone()))
        };
        if hosts.iter().any(|h| !served_bad(h)) {
            hosts.retain(|h| !served_bad(h));
        }
        for host in hosts {
            match self.open_blob(&host, &r, desc, offset, &what).await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    tracing::debug!(host = %host.authority, error = %e, "blob fetch failed");
                    errors.push((host.authority.clone(), e))
                }
            }
        }
        Err(Client::combine(&what, errors))
    }

    async fn open_blob(
        &self,
        host: &RegistryHost,
        r: &Reference,
        desc: &Descriptor,
        offset: u64,
        what: &str,
    ) -> Result<BlobStream> {
        let url = api_url(host, r, &format!("blobs/{}", desc.digest));
        let resp = self
            .send(host, &Access::pull(&r.path), what, None, &mut |c| {
                let rb = c.get(&url);
                if offset > 0 {
                    rb.header(header::RANGE, format!("bytes={offset}-"))
                } else {
                    rb
                }
            })
            .await?;
        let skip = match resp.status() {
            StatusCode::PARTIAL_CONTENT if offset > 0 => {
                check_content_range(&resp, offset, what)?;
                0
            }
            StatusCode::OK => offset,
            _ => return Err(status_error(host, what, resp).await),
        };
        let state = BlobState {
            body: Box::pin(resp.bytes_stream()),
            host: host.authority.clone(),
            what: what.to_string(),
            stall: self.stall_timeout(),
            skip,
            remaining: desc.size - offset,
            expected: desc.digest.clone(),
            size: desc.size,
            // Only a whole read can be checked here; a resumed one is checked by the caller.
            hasher: (offset == 0).then(Sha256::new),
            done: false,
            bad_blobs: self.inner.bad_blobs.clone(),
        };
        Ok(Box::pin(futures::stream::unfold(state, next_chunk)))
    }
}

/// A 206 must start where we asked: anything else would splice the wrong bytes in.
fn check_content_range(resp: &reqwest::Response, offset: u64, what: &str) -> Result<()> {
    let start = resp
        .headers()
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.strip_prefix("bytes "))
        .and_then(|s| s.split('-').next())
        .and_then(|s| s.trim().parse::<u64>().ok());
    match start {
        Some(s) if s == offset => Ok(()),
        // No Content-Range on a 206 is a protocol error, but the body is still the requested
        // range on every registry seen; accept it.
        None => Ok(()),
        Some(s) => Err(Error::Transport {
            host: resp.url().authority().to_string(),
            message: format!("{what}: asked for bytes from {offset}, got a range from {s}"),
        }),
    }
}

struct BlobState {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    host: String,
    what: String,
    stall: Duration,
    skip: u64,
    remaining: u64,
    expected: Digest,
    size: u64,
    hasher: Option<Sha256>,
    done: bool,
    bad_blobs: Arc<std::sync::Mutex<std::collections::HashSet<(String, String)>>>,
}

async fn next_chunk(mut st: BlobState) -> Option<(Result<Bytes>, BlobState)> {
    if st.done {
        return None;
    }
    loop {
        let item = match tokio::time::timeout(st.stall, st.body.next()).await {
            Err(_) => {
                st.done = true;
                let e = Error::Timeout {
                    what: format!("{} from {}", st.what, st.host),
                    secs: st.stall.as_secs(),
                };
                return Some((Err(e), st));
            }
            Ok(i) => i,
        };
        let mut chunk = match item {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                st.done = true;
                let e = Error::Transport {
                    host: st.host.clone(),
                    message: format!(
                        "{}: body broken with {} bytes left: {}",
                        st.what,
                        st.remaining,
                        error_chain(&e)
                    ),
                };
                return Some((Err(e), st));
            }
            None => {
                st.done = true;
                return finish(st);
            }
        };
        if st.skip > 0 {
            let n = st.skip.min(chunk.len() as u64);
            st.skip -= n;
            chunk = chunk.slice(n as usize..);
            if chunk.is_empty() {
                continue;
            }
        }
        if chunk.len() as u64 > st.remaining {
            st.done = true;
            let e = Error::DigestMismatch {
                what: format!("{} size", st.what),
                expected: st.size.to_string(),
                actual: "more bytes".to_string(),
            };
            return Some((Err(e), st));
        }
        st.remaining -= chunk.len() as u64;
        if let Some(h) = st.hasher.as_mut() {
            h.update(&chunk);
        }
        return Some((Ok(chunk), st));
    }
}

fn finish(mut st: BlobState) -> Option<(Result<Bytes>, BlobState)> {
    if st.remaining > 0 {
        let e = Error::Transport {
            host: st.host.clone(),
            message: format!("{}: body ended with {} bytes left", st.what, st.remaining),
        };
        return Some((Err(e), st));
    }
    if let Some(h) = st.hasher.take() {
        let got = hex::encode(h.finalize());
        if got != st.expected.hex() {
            crate::client::lock(&st.bad_blobs).insert((st.host.clone(), st.expected.to_string()));
            let e = Error::DigestMismatch {
                what: st.what.clone(),
                expected: st.expected.to_string(),
                actual: format!("sha256:{got}"),
            };
            return Some((Err(e), st));
        }
    }
    None
}
