//! Applying well-formed layers: entry types, metadata, digests, whiteouts.

mod common;

use std::fs;
use std::io::Cursor;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use berth_diff::{apply_layer, apply_to_mounts, ApplyOptions, WhiteoutMode};
use berth_snapshot::mount::TempMount;
use berth_snapshot::{Mount, Snapshotter};
use common::{gzip, listing, sha256, zstd, Layer, Sandbox, TAR, TAR_GZ, TAR_ZST};
use tar::EntryType;

fn remove_mode() -> ApplyOptions {
    ApplyOptions {
        whiteouts: WhiteoutMode::Remove,
        parents: Vec::new(),
    }
}

#[test]
fn entry_types_and_metadata() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .dir_mtime("d", 0o1777, 1_500_000_000)
        .file_owned("d/suid", b"s", 0o4755, 1000, 2000)
        .pax(&[
            ("SCHILY.xattr.user.note", b"hello"),
            ("mtime", b"1600000123.5"),
        ])
        .file("d/x", b"xattr")
        .symlink("d/link", "suid")
        .hardlink("d/hard", "d/suid")
        .node("d/fifo", EntryType::Fifo, 0, 0)
        .node("d/null", EntryType::Char, 1, 3)
        .build();
    let applied =
        apply_layer(Cursor::new(tar.clone()), TAR, &sb.root(), &remove_mode()).expect("apply");
    assert_eq!(applied.diff_id, sha256(&tar));
    assert_eq!(applied.size, tar.len() as u64);

    let r = sb.root();
    let d = fs::symlink_metadata(r.join("d")).expect("d");
    assert_eq!(d.mode() & 0o7777, 0o1777);
    // Set after the children were written.
    assert_eq!(d.mtime(), 1_500_000_000);
    let s = fs::symlink_metadata(r.join("d/suid")).expect("suid");
    assert_eq!(s.mode() & 0o7777, 0o4755);
    assert_eq!((s.uid(), s.gid()), (1000, 2000));
    assert_eq!(s.mtime(), 1_600_000_000);
    let h = fs::symlink_metadata(r.join("d/hard")).expect("hard");
    assert_eq!(h.ino(), s.ino());
    assert_eq!(
        fs::read_link(r.join("d/link")).expect("link"),
        Path::new("suid")
    );
    let x = fs::symlink_metadata(r.join("d/x")).expect("x");
    assert_eq!(x.mtime(), 1_600_000_123);
    assert_eq!(x.mtime_nsec(), 500_000_000);
    let mut buf = [0u8; 16];
    let n = rustix::fs::getxattr(r.join("d/x"), "user.note", &mut buf[..]).expect("xattr");
    assert_eq!(&buf[..n], b"hello");
    let fifo = fs::symlink_metadata(r.join("d/fifo")).expect("fifo");
    assert_eq!(fifo.mode() & 0o170000, 0o010000);
    let null = fs::symlink_metadata(r.join("d/null")).expect("null");
    assert_eq!(null.mode() & 0o170000, 0o020000);
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    sb.assert_untouched();
}

#[test]
fn compressed_layers_share_the_diff_id() {
    let tar = Layer::new()
        .dir("a", 0o755)
        .file("a/b", &[9u8; 10_000])
        .build();
    let want = sha256(&tar);
    for (data, media) in [
        (tar.clone(), TAR),
        (gzip(&tar), TAR_GZ),
        (zstd(&tar), TAR_ZST),
        // The media type is not trusted: gzip content under a plain type still works.
        (gzip(&tar), "application/vnd.docker.image.rootfs.diff.tar"),
        (
            tar.clone(),
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ),
    ] {
        let sb = Sandbox::new();
        let applied =
            apply_layer(Cursor::new(data), media, &sb.root(), &remove_mode()).expect("apply");
        assert_eq!(applied.diff_id, want, "{media}");
        assert_eq!(applied.size, tar.len() as u64);
        assert_eq!(fs::read(sb.root().join("a/b")).expect("b").len(), 10_000);
    }
}

#[test]
fn diff_id_covers_trailing_padding() {
    let mut tar = Layer::new().file("f", b"x").build();
    tar.extend_from_slice(&[0u8; 10240]);
    let sb = Sandbox::new();
    let applied =
        apply_layer(Cursor::new(tar.clone()), TAR, &sb.root(), &remove_mode()).expect("apply");
    assert_eq!(applied.diff_id, sha256(&tar));
    assert_eq!(applied.size, tar.len() as u64);
}

#[test]
fn replacing_entries() {
    let sb = Sandbox::new();
    let r = sb.root();
    fs::create_dir_all(r.join("keepdir")).expect("mkdir");
    fs::write(r.join("keepdir/old"), b"old").expect("write");
    fs::create_dir_all(r.join("wasdir/sub")).expect("mkdir");
    fs::write(r.join("wasfile"), b"f").expect("write");
    let tar = Layer::new()
        .dir("keepdir", 0o700)
        .file("wasdir", b"now a file")
        .dir("wasfile", 0o755)
        .file("wasfile/inner", b"i")
        .build();
    apply_layer(Cursor::new(tar), TAR, &r, &remove_mode()).expect("apply");
    assert_eq!(fs::read(r.join("keepdir/old")).expect("old"), b"old");
    assert_eq!(
        fs::metadata(r.join("keepdir"))
            .expect("md")
            .permissions()
            .mode()
            & 0o7777,
        0o700
    );
    assert_eq!(fs::read(r.join("wasdir")).expect("wasdir"), b"now a file");
    assert_eq!(fs::read(r.join("wasfile/inner")).expect("inner"), b"i");
}

