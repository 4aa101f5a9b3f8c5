//! A read-only look at an image's filesystem, to resolve user names from its /etc/passwd and
//! /etc/group as ctr does: a View snapshot of the image's top layer, mounted on a private temp
//! dir for the duration of one closure, then unmounted and removed. Works only where the CLI
//! runs as root on the daemon's host; callers fall back to numeric-only users otherwise.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use containerd_client::services::v1::snapshots::{RemoveSnapshotRequest, ViewSnapshotRequest};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::conn::Conn;

fn mount_one(m: &containerd_client::types::Mount, target: &Path) -> Result<()> {
    let mut flags = MsFlags::MS_RDONLY;
    let mut data = Vec::new();
    for o in &m.options {
        match o.as_str() {
            "ro" => {}
            "rw" => flags.remove(MsFlags::MS_RDONLY),
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            other => data.push(other),
        }
    }
    let data = data.join(",");
    let fstype = (m.r#type != "bind").then_some(m.r#type.as_str());
    mount(
        Some(m.source.as_str()),
        target,
        fstype,
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .with_context(|| format!("mount {} ({})", m.source, m.r#type))
}

/// Runs `f` on the mounted filesystem of committed snapshot `parent`.
pub async fn with_view<T>(
    conn: &Conn,
    snapshotter: &str,
    parent: &str,
    f: impl FnOnce(&Path) -> T,
) -> Result<T> {
    let key = format!(
        "berth-view-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let mounts = conn
        .snapshots()
        .view(ViewSnapshotRequest {
            snapshotter: snapshotter.into(),
            key: key.clone(),
            parent: parent.into(),
            labels: Default::default(),
        })
        .await?
        .into_inner()
        .mounts;
    let res = (|| {
        let [m] = mounts.as_slice() else {
            bail!("view has {} mounts, expected one", mounts.len());
        };
        let dir = tempfile::Builder::new().prefix("berth-rootfs-").tempdir()?;
        mount_one(m, dir.path())?;
        let out = f(dir.path());
        let _ = umount2(dir.path(), MntFlags::MNT_DETACH);
        Ok(out)
    })();
    let _ = conn
        .snapshots()
        .remove(RemoveSnapshotRequest {
            snapshotter: snapshotter.into(),
            key,
        })
        .await;
    res
}
