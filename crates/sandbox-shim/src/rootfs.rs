//! A container's filesystems, prepared on the host under `<sandbox>/c/<id>/` for the guest to
//! reach with hostfs: the snapshot's layers as idmapped mounts (read-only lowers, the writable
//! layer's directory) with an overlay over them, and the spec's bind mounts. Idmapped to the
//! guest kernel's host uid, so guest root reads and writes what the image's root owns, and what
//! it writes lands on disk owned by root again.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use berth_sandbox_proto::Mount as GuestMount;
use containerd_shim_protos::api::Mount;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::sys;
use crate::vm::CONTAINERS;

/// The guest-side (hostfs) path of `<sandbox>/c/<id>/<rest>`.
fn guest_path(id: &str, rest: &str) -> String {
    format!("/{CONTAINERS}/{id}/{rest}")
}

pub fn container_dir(sandbox: &Path, id: &str) -> PathBuf {
    sandbox.join(CONTAINERS).join(id)
}

fn option<'a>(options: &'a [String], key: &str) -> Option<&'a str> {
    options
        .iter()
        .find_map(|o| o.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

/// Mounts the container's root filesystem at `<sandbox>/c/<id>/rootfs`; returns its hostfs path.
pub fn mount_rootfs(
    sandbox: &Path,
    id: &str,
    rootfs: &[Mount],
    bundle: &Path,
    idmap: &OwnedFd,
) -> Result<String> {
    let base = container_dir(sandbox, id);
    let target = base.join("rootfs");
    std::fs::create_dir_all(&target).map_err(Error::io(format!("mkdir {}", target.display())))?;
    match rootfs {
        [] => sys::idmapped_bind(&bundle.join("rootfs"), &target, idmap, false)?,
        [m] if m.type_ == "overlay" => mount_overlay(&base, &target, &m.options, idmap)?,
        [m] if m.type_ == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind") => {
            let ro = m.options.iter().any(|o| o == "ro");
            sys::idmapped_bind(Path::new(&m.source), &target, idmap, ro)?
        }
        other => {
            return Err(Error::InvalidArgument(format!(
                "sandbox rootfs: unsupported mounts {:?}",
                other
                    .iter()
                    .map(|m| format!("{} {}", m.type_, m.source))
                    .collect::<Vec<_>>()
            )))
        }
    }
    Ok(guest_path(id, "rootfs"))
}

fn mount_overlay(base: &Path, target: &Path, options: &[String], idmap: &OwnedFd) -> Result<()> {
    let lowers = option(options, "lowerdir")
        .ok_or_else(|| Error::InvalidArgument("overlay rootfs without lowerdir".into()))?;
    let mut data = Vec::new();
    let mut new_lowers = Vec::new();
    for (i, lower) in lowers.split(':').enumerate() {
        let dst = base.join(format!("l{i}"));
        std::fs::create_dir_all(&dst).map_err(Error::io(format!("mkdir {}", dst.display())))?;
        sys::idmapped_bind(Path::new(lower), &dst, idmap, true)?;
        new_lowers.push(dst.display().to_string());
    }
    data.push(format!("lowerdir={}", new_lowers.join(":")));
    if let (Some(upper), Some(work)) = (option(options, "upperdir"), option(options, "workdir")) {
        let (upper, work) = (Path::new(upper), Path::new(work));
        let parent = upper
            .parent()
            .filter(|p| Some(*p) == work.parent())
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "overlay upperdir {} and workdir {} must share a directory",
                    upper.display(),
                    work.display()
                ))
            })?;
        let rw = base.join("rw");
        std::fs::create_dir_all(&rw).map_err(Error::io(format!("mkdir {}", rw.display())))?;
        sys::idmapped_bind(parent, &rw, idmap, false)?;
        let name = |p: &Path| p.file_name().map(|n| rw.join(n).display().to_string());
        data.push(format!("upperdir={}", name(upper).unwrap_or_default()));
        data.push(format!("workdir={}", name(work).unwrap_or_default()));
    }
    for o in options {
        if !["lowerdir=", "upperdir=", "workdir="]
            .iter()
            .any(|k| o.starts_with(k))
        {
            data.push(o.clone());
        }
    }
    sys::mount("overlay", target, "overlay", 0, &data.join(","))
}

/// Translates the spec's mounts: host binds become idmapped mounts under the container's
/// directory reached with hostfs; kernel filesystems are mounted by the guest itself.
pub fn translate_mounts(
    sandbox: &Path,
    id: &str,
    spec: &Value,
    idmap: &OwnedFd,
) -> Result<Vec<GuestMount>> {
    let base = container_dir(sandbox, id);
    let mut out = Vec::new();
    let mounts = spec
        .get("mounts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (n, m) in mounts.iter().enumerate() {
        let destination = m
            .get("destination")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let fstype = m.get("type").and_then(Value::as_str).unwrap_or_default();
        let source = m.get("source").and_then(Value::as_str).unwrap_or_default();
        let options: Vec<String> = m
            .get("options")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let is_bind = fstype == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
        if !is_bind {
            out.push(GuestMount::Guest {
                destination,
                fstype: fstype.to_string(),
                source: source.to_string(),
                options,
            });
            continue;
        }
        // The pod's shared memory lives in the guest: a tmpfs there, not the host's.
        if destination == "/dev/shm" {
            out.push(GuestMount::Guest {
                destination,
                fstype: "tmpfs".into(),
                source: "shm".into(),
                options: vec![
                    "nosuid".into(),
                    "nodev".into(),
                    "noexec".into(),
                    "size=65536k".into(),
                ],
            });
            continue;
        }
        let src = Path::new(source);
        let meta = std::fs::metadata(src).map_err(|e| {
            Error::InvalidArgument(format!("mount source {source} for {destination}: {e}"))
        })?;
        let readonly = options.iter().any(|o| o == "ro");
        let dir = base.join(format!("m{n}"));
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("mkdir {}", dir.display())))?;
        let file = if meta.is_dir() {
            sys::idmapped_bind(src, &dir, idmap, readonly)?;
            None
        } else {
            let f = dir.join("f");
            sys::make_target(src, &f)?;
            sys::idmapped_bind(src, &f, idmap, readonly)?;
            Some("f".to_string())
        };
        out.push(GuestMount::Hostfs {
            destination,
            path: guest_path(id, &format!("m{n}")),
            file,
            readonly,
        });
    }
    Ok(out)
}

/// Unmounts everything under the container's directory and removes it.
pub fn remove(sandbox: &Path, id: &str) -> Result<()> {
    let base = container_dir(sandbox, id);
    let mut mounts = sys::mounts_under(&base);
    // Deepest first: the overlay before the layers under it.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        sys::detach(Path::new(&m));
    }
    sys::remove_unmounted_tree(&base)
}
