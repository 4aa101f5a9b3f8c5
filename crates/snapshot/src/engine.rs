//! The snapshot lifecycle shared by both backends: metadata transactions, crash-safe
//! directory creation and removal, and cleanup. Backends differ only in how a new
//! snapshot directory is filled and which mounts describe it.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::meta::{self, now_ns, Lookup, MetaStore, Record, StoredKind};
use crate::types::{Info, Kind, Mount, Usage};

/// Label limits, as containerd's `labels.Validate`.
const MAX_LABEL_SIZE: usize = 4096;
/// Keys are stored, not used as paths, but are still bounded.
const MAX_KEY_SIZE: usize = 4096;

/// Backend-specific behaviour.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Flavor {
    Overlay { index_off: bool },
    Native,
}

pub(crate) struct Engine {
    root: PathBuf,
    meta: MetaStore,
    flavor: Flavor,
}

fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument(
            "snapshot key must not be empty".into(),
        ));
    }
    if key.len() > MAX_KEY_SIZE {
        return Err(Error::InvalidArgument(format!(
            "snapshot key longer than {MAX_KEY_SIZE} bytes"
        )));
    }
    Ok(())
}

fn validate_labels(labels: &HashMap<String, String>) -> Result<()> {
    for (k, v) in labels {
        if k.is_empty() {
            return Err(Error::InvalidArgument("label key must not be empty".into()));
        }
        if k.len() + v.len() > MAX_LABEL_SIZE {
            return Err(Error::InvalidArgument(format!(
                "label {k:?}: key and value longer than {MAX_LABEL_SIZE} bytes"
            )));
        }
    }
    Ok(())
}

/// A unique scratch name under `snapshots/`; cleanup removes anything that is not an id.
fn tmp_name(what: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("tmp-{what}-{}-{}-{n}", std::process::id(), now_ns())
}

