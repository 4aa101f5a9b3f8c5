//! containerd's API, called directly (containerd-client), for tests that assert gRPC codes.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    PrepareSnapshotRequest, RemoveSnapshotRequest, ViewSnapshotRequest,
};
use containerd_client::services::v1::{ApplyRequest, WriteAction, WriteContentRequest};
use containerd_client::types::{Descriptor, Mount};
use tonic::transport::Channel;
use tonic::{Request, Status};

pub fn req<T>(ns: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "containerd-namespace",
        ns.parse().expect("namespace header"),
    );
    r
}

/// Writes `data` as one blob through Content.Write, committing with `expected` as the digest.
pub async fn write_blob(
    ch: &Channel,
    ns: &str,
    reference: &str,
    data: &[u8],
    expected: &str,
) -> Result<(), Status> {
    let msgs = vec![
        WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: reference.to_string(),
            total: data.len() as i64,
            expected: expected.to_string(),
            offset: 0,
            data: data.to_vec(),
            labels: HashMap::new(),
        },
        WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference.to_string(),
            total: data.len() as i64,
            expected: expected.to_string(),
            offset: data.len() as i64,
            data: vec![],
            labels: HashMap::new(),
        },
    ];
    let mut stream = ContentClient::new(ch.clone())
        .write(req(ns, futures::stream::iter(msgs)))
        .await?
        .into_inner();
    while let Some(m) = stream.message().await? {
        if m.action == WriteAction::Commit as i32 {
            return Ok(());
        }
    }
    Err(Status::unknown(
        "write stream ended before the commit answer",
    ))
}

pub async fn prepare(
    ch: &Channel,
    ns: &str,
    snapshotter: &str,
    key: &str,
    parent: &str,
) -> Result<Vec<Mount>, Status> {
    Ok(SnapshotsClient::new(ch.clone())
        .prepare(req(
            ns,
            PrepareSnapshotRequest {
                snapshotter: snapshotter.into(),
                key: key.into(),
                parent: parent.into(),
                labels: HashMap::new(),
            },
        ))
        .await?
        .into_inner()
        .mounts)
}

pub async fn view(
    ch: &Channel,
    ns: &str,
    snapshotter: &str,
    key: &str,
    parent: &str,
) -> Result<Vec<Mount>, Status> {
    Ok(SnapshotsClient::new(ch.clone())
        .view(req(
            ns,
            ViewSnapshotRequest {
                snapshotter: snapshotter.into(),
                key: key.into(),
                parent: parent.into(),
                labels: HashMap::new(),
            },
        ))
        .await?
        .into_inner()
        .mounts)
}

pub async fn remove(ch: &Channel, ns: &str, snapshotter: &str, key: &str) -> Result<(), Status> {
    SnapshotsClient::new(ch.clone())
        .remove(req(
            ns,
            RemoveSnapshotRequest {
                snapshotter: snapshotter.into(),
                key: key.into(),
            },
        ))
        .await?;
    Ok(())
}

pub async fn apply(
    ch: &Channel,
    ns: &str,
    desc: Descriptor,
    mounts: Vec<Mount>,
) -> Result<Descriptor, Status> {
    let r = DiffClient::new(ch.clone())
        .apply(req(
            ns,
            ApplyRequest {
                diff: Some(desc),
                mounts,
                payloads: HashMap::new(),
                sync_fs: false,
            },
        ))
        .await?
        .into_inner();
    r.applied
        .ok_or_else(|| Status::unknown("no applied descriptor"))
}

/// Mounts what a snapshotter returned onto `target` (the way a runtime would), undone on drop.
pub struct MountGuard(std::path::PathBuf);

impl MountGuard {
    pub fn mount(mounts: &[Mount], target: &Path) -> MountGuard {
        assert_eq!(mounts.len(), 1, "one mount expected: {mounts:?}");
        let m = &mounts[0];
        let mut cmd = Command::new("mount");
        if m.r#type == "bind" {
            cmd.arg("--rbind").arg(&m.source).arg(target);
        } else {
            cmd.arg("-t")
                .arg(&m.r#type)
                .arg("-o")
                .arg(m.options.join(","))
                .arg(&m.source)
                .arg(target);
        }
        let out = cmd.output().expect("run mount");
        assert!(
            out.status.success(),
            "mount {m:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        MountGuard(target.to_path_buf())
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}
