//! Behaviour of both snapshotters against a real filesystem and real mounts (needs root).

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use berth_snapshot::mount::TempMount;
use berth_snapshot::{open_native, open_overlay, ErrorKind, Info, Kind, Snapshotter};

fn no_labels() -> HashMap<String, String> {
    HashMap::new()
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn both(test: impl Fn(&dyn Snapshotter, &Path)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let overlay = open_overlay(&dir.path().join("overlayfs")).expect("open overlay");
    test(&overlay, &dir.path().join("overlayfs"));
    let native = open_native(&dir.path().join("native")).expect("open native");
    test(&native, &dir.path().join("native"));
}

fn kind_of<T: std::fmt::Debug>(r: berth_snapshot::Result<T>) -> ErrorKind {
    r.expect_err("expected an error").kind()
}

#[test]
fn lifecycle_and_errors() {
    both(|s, _| {
        assert_eq!(
            kind_of(s.prepare("", None, no_labels())),
            ErrorKind::InvalidArgument
        );
        s.prepare("a", None, labels(&[("x", "1")]))
            .expect("prepare a");
        assert_eq!(
            kind_of(s.prepare("a", None, no_labels())),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            kind_of(s.prepare("b", Some("missing"), no_labels())),
            ErrorKind::NotFound
        );
        // Parent must be committed.
        assert_eq!(
            kind_of(s.prepare("b", Some("a"), no_labels())),
            ErrorKind::FailedPrecondition
        );
        assert_eq!(
            kind_of(s.view("v", Some("a"), no_labels())),
            ErrorKind::FailedPrecondition
        );

        let info = s.stat("a").expect("stat a");
        assert_eq!(info.kind, Kind::Active);
        assert_eq!(info.parent, None);
        assert_eq!(info.labels, labels(&[("x", "1")]));

        assert_eq!(
            kind_of(s.commit("c", "missing", no_labels())),
            ErrorKind::NotFound
        );
        s.commit("base", "a", labels(&[("y", "2")]))
            .expect("commit");
        assert_eq!(kind_of(s.stat("a")), ErrorKind::NotFound);
        let base = s.stat("base").expect("stat base");
        assert_eq!(base.kind, Kind::Committed);
        assert_eq!(base.labels, labels(&[("y", "2")]));
        assert_eq!(kind_of(s.mounts("base")), ErrorKind::FailedPrecondition);
        // Committing a committed snapshot is not allowed.
        assert_eq!(
            kind_of(s.commit("again", "base", no_labels())),
            ErrorKind::FailedPrecondition
        );

        s.prepare("child", Some("base"), no_labels())
            .expect("prepare child");
        assert_eq!(
            s.stat("child").expect("stat").parent.as_deref(),
            Some("base")
        );
        assert_eq!(
            kind_of(s.commit("base", "child", no_labels())),
            ErrorKind::AlreadyExists
        );
        // A failed commit leaves the active snapshot intact.
        assert_eq!(s.stat("child").expect("stat").kind, Kind::Active);

        s.view("view", Some("base"), no_labels()).expect("view");
        assert_eq!(s.stat("view").expect("stat").kind, Kind::View);
        assert_eq!(
            kind_of(s.commit("nope", "view", no_labels())),
            ErrorKind::FailedPrecondition
        );

        assert_eq!(kind_of(s.remove("base")), ErrorKind::FailedPrecondition);
        assert_eq!(kind_of(s.remove("missing")), ErrorKind::NotFound);
        s.remove("child").expect("remove child");
        s.remove("view").expect("remove view");
        let mut names: Vec<String> = s
            .list()
            .expect("list")
            .into_iter()
            .map(|i| i.name)
            .collect();
        names.sort();
        assert_eq!(names, vec!["base".to_string()]);
        s.remove("base").expect("remove committed childless");
        assert!(s.list().expect("list").is_empty());
    });
}

#[test]
fn removal_deletes_the_directory() {
    both(|s, root| {
        s.prepare("a", None, no_labels()).expect("prepare");
        let snaps = root.join("snapshots");
        assert_eq!(fs::read_dir(&snaps).expect("read").count(), 1);
        s.remove("a").expect("remove");
        assert_eq!(fs::read_dir(&snaps).expect("read").count(), 0);
    });
}

#[test]
fn update_labels() {
    both(|s, _| {
        s.prepare("a", None, labels(&[("keep", "1"), ("drop", "2")]))
            .expect("prepare");
        let mut info: Info = s.stat("a").expect("stat");

        info.labels = labels(&[("new", "3")]);
        let got = s.update(
            info.clone(),
            &["labels.new".to_string(), "labels.drop".to_string()],
        );
        assert_eq!(
            got.expect("update").labels,
            labels(&[("keep", "1"), ("new", "3")])
        );

        info.labels = labels(&[("only", "x")]);
        let got = s.update(info.clone(), &[]).expect("update all");
        assert_eq!(got.labels, labels(&[("only", "x")]));
        assert!(got.updated_at >= got.created_at);

        let got = s
            .update(info.clone(), &["labels".to_string()])
            .expect("update labels");
        assert_eq!(got.labels, labels(&[("only", "x")]));

        assert_eq!(
            kind_of(s.update(info.clone(), &["parent".to_string()])),
            ErrorKind::InvalidArgument
        );
        info.name = "missing".into();
        assert_eq!(kind_of(s.update(info, &[])), ErrorKind::NotFound);
        assert_eq!(s.stat("a").expect("stat").labels, labels(&[("only", "x")]));
    });
}

#[test]
fn overlay_mount_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let s = open_overlay(root).expect("open");
    let fs_of = |n: u32| root.join(format!("snapshots/{n}/fs")).display().to_string();

    let m = s.prepare("l1", None, no_labels()).expect("prepare l1");
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].mount_type, "bind");
    assert_eq!(m[0].source, fs_of(1));
    assert_eq!(m[0].options, vec!["rw", "rbind"]);
    s.commit("c1", "l1", no_labels()).expect("commit");

    let m = s.view("v1", Some("c1"), no_labels()).expect("view of one");
    assert_eq!(m[0].mount_type, "bind");
    assert_eq!(m[0].source, fs_of(1));
    assert_eq!(m[0].options, vec!["ro", "rbind"]);

    s.prepare("l2", Some("c1"), no_labels())
        .expect("prepare l2");
    s.commit("c2", "l2", no_labels()).expect("commit");
    let m = s
        .prepare("l3", Some("c2"), no_labels())
        .expect("prepare l3");
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].mount_type, "overlay");
    assert_eq!(m[0].source, "overlay");
    let opts = &m[0].options;
    assert!(opts.contains(&format!("upperdir={}", fs_of(4))));
    assert!(opts.contains(&format!(
        "workdir={}",
        root.join("snapshots/4/work").display()
    )));
    assert_eq!(
        opts.last().expect("lowerdir"),
        &format!("lowerdir={}:{}", fs_of(3), fs_of(1))
    );
    assert_eq!(s.mounts("l3").expect("mounts"), m);

    let m = s.view("v2", Some("c2"), no_labels()).expect("view of two");
    assert_eq!(m[0].mount_type, "overlay");
    assert!(!m[0].options.iter().any(|o| o.starts_with("upperdir=")));
    assert!(!m[0].options.iter().any(|o| o.starts_with("workdir=")));
    assert_eq!(
        m[0].options.last().expect("lowerdir"),
        &format!("lowerdir={}:{}", fs_of(3), fs_of(1))
    );
}

