//! Downloading one layer blob into the content store: ingest `pull-<digest>`, write in batches
//! off the runtime, copy every byte to the streaming apply, resume from the ingest's offset when
//! the stream breaks, verify the digest, commit with the layer's labels.

use std::collections::HashMap;
use std::time::Duration;

use berth_image::Descriptor;
use berth_store::Writer;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;

use crate::ctx::{blocking, Ctx};
use crate::error::{Error, Result};
use crate::fetcher::Progress;
use crate::tee::TeeSender;

/// Retries after a broken stream, each from the current offset.
const RETRIES: u32 = 3;
const BACKOFF: Duration = Duration::from_millis(100);
/// Bytes gathered before one blocking write.
const BATCH: usize = 1 << 20;
/// How long to wait for another pull writing the same blob.
const LOCK_WAIT: Duration = Duration::from_secs(600);
const LOCK_POLL: Duration = Duration::from_millis(100);

/// Where a layer's download stands, for the apply waiting on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LayerState {
    Pending,
    Committed,
    Failed,
}

pub(crate) struct Job {
    pub desc: Descriptor,
    pub labels: HashMap<String, String>,
    pub tee: Option<TeeSender>,
    pub state: watch::Sender<LayerState>,
}

pub(crate) async fn run(ctx: &Ctx<'_>, mut job: Job) -> Result<()> {
    let res = download(ctx, &job.desc, &job.labels, job.tee.as_mut()).await;
    // Whatever happened, the apply must not wait for more bytes.
    if let Some(t) = job.tee.as_mut() {
        t.detach();
    }
    job.state.send_replace(match res {
        Ok(()) => LayerState::Committed,
        Err(_) => LayerState::Failed,
    });
    res
}

async fn download(
    ctx: &Ctx<'_>,
    desc: &Descriptor,
    labels: &HashMap<String, String>,
    mut tee: Option<&mut TeeSender>,
) -> Result<()> {
    let digest = desc.digest.to_string();
    let reference = format!("pull-{digest}");
    let size = i64::try_from(desc.size)
        .map_err(|_| Error::InvalidArgument(format!("layer {digest}: size overflow")))?;
    let opened = open_writer(ctx, &reference, size, &digest).await?;
    let Some(mut writer) = opened else {
        // Already stored (maybe for another namespace): only the labels are ours to add.
        set_labels(ctx, &digest, labels.clone()).await?;
        (ctx.progress)(Progress::LayerDone { digest });
        return Ok(());
    };

    let mut offset = u64::try_from(writer.status()?.offset).unwrap_or(0);
    if offset > desc.size {
        // A stale ingest longer than the blob cannot be a prefix of it.
        writer = write_batch(writer, 0, Vec::new()).await?;
        offset = 0;
    }
    if offset > 0 {
        // The prefix came from an earlier pull; the apply reads it from the committed blob.
        if let Some(t) = tee.as_mut() {
            t.detach();
        }
    }
    (ctx.progress)(Progress::LayerStarted {
        digest: digest.clone(),
        size: desc.size,
    });

    let mut attempt = 0;
    while offset < desc.size {
        let (w, res) = stream_once(ctx, desc, writer, offset, tee.as_deref_mut()).await;
        writer = w?;
        offset = u64::try_from(writer.status()?.offset).unwrap_or(0);
        match res {
            Ok(()) if offset == desc.size => break,
            Ok(()) => {
                let e = Error::Unavailable(format!(
                    "layer {digest}: stream ended at {offset} of {} bytes",
                    desc.size
                ));
                retry_or_fail(&mut attempt, e, &digest).await?;
            }
            Err(e) if e.is_transient() => retry_or_fail(&mut attempt, e, &digest).await?,
            Err(e) => return Err(e),
        }
    }

    let actual = writer.digest();
    if actual != digest {
        return Err(Error::DigestMismatch {
            what: format!("layer {digest}"),
            expected: digest,
            actual,
        });
    }
    if let Some(t) = tee.as_mut() {
        t.finish();
    }
    let (store, ns, d, l) = (
        ctx.store.clone(),
        ctx.ns.clone(),
        digest.clone(),
        labels.clone(),
    );
    blocking(move || match writer.commit(size, Some(&d), l.clone()) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == berth_store::ErrorKind::AlreadyExists => {
            crate::content::set_labels(&store, &ns, &d, l)
        }
        Err(e) => Err(e.into()),
    })
    .await?;
    (ctx.progress)(Progress::LayerDone { digest });
    Ok(())
}

