//! Unpacking an image into snapshots through the Snapshots and Diff services, the way
//! containerd's unpacker does: one committed snapshot per layer chain id.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use berth_image::manifest::{parse_config, MAX_JSON_SIZE};
use berth_image::{
    labels, plan_unpack, select_manifest, Descriptor, Digest, Document, LayerStep, PlatformMatcher,
};
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{ApplyRequest, Info, ReadContentRequest, UpdateRequest};
use containerd_client::tonic::Code;

use crate::conn::Conn;
use crate::progress::Progress;

/// Reads a small blob (manifest, index, config) whole, refusing anything over the limit.
pub async fn read_small(conn: &Conn, digest: &Digest) -> Result<Vec<u8>> {
    let mut client = conn.content();
    let mut stream = client
        .read(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        })
        .await?
        .into_inner();
    let mut buf = Vec::new();
    while let Some(m) = stream.message().await? {
        buf.extend_from_slice(&m.data);
        if buf.len() as u64 > MAX_JSON_SIZE {
            bail!("blob {digest} is larger than {MAX_JSON_SIZE} bytes");
        }
    }
    if Digest::of(&buf) != *digest {
        bail!("content {digest} does not match its digest");
    }
    Ok(buf)
}

/// The platform manifest of `target` (itself, or the best match of an index).
pub async fn resolve_manifest(
    conn: &Conn,
    target: &Descriptor,
    matcher: &PlatformMatcher,
) -> Result<(Descriptor, berth_image::Manifest)> {
    let mut desc = target.clone();
    // Nested indexes are legal; bound the depth against hostile cycles.
    for _ in 0..4 {
        let bytes = read_small(conn, &desc.digest).await?;
        match Document::parse(&desc.media_type, &bytes)? {
            Document::Manifest(m) => return Ok((desc, m)),
            Document::Index(idx) => desc = select_manifest(&idx, matcher)?,
        }
    }
    bail!("index nesting too deep at {}", target.digest)
}

pub fn to_proto(d: &Descriptor) -> containerd_client::types::Descriptor {
    containerd_client::types::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: d.size as i64,
        annotations: d
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>(),
    }
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Unpacks the host-platform image `target` into `snapshotter`; returns the top chain id.
pub async fn unpack(
    conn: &Conn,
    name: &str,
    target: &Descriptor,
    snapshotter: &str,
    progress: &Progress,
) -> Result<Option<Digest>> {
    let matcher = PlatformMatcher::host();
    let (_, manifest) = resolve_manifest(conn, target, &matcher)
        .await
        .with_context(|| format!("unpack {name}"))?;
    let config = parse_config(&read_small(conn, &manifest.config.digest).await?)?;
    let plan = plan_unpack(&manifest, &config)?;
    for step in &plan {
        progress.status(format!("{name}: layer {}", step.layer.digest));
        let done = apply_layer(conn, snapshotter, step).await?;
        progress.line(format!(
            "{name}: layer {} {}",
            step.layer.digest,
            if done { "applied" } else { "exists" }
        ));
    }
    let Some(top) = plan.last().map(|s| s.chain_id.clone()) else {
        return Ok(None);
    };
    let (k, v) = labels::config_snapshot_label(snapshotter, &top);
    conn.content()
        .update(UpdateRequest {
            info: Some(Info {
                digest: manifest.config.digest.to_string(),
                labels: HashMap::from([(k.clone(), v)]),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![format!("labels.{k}")],
            }),
        })
        .await?;
    Ok(Some(top))
}

/// Applies one layer unless its chain id is already committed. Returns whether it applied.
async fn apply_layer(conn: &Conn, snapshotter: &str, step: &LayerStep) -> Result<bool> {
    let mut snaps = conn.snapshots();
    let stat = snaps
        .stat(StatSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: step.chain_id.to_string(),
        })
        .await;
    match stat {
        Ok(_) => return Ok(false),
        Err(s) if s.code() == Code::NotFound => {}
        Err(s) => return Err(s.into()),
    }
    let key = format!("extract-{}-{}", nanos(), step.chain_id);
    let mounts = snaps
        .prepare(PrepareSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.clone(),
            parent: step
                .parent
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            labels: HashMap::new(),
        })
        .await?
        .into_inner()
        .mounts;
    let result = apply_and_commit(conn, snapshotter, step, &key, mounts).await;
    if result.is_err() {
        // Leave nothing half-applied behind; the original error is what matters.
        let _ = snaps
            .remove(RemoveSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key,
            })
            .await;
    }
    result.map(|()| true)
}

async fn apply_and_commit(
    conn: &Conn,
    snapshotter: &str,
    step: &LayerStep,
    key: &str,
    mounts: Vec<containerd_client::types::Mount>,
) -> Result<()> {
    let applied = conn
        .diff()
        .apply(ApplyRequest {
            diff: Some(to_proto(&step.layer)),
            mounts,
            payloads: HashMap::new(),
            sync_fs: false,
        })
        .await?
        .into_inner()
        .applied
        .ok_or_else(|| anyhow!("diff service returned no descriptor"))?;
    if applied.digest != step.diff_id.to_string() {
        bail!(
            "layer {} unpacked to {}, but the config says {}",
            step.layer.digest,
            applied.digest,
            step.diff_id
        );
    }
    let commit = conn
        .snapshots()
        .commit(CommitSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            name: step.chain_id.to_string(),
            key: key.to_string(),
            labels: HashMap::new(),
        })
        .await;
    match commit {
        Ok(_) => Ok(()),
        // Someone else committed the same chain meanwhile: ours is redundant.
        Err(s) if s.code() == Code::AlreadyExists => {
            let _ = conn
                .snapshots()
                .remove(RemoveSnapshotRequest {
                    snapshotter: snapshotter.to_string(),
                    key: key.to_string(),
                })
                .await;
            Ok(())
        }
        Err(s) => Err(s.into()),
    }
}
