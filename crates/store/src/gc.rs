//! Garbage collection: mark from roots along label/parent edges, then sweep.
//!
//! Roots per namespace: image targets, container snapshots, resources of live leases, and
//! content or snapshots labelled `containerd.io/gc.root`. Edges: `containerd.io/gc.ref.content*`
//! and `containerd.io/gc.ref.snapshot.<snapshotter>*` labels on images, containers, content and
//! snapshots, and a snapshot's parent.
//!
//! `gc` assumes callers have stopped other mutations for its duration (the daemon holds its own
//! lock). Internally it also excludes content commits, so a blob renamed into place but not yet
//! recorded is never taken for an orphan.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::time::{Duration, SystemTime};

use redb::ReadableTable;

use crate::db::{self, CONTAINERS, CONTENT, IMAGES, LEASES, LEASE_RESOURCES};
use crate::digest;
use crate::error::{Error, Result};
use crate::gc_labels::{EXPIRE, REF_CONTENT, REF_SNAPSHOT_PREFIX, ROOT};
use crate::ingest;
use crate::leases;
use crate::records::{Container, ContentInfo, Image, Labels, Lease};
use crate::resource_kinds::{CONTENT as KIND_CONTENT, INGESTS, SNAPSHOTS_PREFIX};
use crate::Store;

/// An ingest not written for this long, and not held by a lease or a live writer, is removed.
pub const STALE_INGEST: Duration = Duration::from_secs(24 * 60 * 60);

/// A snapshot as the daemon's snapshotters report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotNode {
    pub ns: String,
    pub snapshotter: String,
    pub key: String,
    pub parent: Option<String>,
    pub labels: Labels,
}

/// What a GC run removed (or, for snapshots, found unreachable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// `(namespace, digest)` content records deleted.
    pub removed_content: Vec<(String, String)>,
    /// Blob files deleted from disk (including orphans with no record).
    pub removed_blobs: usize,
    /// `(namespace, lease id)` expired leases deleted.
    pub removed_leases: Vec<(String, String)>,
    /// Unreachable snapshots, children before parents; the daemon removes them.
    pub removed_snapshots: Vec<SnapshotNode>,
    /// `(namespace, ref)` stale ingests deleted.
    pub removed_ingests: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Node {
    Content {
        ns: String,
        digest: String,
    },
    Snapshot {
        ns: String,
        snapshotter: String,
        key: String,
    },
}

/// The references a label set makes (containerd's gc.ref labels).
fn label_refs(ns: &str, labels: &Labels, out: &mut Vec<Node>) {
    for (k, v) in labels {
        if let Some(rest) = k.strip_prefix(REF_CONTENT) {
            if rest.is_empty() || rest.starts_with('.') || rest.starts_with('/') {
                out.push(Node::Content {
                    ns: ns.to_string(),
                    digest: v.clone(),
                });
            }
        } else if let Some(rest) = k.strip_prefix(REF_SNAPSHOT_PREFIX) {
            let snapshotter = rest.split('/').next().unwrap_or_default();
            if !snapshotter.is_empty() {
                out.push(Node::Snapshot {
                    ns: ns.to_string(),
                    snapshotter: snapshotter.to_string(),
                    key: v.clone(),
                });
            }
        }
    }
}

fn is_expired(lease: &Lease, now: SystemTime) -> bool {
    let Some(v) = lease.labels.get(EXPIRE) else {
        return false;
    };
    match time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339) {
        Ok(t) => SystemTime::from(t) <= now,
        Err(e) => {
            tracing::warn!(lease = %lease.id, value = %v, error = %e, "ignoring bad gc.expire label");
            false
        }
    }
}

/// Iterates a whole `(ns, id)` table, decoding values.
fn all_records<T: serde::de::DeserializeOwned>(
    t: &impl ReadableTable<db::NsKey, &'static [u8]>,
) -> Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    for entry in t.iter()? {
        let (k, v) = entry?;
        out.push((k.value().0.to_string(), db::decode(v.value())?));
    }
    Ok(out)
}