/// Opens the ingest (None: the blob is already stored). A concurrent pull of the same blob
/// holds the ingest lock: wait for it to finish rather than fail, as containerd does.
async fn open_writer(
    ctx: &Ctx<'_>,
    reference: &str,
    size: i64,
    digest: &str,
) -> Result<Option<Writer>> {
    let mut waited = Duration::ZERO;
    loop {
        let (store, ns, lease, r, d) = (
            ctx.store.clone(),
            ctx.ns.clone(),
            ctx.lease.clone(),
            reference.to_string(),
            digest.to_string(),
        );
        let res =
            blocking(
                move || match store.content_writer(&ns, &r, size, Some(&d), Some(&lease)) {
                    Ok(w) => Ok(Some(w)),
                    Err(e) if e.kind() == berth_store::ErrorKind::AlreadyExists => Ok(None),
                    Err(e) => Err(e.into()),
                },
            )
            .await;
        match res {
            Ok(w) => {
                if w.is_some() {
                    // Only ingests we hold are ours to abort if the pull fails.
                    ctx.track_ingest(reference);
                }
                return Ok(w);
            }
            Err(e) if e.kind() == crate::error::ErrorKind::Unavailable && waited < LOCK_WAIT => {
                tokio::time::sleep(LOCK_POLL).await;
                waited += LOCK_POLL;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn retry_or_fail(attempt: &mut u32, e: Error, digest: &str) -> Result<()> {
    if *attempt >= RETRIES {
        return Err(e);
    }
    *attempt += 1;
    tracing::debug!(%digest, attempt = *attempt, error = %e, "layer stream broke; resuming");
    tokio::time::sleep(BACKOFF * 2u32.pow(*attempt - 1)).await;
    Ok(())
}

/// One fetch from `offset` until the stream ends or fails. Always hands the writer back (with
/// every byte received before a failure written), so a retry resumes where this one stopped.
async fn stream_once(
    ctx: &Ctx<'_>,
    desc: &Descriptor,
    mut writer: Writer,
    mut offset: u64,
    mut tee: Option<&mut TeeSender>,
) -> (Result<Writer>, Result<()>) {
    let digest = desc.digest.to_string();
    let mut stream = match ctx.fetcher.fetch_blob(desc, offset).await {
        Ok(s) => s,
        Err(e) => return (Ok(writer), Err(e)),
    };
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batched = 0usize;
    let mut outcome = Ok(());
    loop {
        let item = stream.next().await;
        let chunk = match item {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                outcome = Err(e);
                None
            }
            None => None,
        };
        if let Some(c) = &chunk {
            if offset + (batched + c.len()) as u64 > desc.size {
                outcome = Err(Error::DigestMismatch {
                    what: format!("layer {digest}"),
                    expected: format!("{} bytes", desc.size),
                    actual: "a longer body".into(),
                });
                break;
            }
            batched += c.len();
            batch.push(c.clone());
        }
        if batched > 0 && (chunk.is_none() || batched >= BATCH) {
            let chunks = std::mem::take(&mut batch);
            writer = match write_batch(writer, offset, chunks.clone()).await {
                Ok(w) => w,
                Err(e) => return (Err(e), Ok(())),
            };
            offset += batched as u64;
            batched = 0;
            if let Some(t) = tee.as_mut() {
                for c in &chunks {
                    t.send(c);
                }
            }
            (ctx.progress)(Progress::LayerBytes {
                digest: digest.clone(),
                done: offset,
                total: desc.size,
            });
        }
        if chunk.is_none() {
            break;
        }
    }
    (Ok(writer), outcome)
}

/// Appends `chunks` at `offset` on a blocking thread (a write at a smaller offset truncates).
async fn write_batch(mut writer: Writer, offset: u64, chunks: Vec<Bytes>) -> Result<Writer> {
    blocking(move || {
        let mut off =
            i64::try_from(offset).map_err(|_| Error::InvalidArgument("offset overflow".into()))?;
        if chunks.is_empty() {
            writer.write(off, &[])?;
        }
        for c in &chunks {
            off = writer.write(off, c)?;
        }
        Ok(writer)
    })
    .await
}

async fn set_labels(ctx: &Ctx<'_>, digest: &str, labels: HashMap<String, String>) -> Result<()> {
    let (store, ns, d) = (ctx.store.clone(), ctx.ns.clone(), digest.to_string());
    blocking(move || crate::content::set_labels(&store, &ns, &d, labels)).await
}
