//! Garbage collection: roots, label edges, leases, expiry, snapshots, orphans, stale ingests.

mod common;

use std::time::{Duration, SystemTime};

use berth_store::{Descriptor, ErrorKind, Image, Labels, LeaseResource, SnapshotNode, Store};
use common::*;

const NS: &str = "default";

fn image(name: &str, digest: &str) -> Image {
    Image {
        name: name.into(),
        labels: Labels::new(),
        target: Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: digest.into(),
            size: 1,
            annotations: Default::default(),
        },
        created_at: SystemTime::UNIX_EPOCH,
        updated_at: SystemTime::UNIX_EPOCH,
    }
}

/// Writes config + layers + a manifest whose labels reference them, like a puller does.
fn put_image(s: &Store, name: &str, config: &[u8], layers: &[&[u8]]) -> String {
    let cfg = put(s, NS, config, Labels::new());
    let mut l = labels(&[("containerd.io/gc.ref.content.config", &cfg)]);
    for (i, layer) in layers.iter().enumerate() {
        let d = put(s, NS, layer, Labels::new());
        l.insert(format!("containerd.io/gc.ref.content.l.{i}"), d);
    }
    let manifest = put(s, NS, format!("manifest of {name}").as_bytes(), l);
    s.image_create(NS, image(name, &manifest)).expect("image");
    manifest
}

