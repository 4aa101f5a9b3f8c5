//! Small documents (index, manifests, configs): fetched into memory, verified, and written to
//! the content store with their GC labels once everything they reference is in place.

use std::collections::HashMap;
use std::io::Read;

use berth_image::{Descriptor, Digest, MAX_JSON_SIZE};
use bytes::Bytes;

use crate::ctx::{blocking, Ctx};
use crate::error::{Error, Result};

/// True when the namespace already records `digest`.
pub(crate) async fn present(ctx: &Ctx<'_>, digest: &Digest) -> Result<bool> {
    let (store, ns, d) = (ctx.store.clone(), ctx.ns.clone(), digest.to_string());
    blocking(move || match store.content_info(&ns, &d) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == berth_store::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    })
    .await
}

/// The body of a document: from the store when present (a re-pull fetches nothing), else from
/// the fetcher. Either way bounded and verified against the descriptor.
pub(crate) async fn fetch_doc(ctx: &Ctx<'_>, desc: &Descriptor) -> Result<Bytes> {
    let what = format!("{} {}", kind_name(&desc.media_type), desc.digest);
    if desc.size > MAX_JSON_SIZE {
        return Err(Error::TooLarge(what));
    }
    let body = if present(ctx, &desc.digest).await? {
        let (store, ns, d) = (ctx.store.clone(), ctx.ns.clone(), desc.digest.to_string());
        blocking(move || {
            let (f, _) = store.content_open(&ns, &d)?;
            let mut buf = Vec::new();
            f.take(MAX_JSON_SIZE + 1)
                .read_to_end(&mut buf)
                .map_err(|e| Error::Internal(format!("read {d}: {e}")))?;
            Ok(Bytes::from(buf))
        })
        .await?
    } else {
        ctx.fetcher.fetch(desc).await?
    };
    verify(&what, desc, &body)?;
    Ok(body)
}

fn verify(what: &str, desc: &Descriptor, body: &[u8]) -> Result<()> {
    if body.len() as u64 > MAX_JSON_SIZE {
        return Err(Error::TooLarge(what.to_string()));
    }
    let actual = Digest::of(body);
    if actual != desc.digest {
        return Err(Error::DigestMismatch {
            what: what.to_string(),
            expected: desc.digest.to_string(),
            actual: actual.to_string(),
        });
    }
    if body.len() as u64 != desc.size {
        return Err(Error::InvalidArgument(format!(
            "{what}: size {} does not match descriptor size {}",
            body.len(),
            desc.size
        )));
    }
    Ok(())
}

fn kind_name(media_type: &str) -> &'static str {
    if berth_image::media_types::is_index(media_type) {
        "index"
    } else if berth_image::media_types::is_config(media_type) {
        "config"
    } else {
        "manifest"
    }
}

/// Writes a verified document with `labels`; when it is already stored, sets the labels on
/// the existing record instead.
pub(crate) async fn put_doc(
    ctx: &Ctx<'_>,
    desc: &Descriptor,
    body: Bytes,
    labels: HashMap<String, String>,
) -> Result<()> {
    let digest = desc.digest.to_string();
    for _ in 0..LOCK_TRIES {
        let (store, ns, lease) = (ctx.store.clone(), ctx.ns.clone(), ctx.lease.clone());
        let (d, b, l) = (digest.clone(), body.clone(), labels.clone());
        match blocking(move || write_doc(&store, &ns, &lease, &d, &b, l)).await {
            // Another pull is writing the same document right now: let it finish.
            Err(e) if e.kind() == crate::error::ErrorKind::Unavailable => {
                tokio::time::sleep(LOCK_POLL).await;
            }
            res => return res,
        }
    }
    Err(Error::Unavailable(format!(
        "{digest}: ingest locked by another writer"
    )))
}

const LOCK_TRIES: u32 = 100;
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(100);

fn write_doc(
    store: &berth_store::Store,
    ns: &str,
    lease: &str,
    digest: &str,
    body: &[u8],
    labels: HashMap<String, String>,
) -> Result<()> {
    let reference = format!("pull-{digest}");
    let size = i64::try_from(body.len())
        .map_err(|_| Error::InvalidArgument(format!("{digest}: size overflow")))?;
    let mut w = match store.content_writer(ns, &reference, size, Some(digest), Some(lease)) {
        Ok(w) => w,
        Err(e) if e.kind() == berth_store::ErrorKind::AlreadyExists => {
            return set_labels(store, ns, digest, labels)
        }
        Err(e) => return Err(e.into()),
    };
    // A write at 0 truncates whatever a crashed earlier attempt left.
    let written = w.write(0, body).map_err(Error::from);
    let res = written.and_then(|_| match w.commit(size, Some(digest), labels.clone()) {
        Ok(_) => Ok(()),
        // Committed meanwhile by someone else: the record may predate our labels.
        Err(e) if e.kind() == berth_store::ErrorKind::AlreadyExists => {
            set_labels(store, ns, digest, labels)
        }
        Err(e) => Err(e.into()),
    });
    if res.is_err() {
        drop(w);
        // Leave no ingest behind: the document is in memory and can be written again.
        let _ = store.ingest_abort(ns, &reference);
    }
    res
}

/// Adds (or overwrites) `labels` on a stored blob, leaving its other labels alone.
pub(crate) fn set_labels(
    store: &berth_store::Store,
    ns: &str,
    digest: &str,
    labels: HashMap<String, String>,
) -> Result<()> {
    if labels.is_empty() {
        return Ok(());
    }
    let mut info = store.content_info(ns, digest)?;
    let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
    info.labels = labels;
    store.content_update(ns, info, &paths)?;
    Ok(())
}

/// Converts BTreeMap labels from berth_image into the store's map.
pub(crate) fn to_labels(l: berth_image::labels::Labels) -> HashMap<String, String> {
    l.into_iter().collect()
}
