//! The pull pipeline: resolve, fetch the documents, download layers concurrently while
//! unpacking them in order, then write the documents with their GC labels and, last of all,
//! the image record.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use berth_image::manifest::{parse_config, parse_manifest};
use berth_image::{
    labels, media_types, plan_unpack, select_manifest, Descriptor, Document, ImageConfig,
    LayerStep, Manifest, PlatformMatcher,
};
use berth_snapshot::Snapshotter;
use berth_store::{Image, Store};
use bytes::Bytes;
use futures::future::try_join_all;
use tokio::sync::{watch, Semaphore};

use crate::content::{fetch_doc, put_doc, to_labels};
use crate::ctx::{blocking, Ctx};
use crate::download::{self, Job, LayerState};
use crate::error::{Error, Result};
use crate::fetcher::{Fetcher, Progress, PullOptions};
use crate::tee::{pipe, Budget, BUDGET};
use crate::unpack::{self, opener, Step};

/// Pulls `reference` into namespace `ns`: every blob into `store`, the host platform's layers
/// unpacked into `snapshotter` (if `opts.unpack`), then the image record. On failure no image
/// is recorded and no ingest is left behind.
pub async fn pull(
    store: Arc<Store>,
    snapshotter: Arc<dyn Snapshotter>,
    ns: &str,
    fetcher: &dyn Fetcher,
    reference: &str,
    opts: &PullOptions,
    progress: impl Fn(Progress) + Send + Sync,
) -> Result<Image> {
    if opts.max_concurrent_downloads == 0 {
        return Err(Error::InvalidArgument(
            "max_concurrent_downloads must be at least 1".into(),
        ));
    }
    let lease = crate::lease::create(&store, ns).await?;
    let snapshotter_name = if opts.snapshotter.is_empty() {
        snapshotter.name().to_string()
    } else {
        opts.snapshotter.clone()
    };
    let ctx = Ctx {
        store: store.clone(),
        snapshotter,
        snapshotter_name,
        ns: ns.to_string(),
        lease: lease.clone(),
        fetcher,
        progress: &progress,
        ingests: Mutex::new(BTreeSet::new()),
    };
    let res = run(&ctx, reference, opts).await;
    if res.is_err() {
        abort_ingests(&ctx).await;
    }
    crate::lease::delete(&store, ns, &lease).await;
    res
}

/// Removes every ingest this pull opened (they are only useful for resume within it).
async fn abort_ingests(ctx: &Ctx<'_>) {
    let refs: Vec<String> = ctx
        .ingests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .cloned()
        .collect();
    let (store, ns) = (ctx.store.clone(), ctx.ns.clone());
    let _ = blocking(move || {
        for r in refs {
            match store.ingest_abort(&ns, &r) {
                Ok(()) => {}
                Err(e) if e.kind() == berth_store::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(reference = %r, error = %e, "aborting pull ingest"),
            }
        }
        Ok(())
    })
    .await;
}

/// One image manifest of the pull, with its parsed documents.
struct Fetched {
    desc: Descriptor,
    body: Bytes,
    manifest: Manifest,
    config_body: Bytes,
    /// The parsed config and unpack plan; None for a non-image manifest (an attestation,
    /// say) fetched only because `all_platforms` asked for everything.
    plan: Option<(ImageConfig, Vec<LayerStep>)>,
}

impl Fetched {
    fn steps(&self) -> &[LayerStep] {
        self.plan.as_ref().map(|(_, s)| s.as_slice()).unwrap_or(&[])
    }
}