impl Store {
    /// Runs one mark-and-sweep collection. See the module docs for the rules.
    pub fn gc(&self, snapshots: &[SnapshotNode]) -> Result<GcReport> {
        let mut report = GcReport::default();
        let now = SystemTime::now();
        let _blobs = self.inner.write_blobs();
        let txn = self.db().begin_write()?;

        let mut roots = Vec::new();
        let mut leased_ingests = HashSet::new();

        for (ns, img) in all_records::<Image>(&txn.open_table(IMAGES)?)? {
            roots.push(Node::Content {
                ns: ns.clone(),
                digest: img.target.digest.clone(),
            });
            label_refs(&ns, &img.labels, &mut roots);
        }
        for (ns, c) in all_records::<Container>(&txn.open_table(CONTAINERS)?)? {
            if !c.snapshotter.is_empty() && !c.snapshot_key.is_empty() {
                roots.push(Node::Snapshot {
                    ns: ns.clone(),
                    snapshotter: c.snapshotter.clone(),
                    key: c.snapshot_key.clone(),
                });
            }
            label_refs(&ns, &c.labels, &mut roots);
        }
        // Collected first: deleting an expired lease reopens the leases table.
        let all_leases = all_records::<Lease>(&txn.open_table(LEASES)?)?;
        for (ns, lease) in all_leases {
            if is_expired(&lease, now) {
                leases::delete_lease(&txn, &ns, &lease.id)?;
                report.removed_leases.push((ns, lease.id));
                continue;
            }
            for r in leases::resources(&txn.open_table(LEASE_RESOURCES)?, &ns, &lease.id)? {
                match r.kind.as_str() {
                    KIND_CONTENT => roots.push(Node::Content {
                        ns: ns.clone(),
                        digest: r.id,
                    }),
                    INGESTS => {
                        leased_ingests.insert(ingest::key(&ns, &r.id));
                    }
                    k => {
                        if let Some(s) = k.strip_prefix(SNAPSHOTS_PREFIX) {
                            roots.push(Node::Snapshot {
                                ns: ns.clone(),
                                snapshotter: s.to_string(),
                                key: r.id,
                            });
                        }
                    }
                }
            }
        }

        let content: HashMap<(String, String), ContentInfo> =
            all_records::<ContentInfo>(&txn.open_table(CONTENT)?)?
                .into_iter()
                .map(|(ns, info)| ((ns, info.digest.clone()), info))
                .collect();
        for ((ns, digest), info) in &content {
            if info.labels.contains_key(ROOT) {
                roots.push(Node::Content {
                    ns: ns.clone(),
                    digest: digest.clone(),
                });
            }
        }
        let snaps: HashMap<(&str, &str, &str), &SnapshotNode> = snapshots
            .iter()
            .map(|s| ((s.ns.as_str(), s.snapshotter.as_str(), s.key.as_str()), s))
            .collect();
        for s in snapshots {
            if s.labels.contains_key(ROOT) {
                roots.push(Node::Snapshot {
                    ns: s.ns.clone(),
                    snapshotter: s.snapshotter.clone(),
                    key: s.key.clone(),
                });
            }
        }

        let marked = mark(roots, &content, &snaps);

        // Sweep content records.
        {
            let mut t = txn.open_table(CONTENT)?;
            for (ns, digest) in content.keys() {
                let node = Node::Content {
                    ns: ns.clone(),
                    digest: digest.clone(),
                };
                if !marked.contains(&node) {
                    t.remove((ns.as_str(), digest.as_str()))?;
                    report.removed_content.push((ns.clone(), digest.clone()));
                }
            }
        }
        report.removed_content.sort();
        let live_blobs: HashSet<String> = content
            .keys()
            .filter(|(ns, d)| {
                marked.contains(&Node::Content {
                    ns: ns.clone(),
                    digest: d.clone(),
                })
            })
            .filter_map(|(_, d)| digest::parse(d).ok().map(|d| d.hex().to_string()))
            .collect();
        // Records go first: a crash before the files go leaves orphans the next run removes.
        txn.commit()?;

        report.removed_blobs = self.sweep_blobs(&live_blobs)?;
        report.removed_snapshots = unreachable_snapshots(snapshots, &snaps, &marked);
        report.removed_ingests = self.sweep_ingests(&leased_ingests, now)?;
        tracing::info!(
            content = report.removed_content.len(),
            blobs = report.removed_blobs,
            leases = report.removed_leases.len(),
            snapshots = report.removed_snapshots.len(),
            ingests = report.removed_ingests.len(),
            "gc done"
        );
        Ok(report)
    }

