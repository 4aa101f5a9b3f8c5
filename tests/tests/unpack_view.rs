//! What an unpacked image looks like when mounted from `Snapshots.View`: busybox's binary, and the
//! merged view of a layer that deletes a file (whiteout) and one that replaces a directory (opaque),
//! with both snapshotters.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use berth_tests::client::{self, MountGuard};
use berth_tests::oci::{self, Entry};
use berth_tests::{
    chain_id, diff_ids, layout_blob_json, oci_index_refs, runtime, sha256_hex, test_images, Berthd,
};

#[test]
fn busybox_snapshot_has_busybox_binary() {
    let images = test_images();
    let d = Berthd::start();
    d.ctr(
        "default",
        &[
            "images",
            "import",
            images.join("busybox-oci.tar").to_str().expect("path"),
        ],
    )
    .ok();
    let layout = images.join("oci");
    let (_, digest) = oci_index_refs(&layout)
        .into_iter()
        .find(|(n, _)| n == "busybox")
        .expect("busybox");
    let manifest = layout_blob_json(&layout, &digest);
    let config = layout_blob_json(
        &layout,
        manifest["config"]["digest"].as_str().expect("config"),
    );
    let diff_ids = diff_ids(&config);
    let top = chain_id(&diff_ids);

    let rt = runtime();
    let ch = rt.block_on(d.channel());
    let mounts = rt
        .block_on(client::view(
            &ch,
            "default",
            "overlayfs",
            "check-busybox",
            &top,
        ))
        .expect("view");
    let target = tempfile::tempdir().expect("mount point");
    let _m = MountGuard::mount(&mounts, target.path());
    let meta = std::fs::symlink_metadata(target.path().join("bin/busybox")).expect("bin/busybox");
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!(meta.uid(), 0);
    let sh = std::fs::read_link(target.path().join("bin/sh")).expect("bin/sh link");
    assert_eq!(sh.to_str(), Some("/bin/busybox"));
    let tmp = std::fs::metadata(target.path().join("tmp")).expect("tmp");
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
}

fn whiteout_image() -> oci::Image {
    let base = oci::layer_tar(&[
        Entry::Dir("etc/"),
        oci::file("etc/keep", b"kept"),
        oci::file("etc/gone", b"deleted by the next layer"),
        Entry::Dir("opq/"),
        oci::file("opq/old", b"hidden by the opaque dir"),
        Entry::Dir("opq/sub/"),
        oci::file("opq/sub/deep", b"hidden too"),
        Entry::File("bin-tool".into(), b"#!/bin/sh\n".to_vec(), 0o4755),
    ]);
    let top = oci::layer_tar(&[
        Entry::Dir("etc/"),
        oci::file("etc/.wh.gone", b""),
        Entry::Dir("opq/"),
        oci::file("opq/.wh..wh..opq", b""),
        oci::file("opq/new", b"new"),
        oci::file("added", b"added"),
    ]);
    oci::Image::new(
        "example.com/test/whiteouts:1",
        vec![(oci::LAYER_GZIP, base), (oci::LAYER_TAR, top)],
    )
}

fn check_merged_view(snapshotter: &str) {
    let img = whiteout_image();
    let diff_ids = diff_ids(&serde_json::from_slice(&img.config.data).expect("config"));
    let dir = tempfile::tempdir().expect("tmp");
    let tar = dir.path().join("whiteouts.tar");
    std::fs::write(&tar, oci::layout_tar(&[img], &[])).expect("write tar");

    let d = Berthd::start();
    d.ctr(
        "default",
        &[
            "images",
            "import",
            "--snapshotter",
            snapshotter,
            tar.to_str().expect("path"),
        ],
    )
    .ok();
    let rt = runtime();
    let ch = rt.block_on(d.channel());
    let mounts = rt
        .block_on(client::view(
            &ch,
            "default",
            snapshotter,
            "merged",
            &chain_id(&diff_ids),
        ))
        .expect("view");
    let target = dir.path().join("mnt");
    std::fs::create_dir(&target).expect("mkdir");
    let _m = MountGuard::mount(&mounts, &target);
    let t = |p: &str| target.join(p);
    assert_eq!(std::fs::read(t("etc/keep")).expect("keep"), b"kept");
    assert!(
        !t("etc/gone").exists() && std::fs::symlink_metadata(t("etc/gone")).is_err(),
        "whiteout not applied"
    );
    assert!(!t("etc/.wh.gone").exists(), "whiteout marker visible");
    assert!(
        !t("opq/old").exists() && !t("opq/sub").exists(),
        "opaque dir still shows the lower layer"
    );
    assert!(!t("opq/.wh..wh..opq").exists(), "opaque marker visible");
    assert_eq!(std::fs::read(t("opq/new")).expect("new"), b"new");
    assert_eq!(std::fs::read(t("added")).expect("added"), b"added");
    let mode = std::fs::metadata(t("bin-tool"))
        .expect("tool")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o4755, "setuid bit kept");
    let listing: Vec<String> = std::fs::read_dir(t("opq"))
        .expect("opq")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listing, vec!["new".to_string()]);
}

#[test]
fn whiteout_and_opaque_overlayfs() {
    check_merged_view("overlayfs");
}

#[test]
fn whiteout_and_opaque_native() {
    check_merged_view("native");
}

#[test]
fn applied_layer_reports_its_diff_id() {
    let tar = oci::layer_tar(&[oci::file("hello", b"world")]);
    let gz = oci::gzip(&tar);
    let digest = format!("sha256:{}", sha256_hex(&gz));
    let d = Berthd::start();
    let rt = runtime();
    let ch = rt.block_on(d.channel());
    rt.block_on(client::write_blob(&ch, "default", "layer-1", &gz, &digest))
        .expect("write");
    let mounts = rt
        .block_on(client::prepare(&ch, "default", "overlayfs", "apply-1", ""))
        .expect("prepare");
    let desc = containerd_client::types::Descriptor {
        media_type: oci::LAYER_GZIP.into(),
        digest,
        size: gz.len() as i64,
        annotations: Default::default(),
    };
    let applied = rt
        .block_on(client::apply(&ch, "default", desc, mounts))
        .expect("apply");
    assert_eq!(applied.digest, format!("sha256:{}", sha256_hex(&tar)));
    assert_eq!(applied.size, tar.len() as i64);
}
