//! Pushing: blobs (exists check, cross-repo mount, monolithic upload) and manifests.

use berth_image::{Descriptor, Digest, Reference};
use bytes::Bytes;
use futures::StreamExt;
use reqwest::{header, Method, StatusCode};
use tokio::io::AsyncRead;

use crate::client::{read_limited, registry_message, status_error, Access, Client, Progress};
use crate::error::{Error, Result};
use crate::fetch::{api_url, parse_ref, MAX_MANIFEST_SIZE};
use crate::hosts::{Capability, RegistryHost};

/// Where an upload continues: the Location header, made absolute against the host.
fn upload_location(host: &RegistryHost, resp: &reqwest::Response, what: &str) -> Result<String> {
    let loc = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::Transport {
            host: host.authority.clone(),
            message: format!("{what}: upload started without a Location"),
        })?;
    if loc.starts_with("http://") || loc.starts_with("https://") {
        Ok(loc.to_string())
    } else if loc.starts_with('/') {
        Ok(format!("{}{loc}", host.origin))
    } else {
        Ok(format!("{}/{loc}", host.origin))
    }
}

fn with_digest(location: &str, d: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest=sha256%3A{}", d.hex())
}

impl Client {
    /// True if the blob is already in `reference`'s repository on the first push host that
    /// answers.
    pub async fn blob_exists(&self, reference: &str, desc: &Descriptor) -> Result<bool> {
        let r = parse_ref(reference)?;
        let what = format!("blob {} of {}", desc.digest, r.name());
        let mut errors = Vec::new();
        for host in self.hosts(&r.domain, Capability::Push).await? {
            match self.exists_on(&host, &r, desc, &what, false).await {
                Ok(b) => return Ok(b),
                Err(e) => errors.push((host.authority.clone(), e)),
            }
        }
        Err(Client::combine(&what, errors))
    }