#[test]
fn native_mount_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open_native(dir.path()).expect("open");
    let m = s.prepare("a", None, no_labels()).expect("prepare");
    assert_eq!(m[0].mount_type, "bind");
    assert_eq!(m[0].options, vec!["rw", "rbind"]);
    s.commit("c", "a", no_labels()).expect("commit");
    let m = s.view("v", Some("c"), no_labels()).expect("view");
    assert_eq!(m[0].mount_type, "bind");
    assert_eq!(m[0].options, vec!["ro", "rbind"]);
    assert_eq!(
        m[0].source,
        dir.path().join("snapshots/2/fs").display().to_string()
    );
}

/// Writes through a real mount of `key`, then unmounts (the guard also unmounts on panic).
fn write_in(s: &dyn Snapshotter, key: &str, f: impl FnOnce(&Path)) {
    let mounts = s.mounts(key).expect("mounts");
    let m = TempMount::new(&mounts).expect("mount");
    f(m.path());
    m.release().expect("unmount");
}

#[test]
fn chain_of_three_through_real_mounts() {
    both(|s, _| {
        s.prepare("k1", None, no_labels()).expect("prepare");
        write_in(s, "k1", |p| {
            fs::write(p.join("a"), b"one").expect("write a");
            fs::write(p.join("gone"), b"x").expect("write gone");
            fs::create_dir(p.join("d")).expect("mkdir");
            fs::write(p.join("d/inner"), b"in").expect("write inner");
        });
        s.commit("c1", "k1", no_labels()).expect("commit 1");

        s.prepare("k2", Some("c1"), no_labels()).expect("prepare 2");
        write_in(s, "k2", |p| {
            assert_eq!(fs::read(p.join("a")).expect("read a"), b"one");
            fs::write(p.join("a"), b"two").expect("overwrite a");
            fs::remove_file(p.join("gone")).expect("delete gone");
        });
        s.commit("c2", "k2", no_labels()).expect("commit 2");

        s.prepare("k3", Some("c2"), no_labels()).expect("prepare 3");
        write_in(s, "k3", |p| {
            fs::write(p.join("b"), b"three").expect("write b");
        });
        s.commit("c3", "k3", no_labels()).expect("commit 3");
        let usage = s.usage("c3").expect("usage");
        assert!(usage.inodes >= 2, "usage {usage:?}");

        s.view("v", Some("c3"), no_labels()).expect("view");
        let m = TempMount::new(&s.mounts("v").expect("mounts")).expect("mount view");
        let p = m.path();
        assert_eq!(fs::read(p.join("a")).expect("a"), b"two");
        assert_eq!(fs::read(p.join("b")).expect("b"), b"three");
        assert_eq!(fs::read(p.join("d/inner")).expect("inner"), b"in");
        assert!(!p.join("gone").exists());
        // A view is read-only.
        assert!(fs::write(p.join("new"), b"x").is_err());
        m.release().expect("unmount");
    });
}

