//! Content store: writers, resume, truncate, verification, locking, durability, isolation.

mod common;

use berth_store::{ErrorKind, Filter, Labels, Store};
use common::*;

#[test]
fn write_commit_read_back() {
    let (dir, s) = store();
    let data = b"hello berth".to_vec();
    let mut w = s
        .content_writer("default", "ref-1", data.len() as i64, None, None)
        .expect("writer");
    assert_eq!(w.status().expect("status").offset, 0);
    assert_eq!(w.write(0, &data[..5]).expect("write"), 5);
    assert_eq!(w.write(5, &data[5..]).expect("write"), data.len() as i64);
    assert_eq!(w.digest(), sha(&data));
    let st = w.status().expect("status");
    assert_eq!(
        (st.offset, st.total, st.reference.as_str()),
        (11, 11, "ref-1")
    );
    let d = w
        .commit(data.len() as i64, Some(&sha(&data)), labels(&[("a", "b")]))
        .expect("commit");
    assert_eq!(d, sha(&data));
    // A committed writer refuses more work.
    assert_eq!(
        w.write(11, b"x").expect_err("closed").kind(),
        ErrorKind::FailedPrecondition
    );
    drop(w);

    let info = s.content_info("default", &d).expect("info");
    assert_eq!(info.size, 11);
    assert_eq!(info.labels, labels(&[("a", "b")]));
    assert_eq!(read_all(&s, "default", &d), data);
    assert_eq!(std::fs::read(blob_path(&dir, &d)).expect("blob"), data);
    // The ingest is gone.
    assert_eq!(
        s.ingest_status("default", "ref-1")
            .expect_err("gone")
            .kind(),
        ErrorKind::NotFound
    );
    assert!(s
        .ingest_list("default", &Filter::all())
        .expect("list")
        .is_empty());
}

#[test]
fn resume_after_drop_continues_at_offset() {
    let (_dir, s) = store();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    {
        let mut w = s
            .content_writer(
                "default",
                "layer",
                data.len() as i64,
                Some(&sha(&data)),
                None,
            )
            .expect("writer");
        w.write(0, &data[..100_000]).expect("write");
    }
    let st = s.ingest_status("default", "layer").expect("status");
    assert_eq!(st.offset, 100_000);
    assert_eq!(st.total, data.len() as i64);
    assert_eq!(st.expected.as_deref(), Some(sha(&data).as_str()));

    let mut w = s
        .content_writer("default", "layer", data.len() as i64, None, None)
        .expect("resume");
    assert_eq!(w.status().expect("status").offset, 100_000);
    w.write(100_000, &data[100_000..]).expect("write rest");
    // No explicit expected at commit: the one given at open is enforced.
    let d = w.commit(0, None, Labels::new()).expect("commit");
    assert_eq!(d, sha(&data));
    assert_eq!(read_all(&s, "default", &d), data);
}

#[test]
fn write_below_offset_truncates_and_rehashes() {
    let (_dir, s) = store();
    let mut w = s
        .content_writer("default", "t", 0, None, None)
        .expect("writer");
    w.write(0, b"hello world").expect("write");
    assert_eq!(w.write(5, b"XYZ").expect("overwrite"), 8);
    assert_eq!(w.digest(), sha(b"helloXYZ"));
    // Restart from zero, like a client retrying a whole blob.
    assert_eq!(w.write(0, b"abc").expect("restart"), 3);
    let d = w
        .commit(3, Some(&sha(b"abc")), Labels::new())
        .expect("commit");
    assert_eq!(read_all(&s, "default", &d), b"abc");

    // Resume also rehashes an on-disk prefix correctly after truncation.
    let mut w = s
        .content_writer("default", "t2", 0, None, None)
        .expect("writer");
    w.write(0, b"0123456789").expect("write");
    drop(w);
    let mut w = s
        .content_writer("default", "t2", 0, None, None)
        .expect("resume");
    w.write(4, b"xy").expect("truncate");
    assert_eq!(w.digest(), sha(b"0123xy"));
}