impl Engine {
    pub fn open(root: &Path, flavor: Flavor) -> Result<Self> {
        fs::create_dir_all(root.join("snapshots"))
            .ctx(|| format!("create {}", root.join("snapshots").display()))?;
        let meta = MetaStore::open(&root.join("metadata.redb"))?;
        let engine = Engine {
            root: root.to_path_buf(),
            meta,
            flavor,
        };
        engine.cleanup()?;
        Ok(engine)
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    pub fn dir(&self, id: u64) -> PathBuf {
        self.snapshots_dir().join(id.to_string())
    }

    pub fn fs_dir(&self, id: u64) -> PathBuf {
        self.dir(id).join("fs")
    }

    fn work_dir(&self, id: u64) -> PathBuf {
        self.dir(id).join("work")
    }

    fn get(&self, key: &str) -> Result<Record> {
        self.meta
            .read(|t| Lookup::get(t, key))?
            .ok_or_else(|| Error::NotFound(key.to_string()))
    }

    pub fn stat(&self, key: &str) -> Result<Info> {
        Ok(self.get(key)?.info(key))
    }

    pub fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info> {
        validate_labels(&info.labels)?;
        let key = info.name.clone();
        self.meta.write(|tx| {
            let mut rec = tx.get(&key)?.ok_or_else(|| Error::NotFound(key.clone()))?;
            if fieldpaths.is_empty() {
                rec.labels = info.labels.clone();
            }
            for path in fieldpaths {
                if path == "labels" {
                    rec.labels = info.labels.clone();
                } else if let Some(label) = path.strip_prefix("labels.") {
                    // A label absent (or empty) in the request is removed, as containerd does.
                    match info.labels.get(label).filter(|v| !v.is_empty()) {
                        Some(v) => {
                            rec.labels.insert(label.to_string(), v.clone());
                        }
                        None => {
                            rec.labels.remove(label);
                        }
                    }
                } else {
                    return Err(Error::InvalidArgument(format!(
                        "cannot update {path:?} field on snapshot {key:?}"
                    )));
                }
            }
            rec.updated_ns = now_ns();
            tx.put(&key, &rec)?;
            Ok(rec.info(&key))
        })
    }

    pub fn usage(&self, key: &str) -> Result<Usage> {
        let rec = self.get(key)?;
        match rec.kind {
            StoredKind::Active => fsutil::disk_usage(&self.fs_dir(rec.id)),
            StoredKind::View | StoredKind::Committed => Ok(Usage {
                size: rec.size,
                inodes: rec.inodes,
            }),
        }
    }

    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let (rec, ancestors) = self.meta.read(|t| {
            let rec = Lookup::get(t, key)?.ok_or_else(|| Error::NotFound(key.to_string()))?;
            let ancestors = t.ancestor_ids(&rec)?;
            Ok((rec, ancestors))
        })?;
        if rec.kind == StoredKind::Committed {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {key:?} is committed and cannot be mounted"
            )));
        }
        Ok(self.mounts_for(&rec, &ancestors))
    }

    fn mounts_for(&self, rec: &Record, ancestors: &[u64]) -> Vec<Mount> {
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let bind = |source: PathBuf, ro: bool| Mount {
            mount_type: "bind".into(),
            source: path(source),
            target: String::new(),
            options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
        };
        let ro = rec.kind == StoredKind::View;
        match self.flavor {
            // Native snapshots are full copies: always a bind of their own tree.
            Flavor::Native => vec![bind(self.fs_dir(rec.id), ro)],
            Flavor::Overlay { index_off } => {
                if ancestors.is_empty() {
                    return vec![bind(self.fs_dir(rec.id), ro)];
                }
                if ro && ancestors.len() == 1 {
                    // Overlay needs two lower dirs when there is no upper dir.
                    return vec![bind(self.fs_dir(ancestors[0]), true)];
                }
                let mut options = Vec::new();
                if index_off {
                    options.push("index=off".to_string());
                }
                if !ro {
                    options.push(format!("workdir={}", path(self.work_dir(rec.id))));
                    options.push(format!("upperdir={}", path(self.fs_dir(rec.id))));
                }
                let lowers: Vec<String> =
                    ancestors.iter().map(|id| path(self.fs_dir(*id))).collect();
                options.push(format!("lowerdir={}", lowers.join(":")));
                vec![Mount {
                    mount_type: "overlay".into(),
                    source: "overlay".into(),
                    target: String::new(),
                    options,
                }]
            }
        }
    }

    /// Creates an active snapshot or a view.
    pub fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        validate_key(key)?;
        validate_labels(&labels)?;
        let stored = match kind {
            Kind::Active => StoredKind::Active,
            Kind::View => StoredKind::View,
            Kind::Committed => {
                return Err(Error::InvalidArgument(
                    "cannot create a committed snapshot directly".into(),
                ))
            }
        };
        // Validate first (cheap, and avoids a copy for a request that will fail).
        let parent_id = self.meta.read(|t| {
            if Lookup::get(t, key)?.is_some() {
                return Err(Error::AlreadyExists(key.to_string()));
            }
            parent.map(|p| Self::check_parent(t, p)).transpose()
        })?;

        let tmp = self.snapshots_dir().join(tmp_name("new"));
        let result = self.populate(&tmp, stored, parent_id).and_then(|()| {
            let mut renamed_to = None;
            let res = self.meta.write(|tx| {
                if tx.get(key)?.is_some() {
                    return Err(Error::AlreadyExists(key.to_string()));
                }
                let pid = parent
                    .map(|p| Self::check_parent(tx.lookup(), p))
                    .transpose()?;
                if pid != parent_id {
                    return Err(Error::FailedPrecondition(format!(
                        "parent of {key:?} changed concurrently"
                    )));
                }
                let id = tx.next_id()?;
                let now = now_ns();
                let rec = Record {
                    id,
                    kind: stored,
                    parent: parent.map(str::to_string),
                    labels: labels.clone(),
                    created_ns: now,
                    updated_ns: now,
                    size: 0,
                    inodes: 0,
                };
                tx.put(key, &rec)?;
                let ancestors = tx.lookup().ancestor_ids(&rec)?;
                // Rename inside the transaction: a crash before the commit leaves an
                // orphan directory (removed by cleanup), never a record without its data.
                let dest = self.dir(id);
                if dest.exists() {
                    // Ids are allocated only here, so an existing directory is an orphan.
                    fs::remove_dir_all(&dest)
                        .ctx(|| format!("remove orphan {}", dest.display()))?;
                }
                fs::rename(&tmp, &dest)
                    .ctx(|| format!("rename {} -> {}", tmp.display(), dest.display()))?;
                renamed_to = Some(dest);
                Ok(self.mounts_for(&rec, &ancestors))
            });
            if res.is_err() {
                if let Some(dest) = renamed_to {
                    let _ = fs::remove_dir_all(dest);
                }
            }
            res
        });
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    fn check_parent(t: &impl Lookup, parent: &str) -> Result<u64> {
        let prec = t
            .get(parent)?
            .ok_or_else(|| Error::NotFound(format!("parent snapshot {parent}")))?;
        if prec.kind != StoredKind::Committed {
            return Err(Error::FailedPrecondition(format!(
                "parent {parent:?} is not a committed snapshot"
            )));
        }
        Ok(prec.id)
    }

    /// Builds the directory layout of a new snapshot at `dir`.
    fn populate(&self, dir: &Path, kind: StoredKind, parent_id: Option<u64>) -> Result<()> {
        fs::create_dir(dir).ctx(|| format!("mkdir {}", dir.display()))?;
        let fs_dir = dir.join("fs");
        fs::create_dir(&fs_dir).ctx(|| format!("mkdir {}", fs_dir.display()))?;
        set_mode(&fs_dir, 0o755)?;
        match self.flavor {
            Flavor::Overlay { .. } => {
                if kind == StoredKind::Active {
                    let work = dir.join("work");
                    fs::create_dir(&work).ctx(|| format!("mkdir {}", work.display()))?;
                    set_mode(&work, 0o700)?;
                }
                // The upper dir's root takes the parent's owner so the merged root keeps it.
                if let Some(pid) = parent_id {
                    let pfs = self.fs_dir(pid);
                    let md = fs::metadata(&pfs).ctx(|| format!("stat {}", pfs.display()))?;
                    std::os::unix::fs::lchown(&fs_dir, Some(md.uid()), Some(md.gid()))
                        .ctx(|| format!("chown {}", fs_dir.display()))?;
                }
            }
            Flavor::Native => {
                if let Some(pid) = parent_id {
                    fsutil::copy_tree(&self.fs_dir(pid), &fs_dir)?;
                }
            }
        }
        Ok(())
    }

    pub fn commit(&self, name: &str, key: &str, labels: HashMap<String, String>) -> Result<()> {
        validate_key(name)?;
        validate_labels(&labels)?;
        let rec = self.get(key)?;
        if rec.kind != StoredKind::Active {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {key:?} is not active"
            )));
        }
        // Measure outside the write transaction so other writers are not blocked by a walk.
        let usage = fsutil::disk_usage(&self.fs_dir(rec.id))?;
        self.meta.write(|tx| {
            let current = tx
                .get(key)?
                .ok_or_else(|| Error::NotFound(key.to_string()))?;
            if current.kind != StoredKind::Active || current.id != rec.id {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot {key:?} is not active"
                )));
            }
            if tx.get(name)?.is_some() {
                return Err(Error::AlreadyExists(name.to_string()));
            }
            let now = now_ns();
            let committed = Record {
                id: current.id,
                kind: StoredKind::Committed,
                parent: current.parent.clone(),
                labels: labels.clone(),
                created_ns: now,
                updated_ns: now,
                size: usage.size,
                inodes: usage.inodes,
            };
            tx.delete(key)?;
            tx.put(name, &committed)?;
            Ok(())
        })?;
        // The work dir is only needed while the snapshot is an overlay upper dir.
        let _ = fs::remove_dir_all(self.work_dir(rec.id));
        Ok(())
    }

    pub fn remove(&self, key: &str) -> Result<()> {
        let id = self.meta.write(|tx| {
            let rec = tx
                .get(key)?
                .ok_or_else(|| Error::NotFound(key.to_string()))?;
            if tx.has_children(key)? {
                return Err(Error::FailedPrecondition(format!(
                    "cannot remove snapshot {key:?}: it has children"
                )));
            }
            tx.delete(key)?;
            Ok(rec.id)
        })?;
        // The record is gone; a crash from here on leaves an orphan that cleanup removes.
        let dir = self.dir(id);
        let doomed = self.snapshots_dir().join(tmp_name("rm"));
        if fs::rename(&dir, &doomed).is_ok() {
            remove_tree(&doomed)?;
        }
        Ok(())
    }

    pub fn list(&self) -> Result<Vec<Info>> {
        let all = self.meta.read(meta::all)?;
        Ok(all.iter().map(|(k, r)| r.info(k)).collect())
    }

    /// Removes every entry under `snapshots/` that no record points to.
    pub fn cleanup(&self) -> Result<()> {
        let known: std::collections::HashSet<String> = self
            .meta
            .read(meta::all)?
            .into_iter()
            .map(|(_, r)| r.id.to_string())
            .collect();
        let dir = self.snapshots_dir();
        for entry in fs::read_dir(&dir).ctx(|| format!("read dir {}", dir.display()))? {
            let entry = entry.ctx(|| format!("read dir {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if known.contains(&name) {
                continue;
            }
            remove_tree(&entry.path())?;
        }
        Ok(())
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .ctx(|| format!("chmod {}", path.display()))
}

/// Removes a file or directory tree; missing is fine.
fn remove_tree(path: &Path) -> Result<()> {
    let md = match fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
    };
    let res = if md.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    res.ctx(|| format!("remove {}", path.display()))
}