async fn run(ctx: &Ctx<'_>, reference: &str, opts: &PullOptions) -> Result<Image> {
    let (name, mut root) = ctx.fetcher.resolve(reference).await?;
    (ctx.progress)(Progress::Resolved {
        name: name.clone(),
        digest: root.digest.to_string(),
    });
    let root_body = fetch_doc(ctx, &root).await?;
    let doc = Document::parse(&root.media_type, &root_body)?;
    if root.media_type.is_empty() {
        // Some layouts omit it; the image record needs one.
        root.media_type = match &doc {
            Document::Index(i) => i
                .media_type
                .clone()
                .unwrap_or(media_types::OCI_INDEX.into()),
            Document::Manifest(m) => m
                .media_type
                .clone()
                .unwrap_or(media_types::OCI_MANIFEST.into()),
        };
    }

    // Which manifests to fetch, and which one (if any) to unpack.
    let (index, wanted, unpack_digest) = match &doc {
        Document::Index(index) => {
            let chosen = match select_manifest(index, &opts.platform) {
                Ok(d) => Some(d),
                // Fetching everything needs no match; only the unpack would.
                Err(_) if opts.all_platforms => None,
                Err(_) => {
                    return Err(Error::NotFound(format!(
                        "manifest for platform {} in {name}",
                        opts.platform.wanted()
                    )))
                }
            };
            let wanted: Vec<Descriptor> = if opts.all_platforms {
                index
                    .manifests
                    .iter()
                    .filter(|d| media_types::is_manifest(&d.media_type))
                    .cloned()
                    .collect()
            } else {
                chosen.iter().cloned().collect()
            };
            (Some(index.clone()), wanted, chosen.map(|d| d.digest))
        }
        Document::Manifest(_) => (None, vec![root.clone()], Some(root.digest.clone())),
    };

    let fetched = try_join_all(wanted.into_iter().map(|desc| {
        let strict = Some(&desc.digest) == unpack_digest.as_ref();
        fetch_image(ctx, desc, strict)
    }))
    .await?;

    // Unpack the chosen manifest only when its image can run here.
    let host = PlatformMatcher::host();
    let unpack_idx = fetched.iter().position(|f| {
        opts.unpack
            && Some(&f.desc.digest) == unpack_digest.as_ref()
            && f.plan
                .as_ref()
                .is_some_and(|(c, _)| host.matches(&c.platform()))
    });

    // Layers to download, each once, with its `uncompressed` label.
    let mut jobs = Vec::new();
    let mut states: HashMap<String, watch::Receiver<LayerState>> = HashMap::new();
    let mut tees = HashMap::new();
    let budget = Budget::new(BUDGET);
    let unpack_layers: BTreeSet<String> = unpack_idx
        .map(|i| {
            fetched[i]
                .steps()
                .iter()
                .map(|s| s.layer.digest.to_string())
                .collect()
        })
        .unwrap_or_default();
    for f in &fetched {
        let steps = f.steps();
        for (i, layer) in f.manifest.layers.iter().enumerate() {
            let digest = layer.digest.to_string();
            if states.contains_key(&digest) {
                continue;
            }
            let (tx, rx) = watch::channel(LayerState::Pending);
            let tee = if unpack_layers.contains(&digest) {
                berth_diff::check_media_type(&layer.media_type)?;
                let (sender, reader) = pipe(&budget, opener(ctx, &digest, rx.clone()));
                tees.insert(digest.clone(), reader);
                Some(sender)
            } else {
                None
            };
            states.insert(digest, rx);
            let labels = steps
                .get(i)
                .map(|s| to_labels(labels::layer_labels(&s.diff_id)))
                .unwrap_or_default();
            jobs.push(Job {
                desc: layer.clone(),
                labels,
                tee,
                state: tx,
            });
        }
    }
    let mut steps = Vec::new();
    if let Some(i) = unpack_idx {
        for step in fetched[i].steps() {
            let digest = step.layer.digest.to_string();
            let (Some(reader), Some(state)) = (tees.remove(&digest), states.get(&digest)) else {
                // The same layer twice in one image: the second apply reads the blob.
                let state = states
                    .get(&digest)
                    .cloned()
                    .ok_or_else(|| Error::Internal(format!("no download for {digest}")))?;
                let (mut sender, reader) = pipe(&budget, opener(ctx, &digest, state.clone()));
                sender.detach();
                steps.push(Step {
                    step: step.clone(),
                    reader,
                    state,
                });
                continue;
            };
            steps.push(Step {
                step: step.clone(),
                reader,
                state: state.clone(),
            });
        }
    }
    drop(states);

    let sem = Semaphore::new(opts.max_concurrent_downloads);
    let downloads = try_join_all(jobs.into_iter().map(|job| {
        let sem = &sem;
        async move {
            let _permit = sem
                .acquire()
                .await
                .map_err(|e| Error::Internal(format!("download limit: {e}")))?;
            download::run(ctx, job).await
        }
    }));
    let (d, top) = tokio::join!(downloads, unpack::unpack(ctx, steps));
    d?;
    let top = top?;

    // Documents last, children before parents, each labelled with what it keeps alive.
    for (i, f) in fetched.iter().enumerate() {
        let mut config_labels = HashMap::new();
        if Some(i) == unpack_idx {
            if let Some(top) = &top {
                let (k, v) = labels::config_snapshot_label(
                    &ctx.snapshotter_name,
                    &berth_image::Digest::parse(top)?,
                );
                config_labels.insert(k, v);
            }
        }
        put_doc(
            ctx,
            &f.manifest.config,
            f.config_body.clone(),
            config_labels,
        )
        .await?;
        put_doc(
            ctx,
            &f.desc,
            f.body.clone(),
            to_labels(labels::manifest_labels(&f.manifest)),
        )
        .await?;
    }
    if let Some(index) = &index {
        put_doc(
            ctx,
            &root,
            root_body,
            to_labels(labels::index_labels(index)),
        )
        .await?;
    }

    let image = record_image(ctx, &name, &root).await?;
    (ctx.progress)(Progress::Done {
        name,
        digest: root.digest.to_string(),
    });
    Ok(image)
}