#[test]
fn write_beyond_offset_is_invalid() {
    let (_dir, s) = store();
    let mut w = s
        .content_writer("default", "gap", 0, None, None)
        .expect("writer");
    w.write(0, b"abc").expect("write");
    assert_eq!(
        w.write(4, b"d").expect_err("gap").kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        w.write(-1, b"d").expect_err("neg").kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(w.status().expect("status").offset, 3);
}

#[test]
fn commit_verifies_size_and_digest() {
    let (dir, s) = store();
    let mut w = s
        .content_writer("default", "v", 0, None, None)
        .expect("writer");
    w.write(0, b"payload").expect("write");
    let err = w.commit(99, None, Labels::new()).expect_err("size");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    let err = w
        .commit(7, Some(&sha(b"other")), Labels::new())
        .expect_err("digest");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(
        err.to_string().contains("unexpected commit digest"),
        "{err}"
    );
    let err = w
        .commit(7, Some("md5:abc"), Labels::new())
        .expect_err("algo");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    // Nothing was recorded or moved by the failed commits.
    assert!(s
        .content_list("default", &Filter::all())
        .expect("list")
        .is_empty());
    assert!(!blob_path(&dir, &sha(b"payload")).exists());
    // The writer is still usable.
    let d = w
        .commit(7, Some(&sha(b"payload")), Labels::new())
        .expect("commit");
    assert_eq!(d, sha(b"payload"));

    // A writer opened with an expected digest rejects other data at commit.
    let mut w = s
        .content_writer("default", "v2", 0, Some(&sha(b"good")), None)
        .expect("writer");
    w.write(0, b"evil").expect("write");
    assert_eq!(
        w.commit(0, None, Labels::new())
            .expect_err("mismatch")
            .kind(),
        ErrorKind::FailedPrecondition
    );
}

#[test]
fn abort_removes_ingest() {
    let (dir, s) = store();
    let mut w = s
        .content_writer("default", "ab", 10, None, None)
        .expect("writer");
    w.write(0, b"12345").expect("write");
    drop(w);
    assert_eq!(
        s.ingest_list("default", &Filter::all())
            .expect("list")
            .len(),
        1
    );
    s.ingest_abort("default", "ab").expect("abort");
    assert_eq!(
        s.ingest_status("default", "ab").expect_err("gone").kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        s.ingest_abort("default", "ab").expect_err("again").kind(),
        ErrorKind::NotFound
    );
    let ingest_root = dir.path().join("content/ingest");
    assert_eq!(std::fs::read_dir(ingest_root).expect("read").count(), 0);
    // A fresh writer on the same ref starts from zero.
    let w = s
        .content_writer("default", "ab", 10, None, None)
        .expect("writer");
    assert_eq!(w.status().expect("status").offset, 0);
}

#[test]
fn one_live_writer_per_ref() {
    let (_dir, s) = store();
    let w = s
        .content_writer("default", "busy", 0, None, None)
        .expect("first");
    let err = s
        .content_writer("default", "busy", 0, None, None)
        .expect_err("second writer must fail");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains("locked"), "{err}");
    // Same ref in another namespace is a different ingest.
    let other = s
        .content_writer("other", "busy", 0, None, None)
        .expect("other ns");
    drop(other);
    drop(w);
    s.content_writer("default", "busy", 0, None, None)
        .expect("after release");
}

#[test]
fn expected_existing_blob_short_circuits() {
    let (_dir, s) = store();
    let d = put(&s, "a", b"shared layer", Labels::new());
    // Same namespace: AlreadyExists.
    let err = s
        .content_writer("a", "again", 0, Some(&d), None)
        .expect_err("exists");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    // Other namespace: recorded there without rewriting, and the lease holds it.
    s.lease_create("b", "pull", Labels::new()).expect("lease");
    let err = s
        .content_writer("b", "again", 0, Some(&d), Some("pull"))
        .expect_err("exists");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(s.content_info("b", &d).expect("recorded in b").size, 12);
    assert_eq!(read_all(&s, "b", &d), b"shared layer");
    let res = s.lease_list_resources("b", "pull").expect("resources");
    assert_eq!(res.len(), 1);
    assert_eq!(
        (res[0].kind.as_str(), res[0].id.as_str()),
        ("content", d.as_str())
    );
    // No ingest was left behind.
    assert!(s.ingest_list("b", &Filter::all()).expect("list").is_empty());
}