/// Lower layer used by the whiteout tests.
fn make_lower(dir: &Path) {
    fs::create_dir_all(dir.join("d/sub")).expect("mkdir");
    fs::write(dir.join("a"), b"a").expect("a");
    fs::write(dir.join("b"), b"b").expect("b");
    fs::write(dir.join("d/x"), b"x").expect("x");
    fs::write(dir.join("d/sub/y"), b"y").expect("y");
    fs::write(dir.join("hl-src"), b"shared").expect("hl");
}

fn whiteout_layer() -> Vec<u8> {
    Layer::new()
        .file(".wh.a", b"")
        .dir("d", 0o755)
        .file("d/.wh..wh..opq", b"")
        .file("d/z", b"z")
        .file("c", b"c")
        .file(".wh..wh.plnk", b"")
        .hardlink("hl", "hl-src")
        .build()
}

fn overlay_mount(lower: &Path, upper: &Path, work: &Path) -> Vec<Mount> {
    vec![Mount {
        mount_type: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options: vec![
            format!("lowerdir={}", lower.display()),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
        ],
    }]
}

#[test]
fn overlay_and_remove_modes_give_the_same_merged_view() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (lower, upper, work, copy) = (
        tmp.path().join("lower"),
        tmp.path().join("upper"),
        tmp.path().join("work"),
        tmp.path().join("copy"),
    );
    for d in [&lower, &upper, &work, &copy] {
        fs::create_dir(d).expect("mkdir");
    }
    make_lower(&lower);
    make_lower(&copy);

    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Overlay,
        parents: vec![lower.clone()],
    };
    apply_layer(Cursor::new(whiteout_layer()), TAR, &upper, &opts).expect("apply overlay");
    // The upper dir holds overlayfs's own whiteout forms.
    let wh = fs::symlink_metadata(upper.join("a")).expect("whiteout");
    assert_eq!(wh.mode() & 0o170000, 0o020000);
    assert_eq!(wh.rdev(), 0);
    let mut buf = [0u8; 4];
    let n = rustix::fs::getxattr(upper.join("d"), "trusted.overlay.opaque", &mut buf[..])
        .expect("opaque xattr");
    assert_eq!(&buf[..n], b"y");

    apply_layer(Cursor::new(whiteout_layer()), TAR, &copy, &remove_mode()).expect("apply remove");

    let merged = TempMount::new(&overlay_mount(&lower, &upper, &work)).expect("mount overlay");
    let seen = listing(merged.path());
    merged.release().expect("unmount");
    let expected: Vec<(&str, &str)> = vec![
        ("b", "file:b"),
        ("c", "file:c"),
        ("d", "dir"),
        ("d/z", "file:z"),
        ("hl", "file:shared"),
        ("hl-src", "file:shared"),
    ];
    let expected: std::collections::BTreeMap<String, String> = expected
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(listing(&copy), expected);
}

#[test]
fn apply_to_snapshot_mounts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let overlay = berth_snapshot::open_overlay(&tmp.path().join("overlay")).expect("overlay");
    let native = berth_snapshot::open_native(&tmp.path().join("native")).expect("native");
    let base = Layer::new()
        .dir("etc", 0o755)
        .file("etc/os", b"base")
        .file("gone", b"g")
        .build();
    let top = Layer::new()
        .file("etc/os", b"top")
        .file(".wh.gone", b"")
        .build();
    let snapshotters: [&dyn Snapshotter; 2] = [&overlay, &native];
    for s in snapshotters {
        let m = s.prepare("l1", None, Default::default()).expect("prepare");
        let applied = apply_to_mounts(Cursor::new(gzip(&base)), TAR_GZ, &m).expect("apply base");
        assert_eq!(applied.diff_id, sha256(&base));
        s.commit("c1", "l1", Default::default()).expect("commit");
        let m = s
            .prepare("l2", Some("c1"), Default::default())
            .expect("prepare 2");
        apply_to_mounts(Cursor::new(top.clone()), TAR, &m).expect("apply top");
        s.commit("c2", "l2", Default::default()).expect("commit 2");
        s.view("v", Some("c2"), Default::default()).expect("view");
        let view = TempMount::new(&s.mounts("v").expect("mounts")).expect("mount view");
        let seen = listing(view.path());
        view.release().expect("unmount");
        assert_eq!(
            seen.get("etc/os").map(String::as_str),
            Some("file:top"),
            "{}",
            s.name()
        );
        assert!(!seen.contains_key("gone"), "{}: {seen:?}", s.name());
    }
}

#[test]
fn apply_through_a_temporary_mount() {
    // Two stacked mounts: not a shape apply_to_mounts can shortcut, so it mounts them.
    let tmp = tempfile::tempdir().expect("tempdir");
    let (lower, upper, work) = (
        tmp.path().join("lower"),
        tmp.path().join("upper"),
        tmp.path().join("work"),
    );
    for d in [&lower, &upper, &work] {
        fs::create_dir(d).expect("mkdir");
    }
    make_lower(&lower);
    let mut mounts = overlay_mount(&lower, &upper, &work);
    mounts[0].options.insert(0, "rw".into());
    let mut both = vec![Mount {
        mount_type: "tmpfs".into(),
        source: "tmpfs".into(),
        target: String::new(),
        options: vec!["size=1m".into()],
    }];
    both.extend(mounts);
    apply_to_mounts(Cursor::new(whiteout_layer()), TAR, &both).expect("apply");
    // Whiteouts were applied by removal through the merged mount: overlayfs itself
    // recorded them in the upper dir.
    assert!(!upper.join("b").exists());
    assert_eq!(fs::read(upper.join("c")).expect("c"), b"c");
    let wh = fs::symlink_metadata(upper.join("a")).expect("overlay whiteout");
    assert_eq!(wh.rdev(), 0);
}