/// Fetches a manifest and its config. `strict`: this is the image to unpack (or the only
/// one), so its config must be a usable image config; other manifests of an index are kept
/// even when they are not images.
async fn fetch_image(ctx: &Ctx<'_>, desc: Descriptor, strict: bool) -> Result<Fetched> {
    let body = fetch_doc(ctx, &desc).await?;
    let manifest = parse_manifest(&body)?;
    let config_body = fetch_doc(ctx, &manifest.config).await?;
    let plan = match plan_of(&desc, &manifest, &config_body) {
        Ok(p) => Some(p),
        Err(e) if strict => return Err(e),
        Err(e) => {
            tracing::debug!(manifest = %desc.digest, error = %e, "not an image; fetched only");
            None
        }
    };
    Ok(Fetched {
        desc,
        body,
        manifest,
        config_body,
        plan,
    })
}

fn plan_of(
    desc: &Descriptor,
    manifest: &Manifest,
    config_body: &[u8],
) -> Result<(ImageConfig, Vec<LayerStep>)> {
    if !manifest.config.media_type.is_empty()
        && !media_types::is_config(&manifest.config.media_type)
    {
        return Err(Error::InvalidArgument(format!(
            "manifest {}: unsupported config media type {:?}",
            desc.digest, manifest.config.media_type
        )));
    }
    let config = parse_config(config_body)?;
    let steps = plan_unpack(manifest, &config)?;
    Ok((config, steps))
}

async fn record_image(ctx: &Ctx<'_>, name: &str, root: &Descriptor) -> Result<Image> {
    let target = berth_store::Descriptor {
        media_type: root.media_type.clone(),
        digest: root.digest.to_string(),
        size: i64::try_from(root.size)
            .map_err(|_| Error::InvalidArgument("descriptor size overflow".into()))?,
        annotations: root.annotations.clone().into_iter().collect(),
    };
    let image = Image {
        name: name.to_string(),
        labels: HashMap::new(),
        target,
        created_at: std::time::SystemTime::now(),
        updated_at: std::time::SystemTime::now(),
    };
    let (store, ns) = (ctx.store.clone(), ctx.ns.clone());
    blocking(move || match store.image_create(&ns, image.clone()) {
        Ok(i) => Ok(i),
        Err(e) if e.kind() == berth_store::ErrorKind::AlreadyExists => {
            Ok(store.image_update(&ns, image, &["target".to_string()])?)
        }
        Err(e) => Err(e.into()),
    })
    .await
}