#[test]
fn active_usage_counts_hardlinks_once() {
    both(|s, root| {
        s.prepare("a", None, no_labels()).expect("prepare");
        let before = s.usage("a").expect("usage");
        let fsdir = root.join("snapshots/1/fs");
        fs::write(fsdir.join("f"), vec![7u8; 64 * 1024]).expect("write");
        fs::hard_link(fsdir.join("f"), fsdir.join("g")).expect("link");
        let after = s.usage("a").expect("usage");
        assert_eq!(after.inodes, before.inodes + 1);
        assert!(after.size >= before.size + 64 * 1024);
        s.commit("c", "a", no_labels()).expect("commit");
        assert_eq!(s.usage("c").expect("usage"), after);
    });
}

#[test]
fn native_copy_preserves_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open_native(dir.path()).expect("open");
    s.prepare("a", None, no_labels()).expect("prepare");
    let src = dir.path().join("snapshots/1/fs");
    fs::write(src.join("file"), b"data").expect("write");
    // chown clears setuid, so it comes first.
    std::os::unix::fs::chown(src.join("file"), Some(1234), Some(5678)).expect("chown");
    fs::set_permissions(src.join("file"), fs::Permissions::from_mode(0o4755)).expect("chmod");
    fs::hard_link(src.join("file"), src.join("hard")).expect("link");
    std::os::unix::fs::symlink("file", src.join("sym")).expect("symlink");
    fs::create_dir(src.join("dir")).expect("mkdir");
    fs::set_permissions(src.join("dir"), fs::Permissions::from_mode(0o1777)).expect("chmod");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .expect("mknod");
    rustix::fs::lsetxattr(
        src.join("file"),
        "user.test",
        b"value",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("setxattr");
    let old = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 1_000_000,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 1_000_000,
            tv_nsec: 0,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        src.join("dir"),
        &old,
        rustix::fs::AtFlags::empty(),
    )
    .expect("utimes");
    s.commit("c", "a", no_labels()).expect("commit");
    s.prepare("b", Some("c"), no_labels())
        .expect("prepare copy");
    let dst = dir.path().join("snapshots/2/fs");

    let f = fs::symlink_metadata(dst.join("file")).expect("stat file");
    assert_eq!(f.mode() & 0o7777, 0o4755);
    assert_eq!((f.uid(), f.gid()), (1234, 5678));
    assert_eq!(fs::read(dst.join("file")).expect("read"), b"data");
    assert_eq!(
        fs::symlink_metadata(dst.join("hard")).expect("stat").ino(),
        f.ino()
    );
    assert_eq!(
        fs::read_link(dst.join("sym")).expect("readlink"),
        Path::new("file")
    );
    let d = fs::symlink_metadata(dst.join("dir")).expect("stat dir");
    assert_eq!(d.mode() & 0o7777, 0o1777);
    assert_eq!(d.mtime(), 1_000_000);
    let fifo = fs::symlink_metadata(dst.join("fifo")).expect("stat fifo");
    assert_eq!(fifo.mode() & libc_s_ifmt(), 0o010000);
    let null = fs::symlink_metadata(dst.join("null")).expect("stat null");
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    let mut buf = [0u8; 16];
    let n = rustix::fs::lgetxattr(dst.join("file"), "user.test", &mut buf[..]).expect("getxattr");
    assert_eq!(&buf[..n], b"value");
}