fn has(s: &Store, data: &[u8]) -> bool {
    match s.content_info(NS, &sha(data)) {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn shared_layers_survive_deleting_one_image() {
    let (dir, s) = store();
    put_image(&s, "a", b"config a", &[b"shared layer", b"layer a"]);
    put_image(&s, "b", b"config b", &[b"shared layer", b"layer b"]);
    put(&s, NS, b"garbage", Labels::new());

    let report = s.gc(&[]).expect("gc");
    assert_eq!(
        report.removed_content,
        vec![(NS.to_string(), sha(b"garbage"))]
    );
    assert_eq!(report.removed_blobs, 1);
    assert!(!blob_path(&dir, &sha(b"garbage")).exists());

    s.image_delete(NS, "a").expect("delete a");
    let report = s.gc(&[]).expect("gc");
    let mut want: Vec<(String, String)> = [&b"config a"[..], b"layer a", b"manifest of a"]
        .iter()
        .map(|d| (NS.to_string(), sha(d)))
        .collect();
    want.sort();
    assert_eq!(report.removed_content, want);
    assert_eq!(report.removed_blobs, 3);
    for kept in [
        &b"shared layer"[..],
        b"layer b",
        b"config b",
        b"manifest of b",
    ] {
        assert!(has(&s, kept));
        assert!(blob_path(&dir, &sha(kept)).exists());
        assert_eq!(read_all(&s, NS, &sha(kept)), kept);
    }
    for gone in [&b"layer a"[..], b"config a", b"manifest of a"] {
        assert!(!has(&s, gone));
        assert!(!blob_path(&dir, &sha(gone)).exists());
    }
    // Nothing left to do.
    assert_eq!(s.gc(&[]).expect("gc").removed_blobs, 0);
}

#[test]
fn lease_protects_content_until_deleted() {
    let (dir, s) = store();
    s.lease_create(NS, "pull", Labels::new()).expect("lease");
    let d = put_leased(&s, NS, b"leased", Labels::new(), Some("pull"));
    assert!(s.gc(&[]).expect("gc").removed_content.is_empty());
    assert!(has(&s, b"leased"));
    s.lease_delete(NS, "pull").expect("delete lease");
    let report = s.gc(&[]).expect("gc");
    assert_eq!(report.removed_content, vec![(NS.to_string(), d.clone())]);
    assert!(!blob_path(&dir, &d).exists());
}

#[test]
fn expired_lease_is_removed_and_does_not_protect() {
    let (_dir, s) = store();
    s.lease_create(
        NS,
        "old",
        labels(&[("containerd.io/gc.expire", "2001-01-01T00:00:00Z")]),
    )
    .expect("lease");
    s.lease_create(
        NS,
        "fresh",
        labels(&[("containerd.io/gc.expire", "2999-01-01T00:00:00+02:00")]),
    )
    .expect("lease");
    put_leased(&s, NS, b"old data", Labels::new(), Some("old"));
    put_leased(&s, NS, b"fresh data", Labels::new(), Some("fresh"));
    let report = s.gc(&[]).expect("gc");
    assert_eq!(
        report.removed_leases,
        vec![(NS.to_string(), "old".to_string())]
    );
    assert_eq!(
        report.removed_content,
        vec![(NS.to_string(), sha(b"old data"))]
    );
    assert!(has(&s, b"fresh data"));
    let leases: Vec<String> = s
        .lease_list(NS, &berth_store::Filter::all())
        .expect("list")
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(leases, vec!["fresh"]);
}

#[test]
fn gc_root_label_and_namespaces_share_blobs() {
    let (dir, s) = store();
    put(&s, NS, b"pinned", labels(&[("containerd.io/gc.root", "")]));
    let shared = put(&s, NS, b"shared", Labels::new());
    let other = put(
        &s,
        "other",
        b"shared",
        labels(&[("containerd.io/gc.root", "")]),
    );
    assert_eq!(shared, other);
    let report = s.gc(&[]).expect("gc");
    // The record in NS goes, but "other" still holds the blob file.
    assert_eq!(
        report.removed_content,
        vec![(NS.to_string(), shared.clone())]
    );
    assert_eq!(report.removed_blobs, 0);
    assert!(blob_path(&dir, &shared).exists());
    assert!(has(&s, b"pinned"));
    assert_eq!(read_all(&s, "other", &shared), b"shared");
}

#[test]
fn orphan_blob_files_are_removed() {
    let (dir, s) = store();
    let orphan = sha(b"orphan");
    std::fs::write(blob_path(&dir, &orphan), b"orphan").expect("write orphan");
    // Non-digest names are never touched.
    let stray = dir.path().join("content/blobs/sha256/not-a-digest");
    std::fs::write(&stray, b"x").expect("write stray");
    let report = s.gc(&[]).expect("gc");
    assert_eq!(report.removed_blobs, 1);
    assert!(!blob_path(&dir, &orphan).exists());
    assert!(stray.exists());
}

fn snap(key: &str, parent: Option<&str>, l: Labels) -> SnapshotNode {
    SnapshotNode {
        ns: NS.into(),
        snapshotter: "overlayfs".into(),
        key: key.into(),
        parent: parent.map(str::to_string),
        labels: l,
    }
}

#[test]
fn snapshots_via_containers_labels_and_parents() {
    let (_dir, s) = store();
    // Chain l1 <- l2 <- l3 (committed layers), plus an active "c1" on l3 used by a container.
    // A second chain m1 <- m2 is referenced only by a content label.
    // An unreferenced chain u1 <- u2 <- u3 must come back children first.
    let snaps = vec![
        snap("l1", None, Labels::new()),
        snap("l2", Some("l1"), Labels::new()),
        snap("l3", Some("l2"), Labels::new()),
        snap("c1", Some("l3"), Labels::new()),
        snap("m1", None, Labels::new()),
        snap("m2", Some("m1"), Labels::new()),
        snap("u1", None, Labels::new()),
        snap("u2", Some("u1"), Labels::new()),
        snap("u3", Some("u2"), Labels::new()),
        snap("r1", None, labels(&[("containerd.io/gc.root", "")])),
        // A snapshot pointing at content keeps it alive.
        snap(
            "r2",
            Some("r1"),
            labels(&[("containerd.io/gc.ref.content.x", &sha(b"by snapshot"))]),
        ),
    ];
    put(&s, NS, b"by snapshot", Labels::new());
    // Content, kept by a root label, referencing m2 through a snapshot label with a suffix.
    put(
        &s,
        NS,
        b"config",
        labels(&[
            ("containerd.io/gc.root", ""),
            ("containerd.io/gc.ref.snapshot.overlayfs/linux-amd64", "m2"),
        ]),
    );
    let c = berth_store::Container {
        id: "c1".into(),
        labels: Labels::new(),
        image: String::new(),
        runtime: berth_store::Runtime {
            name: "io.containerd.runc.v2".into(),
            options: None,
        },
        spec: Some(Default::default()),
        snapshotter: "overlayfs".into(),
        snapshot_key: "c1".into(),
        created_at: SystemTime::UNIX_EPOCH,
        updated_at: SystemTime::UNIX_EPOCH,
        extensions: Default::default(),
        sandbox: String::new(),
    };
    s.container_create(NS, c).expect("container");

    let report = s.gc(&snaps).expect("gc");
    let keys: Vec<&str> = report
        .removed_snapshots
        .iter()
        .map(|n| n.key.as_str())
        .collect();
    // r2 is unreachable (only r1 is a root and roots do not keep children).
    assert_eq!(keys, vec!["u3", "r2", "u2", "u1"]);
    // Edges from unreachable snapshots are not followed: r2's content goes too.
    assert_eq!(
        report.removed_content,
        vec![(NS.to_string(), sha(b"by snapshot"))]
    );
    assert!(has(&s, b"config"));

    // Without the container, the whole l-chain becomes garbage.
    s.container_delete(NS, "c1").expect("rm container");
    let report = s.gc(&snaps).expect("gc");
    let keys: Vec<&str> = report
        .removed_snapshots
        .iter()
        .map(|n| n.key.as_str())
        .collect();
    assert_eq!(keys.len(), 8);
    for k in ["c1", "l3", "l2", "l1", "u3", "u2", "u1", "r2"] {
        assert!(keys.contains(&k));
    }
    let pos = |k: &str| keys.iter().position(|x| *x == k).expect(k);
    assert!(pos("c1") < pos("l3") && pos("l3") < pos("l2") && pos("l2") < pos("l1"));
    assert!(!keys.contains(&"m1") && !keys.contains(&"m2") && !keys.contains(&"r1"));

    // A lease on a snapshot protects it and its parents.
    s.lease_create(NS, "extract", Labels::new()).expect("lease");
    s.lease_add_resource(
        NS,
        "extract",
        LeaseResource {
            id: "u2".into(),
            kind: "snapshots/overlayfs".into(),
        },
    )
    .expect("add");
    let report = s.gc(&snaps).expect("gc");
    let keys: Vec<&str> = report
        .removed_snapshots
        .iter()
        .map(|n| n.key.as_str())
        .collect();
    assert!(keys.contains(&"u3") && !keys.contains(&"u2") && !keys.contains(&"u1"));
}

#[test]
fn snapshot_label_keeps_content_alive() {
    let (_dir, s) = store();
    let d = put(&s, NS, b"by snapshot", Labels::new());
    let snaps = vec![
        snap("root", None, labels(&[("containerd.io/gc.root", "")])),
        snap("child", Some("root"), Labels::new()),
    ];
    // The root snapshot references nothing, so the content goes...
    assert_eq!(
        s.gc(&snaps).expect("gc").removed_content,
        vec![(NS.to_string(), d)]
    );
    // ...but a root snapshot with a content ref keeps it.
    let d = put(&s, NS, b"by snapshot", Labels::new());
    let snaps = vec![snap(
        "root",
        None,
        labels(&[
            ("containerd.io/gc.root", ""),
            ("containerd.io/gc.ref.content", &d),
        ]),
    )];
    assert!(s.gc(&snaps).expect("gc").removed_content.is_empty());
    assert!(has(&s, b"by snapshot"));
}

#[test]
fn stale_ingests_are_removed_unless_held() {
    let (dir, s) = store();
    s.lease_create(NS, "keep", Labels::new()).expect("lease");
    let old = SystemTime::now() - Duration::from_secs(25 * 3600);
    for (r, lease) in [
        ("stale", None),
        ("leased", Some("keep")),
        ("fresh", None),
        ("live", None),
    ] {
        let mut w = s.content_writer(NS, r, 0, None, lease).expect("writer");
        w.write(0, b"partial").expect("write");
    }
    let live = s
        .content_writer(NS, "live", 0, None, None)
        .expect("live writer");
    for entry in std::fs::read_dir(dir.path().join("content/ingest")).expect("dir") {
        let path = entry.expect("entry").path().join("data");
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path.with_file_name("meta.json")).expect("meta"))
                .expect("json");
        if meta["reference"] != "fresh" {
            let f = std::fs::File::options()
                .write(true)
                .open(&path)
                .expect("open");
            f.set_modified(old).expect("set mtime");
        }
    }
    let report = s.gc(&[]).expect("gc");
    assert_eq!(
        report.removed_ingests,
        vec![(NS.to_string(), "stale".to_string())]
    );
    let mut left: Vec<String> = s
        .ingest_list(NS, &berth_store::Filter::all())
        .expect("list")
        .into_iter()
        .map(|st| st.reference)
        .collect();
    left.sort();
    assert_eq!(left, vec!["fresh", "leased", "live"]);
    drop(live);
}