#[test]
fn committing_existing_blob_records_and_reports_already_exists() {
    let (_dir, s) = store();
    let d = put(&s, "a", b"dup", Labels::new());
    let mut w = s.content_writer("b", "dup", 0, None, None).expect("writer");
    w.write(0, b"dup").expect("write");
    let err = w
        .commit(3, None, labels(&[("x", "y")]))
        .expect_err("exists");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    let info = s.content_info("b", &d).expect("recorded");
    assert_eq!(info.labels, labels(&[("x", "y")]));
    assert_eq!(
        s.ingest_status("b", "dup").expect_err("gone").kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn uncommitted_data_is_not_content_and_commits_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let committed;
    {
        let s = Store::open(dir.path()).expect("open");
        committed = put(&s, "default", b"durable", labels(&[("k", "v")]));
        let mut w = s
            .content_writer("default", "partial", 0, None, None)
            .expect("writer");
        w.write(0, b"never committed").expect("write");
        drop(w);
        let all = s.content_list("default", &Filter::all()).expect("list");
        assert_eq!(all.len(), 1);
        assert_eq!(
            s.content_info("default", &sha(b"never committed"))
                .expect_err("absent")
                .kind(),
            ErrorKind::NotFound
        );
    }
    let s = Store::open(dir.path()).expect("reopen");
    let info = s.content_info("default", &committed).expect("survives");
    assert_eq!(info.labels, labels(&[("k", "v")]));
    assert_eq!(read_all(&s, "default", &committed), b"durable");
    assert_eq!(
        s.content_list("default", &Filter::all())
            .expect("list")
            .len(),
        1
    );
    // The partial ingest is still resumable after the restart.
    assert_eq!(
        s.ingest_status("default", "partial")
            .expect("ingest")
            .offset,
        15
    );
}

#[test]
fn namespaces_isolate_content() {
    let (_dir, s) = store();
    let d = put(&s, "a", b"only in a", Labels::new());
    assert_eq!(
        s.content_info("b", &d).expect_err("b").kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        s.content_open("b", &d).expect_err("b").kind(),
        ErrorKind::NotFound
    );
    assert!(s
        .content_list("b", &Filter::all())
        .expect("list")
        .is_empty());
    assert_eq!(
        s.content_delete("b", &d).expect_err("b").kind(),
        ErrorKind::NotFound
    );
    // Ingests too.
    let w = s.content_writer("a", "r", 0, None, None).expect("writer");
    drop(w);
    assert!(s.ingest_list("b", &Filter::all()).expect("list").is_empty());
    assert_eq!(
        s.ingest_status("b", "r").expect_err("b").kind(),
        ErrorKind::NotFound
    );
    assert_eq!(s.ingest_list("a", &Filter::all()).expect("list").len(), 1);
}

#[test]
fn hostile_refs_stay_inside_ingest_dir() {
    let (dir, s) = store();
    let outside = dir.path().join("escape");
    for r in ["../../escape", "/etc/passwd", "a/../../b", "\0weird"] {
        let mut w = s
            .content_writer("default", r, 0, None, None)
            .expect("writer");
        w.write(0, b"x").expect("write");
        assert_eq!(s.ingest_status("default", r).expect("status").reference, r);
    }
    assert!(!outside.exists());
    for entry in std::fs::read_dir(dir.path().join("content/ingest")).expect("read") {
        let name = entry.expect("entry").file_name();
        let name = name.to_str().expect("utf8");
        assert_eq!(name.len(), 64, "{name}");
        assert!(name.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    assert_eq!(
        s.content_writer("default", "", 0, None, None)
            .expect_err("empty")
            .kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        s.content_writer("../x", "r", 0, None, None)
            .expect_err("bad ns")
            .kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        s.content_open("default", "sha256:../../../etc/passwd")
            .expect_err("bad digest")
            .kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn ingest_list_filters_by_ref() {
    let (_dir, s) = store();
    for r in ["layer-1", "layer-2", "manifest-1"] {
        drop(
            s.content_writer("default", r, 0, None, None)
                .expect("writer"),
        );
    }
    let refs = |f: &[&str]| -> Vec<String> {
        s.ingest_list("default", &filter(f))
            .expect("list")
            .into_iter()
            .map(|st| st.reference)
            .collect()
    };
    assert_eq!(refs(&["ref~=^layer-"]), vec!["layer-1", "layer-2"]);
    assert_eq!(refs(&["ref==manifest-1"]), vec!["manifest-1"]);
    assert_eq!(refs(&[]).len(), 3);
}

#[test]
fn content_update_list_delete() {
    let (dir, s) = store();
    let d1 = put(
        &s,
        "default",
        b"one",
        labels(&[("keep", "1"), ("drop", "1")]),
    );
    let d2 = put(&s, "default", b"two", Labels::new());
    let mut info = s.content_info("default", &d1).expect("info");
    info.labels = labels(&[("new", "x")]);
    info.size = 999; // immutable: ignored
    let updated = s
        .content_update(
            "default",
            info.clone(),
            &["labels.drop".into(), "labels.new".into()],
        )
        .expect("update");
    assert_eq!(updated.labels, labels(&[("keep", "1"), ("new", "x")]));
    assert_eq!(updated.size, 3);
    assert_eq!(
        s.content_update("default", info.clone(), &["size".into()])
            .expect_err("size")
            .kind(),
        ErrorKind::InvalidArgument
    );
    let replaced = s.content_update("default", info, &[]).expect("replace");
    assert_eq!(replaced.labels, labels(&[("new", "x")]));

    let listed = s
        .content_list("default", &filter(&["labels.new==x"]))
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].digest, d1);
    let by_size = s
        .content_list("default", &filter(&["size==3"]))
        .expect("list");
    assert_eq!(by_size.len(), 2);
    let by_digest = s
        .content_list("default", &filter(&[&format!("digest=={d2}")]))
        .expect("list");
    assert_eq!(by_digest.len(), 1);

    s.content_delete("default", &d1).expect("delete");
    assert_eq!(
        s.content_info("default", &d1).expect_err("gone").kind(),
        ErrorKind::NotFound
    );
    // The blob stays until GC.
    assert!(blob_path(&dir, &d1).exists());
}

#[test]
fn writer_lease_tracks_ingest_then_content() {
    let (_dir, s) = store();
    s.lease_create("default", "l1", Labels::new())
        .expect("lease");
    let mut w = s
        .content_writer("default", "leased", 0, None, Some("l1"))
        .expect("writer");
    let res = s.lease_list_resources("default", "l1").expect("res");
    assert_eq!(res.len(), 1);
    assert_eq!(
        (res[0].kind.as_str(), res[0].id.as_str()),
        ("ingests", "leased")
    );
    w.write(0, b"data").expect("write");
    let d = w.commit(4, None, Labels::new()).expect("commit");
    let res = s.lease_list_resources("default", "l1").expect("res");
    assert_eq!(res.len(), 1);
    assert_eq!(
        (res[0].kind.as_str(), res[0].id.as_str()),
        ("content", d.as_str())
    );
    // A missing lease is NotFound.
    assert_eq!(
        s.content_writer("default", "x", 0, None, Some("nope"))
            .expect_err("no lease")
            .kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn store_is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    fn assert_send<T: Send>() {}
    assert_send::<berth_store::Writer>();
    assert_send::<Filter>();

    let (_dir, s) = store();
    let s = std::sync::Arc::new(s);
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let s = std::sync::Arc::clone(&s);
            std::thread::spawn(move || {
                let data = format!("blob number {i}").into_bytes();
                put(&s, &format!("ns{}", i % 2), &data, Labels::new())
            })
        })
        .collect();
    for h in handles {
        let d = h.join().expect("thread");
        assert!(s.content_info("ns0", &d).is_ok() || s.content_info("ns1", &d).is_ok());
    }
    assert_eq!(
        s.content_list("ns0", &Filter::all()).expect("list").len(),
        4
    );
    assert_eq!(
        s.content_list("ns1", &Filter::all()).expect("list").len(),
        4
    );
}