fn libc_s_ifmt() -> u32 {
    0o170000
}

#[test]
fn reopen_keeps_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open_overlay(dir.path()).expect("open");
        s.prepare("a", None, labels(&[("l", "v")]))
            .expect("prepare");
        s.commit("c", "a", no_labels()).expect("commit");
        s.prepare("b", Some("c"), no_labels()).expect("prepare b");
    }
    let s = open_overlay(dir.path()).expect("reopen");
    assert_eq!(s.stat("c").expect("stat c").kind, Kind::Committed);
    assert_eq!(s.stat("b").expect("stat b").parent.as_deref(), Some("c"));
    assert_eq!(s.list().expect("list").len(), 2);
    // Ids keep increasing after a reopen: the next snapshot gets a fresh directory.
    s.prepare("x", None, no_labels()).expect("prepare x");
    assert!(dir.path().join("snapshots/3/fs").is_dir());
    assert!(dir.path().join("snapshots/2/fs").is_dir());
}

#[test]
fn cleanup_after_simulated_crash() {
    both(|s, root| {
        s.prepare("keep", None, no_labels()).expect("prepare");
        let snaps = root.join("snapshots");
        fs::create_dir_all(snaps.join("tmp-new-crashed/fs")).expect("tmp");
        fs::write(snaps.join("tmp-new-crashed/fs/file"), b"x").expect("tmp file");
        fs::create_dir_all(snaps.join("99/fs")).expect("orphan");
        fs::create_dir_all(snaps.join("2/fs")).expect("orphan with next id");
        s.cleanup().expect("cleanup");
        let mut left: Vec<String> = fs::read_dir(&snaps)
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["1".to_string()]);
        // The next id lands where the orphan was, and works.
        s.prepare("next", None, no_labels())
            .expect("prepare after cleanup");
    });
}

#[test]
fn cleanup_runs_at_open_and_next_id_survives_orphans() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open_overlay(dir.path()).expect("open");
        s.prepare("a", None, no_labels()).expect("prepare");
    }
    let snaps = dir.path().join("snapshots");
    fs::create_dir_all(snaps.join("tmp-rm-x")).expect("tmp");
    // A crash between rename and metadata commit leaves the next id's directory behind.
    fs::create_dir_all(snaps.join("2/fs/stale")).expect("orphan");
    let s = open_overlay(dir.path()).expect("reopen");
    assert!(!snaps.join("tmp-rm-x").exists());
    assert!(!snaps.join("2").exists());
    s.prepare("b", None, no_labels()).expect("prepare b");
    assert!(!snaps.join("2/fs/stale").exists());
}