    /// Removes blob files no namespace records. Only names that are digests are touched.
    fn sweep_blobs(&self, live: &HashSet<String>) -> Result<usize> {
        let dir = self.inner.blobs_dir();
        let mut removed = 0;
        for entry in fs::read_dir(&dir).map_err(Error::io(format!("read {}", dir.display())))? {
            let entry = entry.map_err(Error::io(format!("read {}", dir.display())))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if digest::is_sha256_hex(name) && !live.contains(name) {
                let path = entry.path();
                fs::remove_file(&path).map_err(Error::io(format!("remove {}", path.display())))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes ingests idle for [`STALE_INGEST`] that no lease or live writer holds.
    fn sweep_ingests(
        &self,
        leased: &HashSet<String>,
        now: SystemTime,
    ) -> Result<Vec<(String, String)>> {
        let mut removed = Vec::new();
        for (dir, meta) in ingest::all(&self.inner)? {
            let key = ingest::key(&meta.namespace, &meta.reference);
            if leased.contains(&key) {
                continue;
            }
            let locked = self
                .inner
                .locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&key);
            if locked {
                continue;
            }
            let touched = fs::metadata(dir.join(ingest::DATA))
                .or_else(|_| fs::metadata(&dir))
                .and_then(|m| m.modified())
                .unwrap_or(now);
            let idle = now.duration_since(touched).unwrap_or_default();
            if idle >= STALE_INGEST {
                fs::remove_dir_all(&dir).map_err(Error::io(format!("remove {}", dir.display())))?;
                removed.push((meta.namespace, meta.reference));
            }
        }
        removed.sort();
        Ok(removed)
    }
}

fn mark(
    roots: Vec<Node>,
    content: &HashMap<(String, String), ContentInfo>,
    snaps: &HashMap<(&str, &str, &str), &SnapshotNode>,
) -> HashSet<Node> {
    let mut marked = HashSet::new();
    let mut queue: VecDeque<Node> = roots.into();
    while let Some(node) = queue.pop_front() {
        if marked.contains(&node) {
            continue;
        }
        let mut next = Vec::new();
        match &node {
            Node::Content { ns, digest } => {
                if let Some(info) = content.get(&(ns.clone(), digest.clone())) {
                    label_refs(ns, &info.labels, &mut next);
                }
            }
            Node::Snapshot {
                ns,
                snapshotter,
                key,
            } => {
                if let Some(s) = snaps.get(&(ns.as_str(), snapshotter.as_str(), key.as_str())) {
                    if let Some(p) = s.parent.as_ref().filter(|p| !p.is_empty()) {
                        next.push(Node::Snapshot {
                            ns: ns.clone(),
                            snapshotter: snapshotter.clone(),
                            key: p.clone(),
                        });
                    }
                    label_refs(ns, &s.labels, &mut next);
                }
            }
        }
        marked.insert(node);
        queue.extend(next);
    }
    marked
}

/// Unmarked snapshots, ordered so every child comes before its parent (deepest first).
fn unreachable_snapshots(
    all: &[SnapshotNode],
    index: &HashMap<(&str, &str, &str), &SnapshotNode>,
    marked: &HashSet<Node>,
) -> Vec<SnapshotNode> {
    let depth = |s: &SnapshotNode| {
        let mut d = 0usize;
        let mut cur = s;
        // Bounded by the number of snapshots so a (corrupt) parent cycle cannot hang us.
        while d <= all.len() {
            let Some(p) = cur.parent.as_deref().filter(|p| !p.is_empty()) else {
                break;
            };
            let Some(parent) = index.get(&(cur.ns.as_str(), cur.snapshotter.as_str(), p)) else {
                break;
            };
            cur = parent;
            d += 1;
        }
        d
    };
    let mut out: Vec<(usize, &SnapshotNode)> = all
        .iter()
        .filter(|s| {
            !marked.contains(&Node::Snapshot {
                ns: s.ns.clone(),
                snapshotter: s.snapshotter.clone(),
                key: s.key.clone(),
            })
        })
        .map(|s| (depth(s), s))
        .collect();
    out.sort_by(|a, b| {
        b.0.cmp(&a.0).then_with(|| {
            (&a.1.ns, &a.1.snapshotter, &a.1.key).cmp(&(&b.1.ns, &b.1.snapshotter, &b.1.key))
        })
    });
    out.into_iter().map(|(_, s)| s.clone()).collect()
}