    async fn exists_on(
        &self,
        host: &RegistryHost,
        r: &Reference,
        desc: &Descriptor,
        what: &str,
        push: bool,
    ) -> Result<bool> {
        let url = api_url(host, r, &format!("blobs/{}", desc.digest));
        let access = if push {
            Access::push(&r.path, None)
        } else {
            Access::pull(&r.path)
        };
        let resp = self
            .send(host, &access, what, None, &mut |c| {
                c.request(Method::HEAD, &url)
            })
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(host, what, resp).await),
        }
    }

    /// Uploads blob `desc` to `reference`'s repository from `data`, unless it is there already
    /// or can be mounted from repository `mount_from` (a path like `library/busybox` on the
    /// same registry). The registry checks the digest.
    pub async fn push_blob(
        &self,
        reference: &str,
        desc: &Descriptor,
        data: impl AsyncRead + Send + Unpin + 'static,
        mount_from: Option<&str>,
    ) -> Result<()> {
        let r = parse_ref(reference)?;
        let what = format!("blob {} to {}", desc.digest, r.name());
        if let Some(from) = mount_from {
            // It goes into a query string: only a well-formed repository path may.
            let ok = parse_ref(&format!("{}/{from}", r.domain))
                .is_ok_and(|f| f.path == from && f.domain == r.domain);
            if !ok {
                return Err(Error::InvalidArgument(format!(
                    "{what}: cannot mount from {from:?}: not a repository path on {}",
                    r.domain
                )));
            }
        }
        let mut errors = Vec::new();
        let mut data = Some(data);
        for host in self.hosts(&r.domain, Capability::Push).await? {
            // Everything before the upload PUT can move on to the next host; the PUT consumes
            // `data`, so its result is final.
            let location = match self
                .prepare_upload(&host, &r, desc, mount_from, &what)
                .await
            {
                Ok(None) => return Ok(()),
                Ok(Some(loc)) => loc,
                Err(e) => {
                    errors.push((host.authority.clone(), e));
                    continue;
                }
            };
            let Some(reader) = data.take() else {
                break;
            };
            return self.upload(&host, &r, desc, reader, &location, &what).await;
        }
        Err(Client::combine(&what, errors))
    }

    /// Exists check, then mount, then upload start. `None`: nothing left to send.
    async fn prepare_upload(
        &self,
        host: &RegistryHost,
        r: &Reference,
        desc: &Descriptor,
        mount_from: Option<&str>,
        what: &str,
    ) -> Result<Option<String>> {
        if self.exists_on(host, r, desc, what, true).await? {
            tracing::debug!(%what, "blob exists, skipped");
            return Ok(None);
        }
        let access = Access::push(&r.path, mount_from);
        let url = match mount_from {
            Some(from) => api_url(
                host,
                r,
                &format!(
                    "blobs/uploads/?mount=sha256%3A{}&from={from}",
                    desc.digest.hex()
                ),
            ),
            None => api_url(host, r, "blobs/uploads/"),
        };
        let resp = self
            .send(host, &access, what, None, &mut |c| {
                c.post(&url).header(header::CONTENT_LENGTH, "0")
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED if mount_from.is_some() => {
                tracing::debug!(%what, "blob mounted");
                Ok(None)
            }
            StatusCode::ACCEPTED => upload_location(host, &resp, what).map(Some),
            _ => Err(status_error(host, what, resp).await),
        }
    }

    async fn upload(
        &self,
        host: &RegistryHost,
        r: &Reference,
        desc: &Descriptor,
        reader: impl AsyncRead + Send + Unpin + 'static,
        location: &str,
        what: &str,
    ) -> Result<()> {
        let url = with_digest(location, &desc.digest);
        let progress = Progress::new();
        let p = progress.clone();
        let chunks = tokio_util::io::ReaderStream::new(reader).inspect(move |_| p.tick());
        let mut body = Some(reqwest::Body::wrap_stream(chunks));
        let resp = self
            .send(
                host,
                &Access::push(&r.path, None),
                what,
                Some(&progress),
                &mut |c| {
                    let rb = c
                        .put(&url)
                        .header(header::CONTENT_TYPE, "application/octet-stream")
                        .header(header::CONTENT_LENGTH, desc.size.to_string());
                    match body.take() {
                        Some(b) => rb.body(b),
                        None => rb,
                    }
                },
            )
            .await?;
        match resp.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT => Ok(()),
            StatusCode::BAD_REQUEST => {
                let body = read_limited(resp, 64 * 1024, what, self.stall_timeout())
                    .await
                    .unwrap_or_default();
                let msg = registry_message(&body);
                if msg.contains("DIGEST_INVALID") || msg.contains("SIZE_INVALID") {
                    Err(Error::DigestMismatch {
                        what: what.to_string(),
                        expected: desc.digest.to_string(),
                        actual: format!("registry: {msg}"),
                    })
                } else {
                    Err(Error::InvalidArgument(format!("{what}: {msg}")))
                }
            }
            _ => Err(status_error(host, what, resp).await),
        }
    }

    /// Puts a manifest or index under `reference`'s tag (or digest); push its blobs first.
    /// Returns the manifest's digest.
    pub async fn push_manifest(
        &self,
        reference: &str,
        media_type: &str,
        body: Bytes,
    ) -> Result<String> {
        let r = parse_ref(reference)?;
        let digest = Digest::of(&body);
        let what = format!("manifest {}", r);
        if body.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(Error::TooLarge {
                what,
                size: body.len() as u64,
                limit: MAX_MANIFEST_SIZE,
            });
        }
        if let Some(d) = &r.digest {
            if *d != digest {
                return Err(Error::InvalidArgument(format!(
                    "{what}: body digest is {digest}"
                )));
            }
        }
        let target = match (&r.tag, &r.digest) {
            (Some(t), _) => t.clone(),
            (None, Some(d)) => d.to_string(),
            (None, None) => digest.to_string(),
        };
        let mut errors = Vec::new();
        for host in self.hosts(&r.domain, Capability::Push).await? {
            let url = api_url(&host, &r, &format!("manifests/{target}"));
            let res = self
                .send(&host, &Access::push(&r.path, None), &what, None, &mut |c| {
                    c.put(&url)
                        .header(header::CONTENT_TYPE, media_type)
                        .body(body.clone())
                })
                .await;
            match res {
                Ok(resp) if resp.status() == StatusCode::CREATED => {
                    return Ok(digest.to_string());
                }
                Ok(resp) => errors.push((
                    host.authority.clone(),
                    status_error(&host, &what, resp).await,
                )),
                Err(e) => errors.push((host.authority.clone(), e)),
            }
        }
        Err(Client::combine(&what, errors))
    }
}
