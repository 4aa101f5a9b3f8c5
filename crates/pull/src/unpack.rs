//! Applying layers in order while they download: layer i is prepared on chain i-1 as soon as
//! that is committed, reads its bytes from the download's pipe, and is committed as chain i
//! once its blob is verified and the applied diff id matches the config.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::{SystemTime, UNIX_EPOCH};

use berth_image::LayerStep;
use tokio::sync::watch;

use crate::ctx::{blocking, Ctx};
use crate::download::LayerState;
use crate::error::{Error, Result};
use crate::fetcher::Progress;
use crate::tee::{OpenCommitted, TeeReader};

/// One layer to unpack and where its bytes come from.
pub(crate) struct Step {
    pub step: LayerStep,
    pub reader: TeeReader,
    pub state: watch::Receiver<LayerState>,
}

/// How the apply opens a layer blob once it is committed: waits for the download's verdict.
pub(crate) fn opener(
    ctx: &Ctx<'_>,
    digest: &str,
    state: watch::Receiver<LayerState>,
) -> OpenCommitted {
    let (store, ns, digest) = (ctx.store.clone(), ctx.ns.clone(), digest.to_string());
    let handle = tokio::runtime::Handle::current();
    Box::new(move || -> io::Result<File> {
        // Runs on the blocking apply thread, never on a runtime worker.
        let mut state = state;
        let committed = handle.block_on(async {
            state
                .wait_for(|s| *s != LayerState::Pending)
                .await
                .map(|s| *s == LayerState::Committed)
                .unwrap_or(false)
        });
        if !committed {
            return Err(io::Error::other(format!(
                "layer {digest} was not downloaded"
            )));
        }
        store
            .content_open(&ns, &digest)
            .map(|(f, _)| f)
            .map_err(|e| io::Error::other(e.to_string()))
    })
}

/// Unpacks `steps` in order; returns the top chain id.
pub(crate) async fn unpack(ctx: &Ctx<'_>, steps: Vec<Step>) -> Result<Option<String>> {
    let mut top = None;
    for s in steps {
        let chain = s.step.chain_id.to_string();
        unpack_one(ctx, s).await?;
        top = Some(chain);
    }
    Ok(top)
}

async fn unpack_one(ctx: &Ctx<'_>, s: Step) -> Result<()> {
    let Step {
        step,
        reader,
        mut state,
    } = s;
    let chain = step.chain_id.to_string();
    let digest = step.layer.digest.to_string();
    let chain_key = ctx.backend_key(&chain);
    let sn = ctx.snapshotter.clone();
    let exists = {
        let (sn, k) = (sn.clone(), chain_key.clone());
        blocking(move || match sn.stat(&k) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == berth_snapshot::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        })
        .await?
    };
    if exists {
        // Dropping the reader tells the download to stop copying bytes for us.
        drop(reader);
        ctx.lease_snapshot(&chain).await?;
        (ctx.progress)(Progress::Unpacked {
            digest,
            chain_id: chain,
        });
        return Ok(());
    }

    let extract = format!("extract-{}-{chain}", unique());
    // Leased before they exist, so a GC between prepare/commit and now cannot take them.
    ctx.lease_snapshot(&extract).await?;
    ctx.lease_snapshot(&chain).await?;
    let extract_key = ctx.backend_key(&extract);
    let parent = step
        .parent
        .as_ref()
        .map(|p| ctx.backend_key(&p.to_string()));
    let media_type = step.layer.media_type.clone();
    let (sn2, ek) = (sn.clone(), extract_key.clone());
    let applied = blocking(move || {
        let mounts = sn2.prepare(&ek, parent.as_deref(), HashMap::new())?;
        Ok(berth_diff::apply_to_mounts(reader, &media_type, &mounts)?)
    })
    .await;

    let res = async {
        // The bytes applied are only trusted once the blob's digest checked out.
        let committed = state
            .wait_for(|s| *s != LayerState::Pending)
            .await
            .map(|s| *s == LayerState::Committed)
            .unwrap_or(false);
        let applied = applied?;
        if !committed {
            return Err(Error::Internal(format!(
                "layer {digest} was not downloaded"
            )));
        }
        if applied.diff_id != step.diff_id.to_string() {
            return Err(Error::DigestMismatch {
                what: format!("diff id of layer {digest}"),
                expected: step.diff_id.to_string(),
                actual: applied.diff_id,
            });
        }
        let (sn3, ck, ek) = (sn.clone(), chain_key.clone(), extract_key.clone());
        blocking(move || match sn3.commit(&ck, &ek, HashMap::new()) {
            Ok(()) => Ok(()),
            // Another pull committed the same chain first: theirs is identical.
            Err(e) if e.kind() == berth_snapshot::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e.into()),
        })
        .await
    }
    .await;
    // After a commit the active snapshot is gone already; otherwise remove what we prepared.
    let (sn4, ek) = (sn.clone(), extract_key.clone());
    let _ = blocking(move || {
        let _ = sn4.remove(&ek);
        Ok(())
    })
    .await;
    res?;
    (ctx.progress)(Progress::Unpacked {
        digest,
        chain_id: chain,
    });
    Ok(())
}

/// Distinguishes concurrent extractions of the same chain.
fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos}{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}
