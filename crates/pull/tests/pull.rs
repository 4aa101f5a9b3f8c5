//! End-to-end pulls from a layout fetcher into a real store and overlay snapshotter.

mod support;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_image::{chain_id, media_types as mt, Digest, Platform, PlatformMatcher};
use berth_pull::{pull, ErrorKind, Progress, PullOptions};
use berth_store::Filter;
use bytes::Bytes;
use support::{gzip, noise, tar_of, zstd, Entry, Env, LayoutFetcher};

const NS: &str = "pulltest";
const BUSYBOX: &str = "docker.io/library/busybox:latest";

fn all() -> Filter {
    Filter::all()
}

fn assert_clean(env: &Env) {
    assert!(
        env.store.lease_list(NS, &all()).expect("leases").is_empty(),
        "lease left"
    );
    assert!(
        env.store
            .ingest_list(NS, &all())
            .expect("ingests")
            .is_empty(),
        "ingest left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_busybox_from_layout() {
    let env = Env::new();
    let f = LayoutFetcher::from_layout(&test_images_dir().join("oci"));
    let events = Mutex::new(Vec::new());
    let image = pull(
        env.store.clone(),
        env.sn.clone(),
        NS,
        &f,
        BUSYBOX,
        &PullOptions::default(),
        |p| events.lock().expect("lock").push(p),
    )
    .await
    .expect("pull");
    assert_eq!(image.name, BUSYBOX);
    assert_eq!(
        env.store
            .image_get(NS, BUSYBOX)
            .expect("image")
            .target
            .digest,
        image.target.digest
    );

    // Every blob is stored, verified and labelled for GC.
    let mdesc = f.refs.lock().expect("lock")[BUSYBOX].clone();
    let body = f.blobs.lock().expect("lock")[&mdesc.digest].clone();
    let manifest = berth_image::manifest::parse_manifest(&body).expect("manifest");
    let minfo = env
        .store
        .content_info(NS, &mdesc.digest.to_string())
        .expect("manifest stored");
    assert_eq!(
        minfo.labels["containerd.io/gc.ref.content.config"],
        manifest.config.digest.to_string()
    );
    let cbody = f.blobs.lock().expect("lock")[&manifest.config.digest].clone();
    let config = berth_image::manifest::parse_config(&cbody).expect("config");
    let top = chain_id(&config.rootfs.diff_ids).expect("chain");
    let cinfo = env
        .store
        .content_info(NS, &manifest.config.digest.to_string())
        .expect("config stored");
    assert_eq!(
        cinfo.labels["containerd.io/gc.ref.snapshot.overlayfs"],
        top.to_string()
    );
    for (l, diff) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        let info = env
            .store
            .content_info(NS, &l.digest.to_string())
            .expect("layer stored");
        assert_eq!(info.labels["containerd.io/uncompressed"], diff.to_string());
        let (mut file, _) = env
            .store
            .content_open(NS, &l.digest.to_string())
            .expect("open");
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).expect("read");
        assert_eq!(Digest::of(&bytes), l.digest);
    }

    // The chain is committed and mountable.
    let info = env.sn.stat(&format!("{NS}/{top}")).expect("top snapshot");
    assert_eq!(info.kind, berth_snapshot::Kind::Committed);
    env.with_view(NS, &top.to_string(), |root| {
        assert!(
            root.join("bin/busybox").is_file(),
            "bin/busybox in the view"
        );
    });

    let events = events.into_inner().expect("lock");
    assert!(matches!(events.first(), Some(Progress::Resolved { .. })));
    assert!(matches!(events.last(), Some(Progress::Done { .. })));
    assert!(events
        .iter()
        .any(|e| matches!(e, Progress::Unpacked { .. })));
    assert_clean(&env);
}

fn whiteout_image(f: &LayoutFetcher) -> (Vec<Digest>, berth_image::Descriptor) {
    let l1 = tar_of(&[
        Entry::Dir("a/"),
        Entry::File("a/x", b"x"),
        Entry::File("a/y", b"y"),
        Entry::File("b", b"b"),
        Entry::Dir("c/"),
        Entry::File("c/z", b"z"),
    ]);
    let l2 = tar_of(&[
        Entry::Dir("a/"),
        Entry::File("a/.wh.x", b""),
        Entry::File(".wh.b", b""),
        Entry::Dir("c/"),
        Entry::File("c/.wh..wh..opq", b""),
        Entry::File("c/new", b"new"),
    ]);
    let l3 = tar_of(&[Entry::File("top", b"3")]);
    let diffs = vec![Digest::of(&l1), Digest::of(&l2), Digest::of(&l3)];
    let m = f.add_image(
        "amd64",
        &[
            (gzip(&l1), mt::OCI_LAYER_GZIP, l1.clone()),
            (zstd(&l2), mt::OCI_LAYER_ZSTD, l2.clone()),
            (l3.clone(), mt::OCI_LAYER, l3.clone()),
        ],
    );
    (diffs, m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_layer_whiteouts_merge() {
    let env = Env::new();
    let f = LayoutFetcher::default();
    let (diffs, m) = whiteout_image(&f);
    f.add_ref("example.com/wh:1", m);
    pull(
        env.store.clone(),
        env.sn.clone(),
        NS,
        &f,
        "example.com/wh:1",
        &PullOptions::default(),
        |_| {},
    )
    .await
    .expect("pull");
    let top = chain_id(&diffs).expect("chain");
    env.with_view(NS, &top.to_string(), |root| {
        assert!(root.join("a/y").is_file());
        assert!(!root.join("a/x").exists(), "a/x whited out");
        assert!(!root.join("b").exists(), "b whited out");
        assert!(!root.join("c/z").exists(), "c is opaque");
        assert_eq!(std::fs::read(root.join("c/new")).expect("c/new"), b"new");
        assert_eq!(std::fs::read(root.join("top")).expect("top"), b"3");
    });
    assert_clean(&env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_picks_platform() {
    let env = Env::new();
    let f = LayoutFetcher::default();
    let amd_tar = tar_of(&[Entry::File("arch", b"amd64")]);
    let arm_tar = tar_of(&[Entry::File("arch", b"arm64")]);
    let amd = f.add_image(
        "amd64",
        &[(gzip(&amd_tar), mt::OCI_LAYER_GZIP, amd_tar.clone())],
    );
    let arm = f.add_image(
        "arm64",
        &[(gzip(&arm_tar), mt::OCI_LAYER_GZIP, arm_tar.clone())],
    );
    let index = f.add_index(vec![arm.clone(), amd.clone()]);
    f.add_ref("example.com/multi:1", index.clone());

    // Default: the host's (amd64) manifest, unpacked; arm64's never fetched.
    let img = pull(
        env.store.clone(),
        env.sn.clone(),
        NS,
        &f,
        "example.com/multi:1",
        &PullOptions::default(),
        |_| {},
    )
    .await
    .expect("pull amd64");
    assert_eq!(img.target.digest, index.digest.to_string());
    assert!(!f.doc_requests.lock().expect("lock").contains(&arm.digest));
    let amd_chain = Digest::of(&amd_tar).to_string();
    env.with_view(NS, &amd_chain, |root| {
        assert_eq!(std::fs::read(root.join("arch")).expect("arch"), b"amd64");
    });
    let idx = env
        .store
        .content_info(NS, &index.digest.to_string())
        .expect("index");
    assert_eq!(
        idx.labels["containerd.io/gc.ref.content.m.1"],
        amd.digest.to_string()
    );

    // Asked for arm64: fetched and stored, not unpacked on this host.
    let opts = PullOptions {
        platform: PlatformMatcher::new(Platform::new("linux", "arm64", "")),
        ..PullOptions::default()
    };
    pull(
        env.store.clone(),
        env.sn.clone(),
        NS,
        &f,
        "example.com/multi:1",
        &opts,
        |_| {},
    )
    .await
    .expect("pull arm64");
    assert!(env.store.content_info(NS, &arm.digest.to_string()).is_ok());
    let arm_layer = Digest::of(&gzip(&arm_tar));
    assert!(env.store.content_info(NS, &arm_layer.to_string()).is_ok());
    let arm_chain = Digest::of(&arm_tar).to_string();
    let err = env
        .sn
        .stat(&format!("{NS}/{arm_chain}"))
        .expect_err("arm64 not unpacked");
    assert_eq!(err.kind(), berth_snapshot::ErrorKind::NotFound);
    assert_clean(&env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_stream_resumes_from_offset() {
    let env = Env::new();
    let f = LayoutFetcher::default();
    // Incompressible content so the blob is large enough to cut in the middle.
    let big = noise(600_000, 7);
    let t = tar_of(&[Entry::File("big", &big)]);
    let layer = gzip(&t);
    let layer_digest = Digest::of(&layer);
    let m = f.add_image("amd64", &[(layer.clone(), mt::OCI_LAYER_GZIP, t.clone())]);
    f.add_ref("example.com/big:1", m);
    let cut = layer.len() as u64 / 2;
    assert!(cut > 64 << 10, "layer large enough to cut mid-way");
    f.cut_after
        .lock()
        .expect("lock")
        .insert(layer_digest.clone(), cut);
    pull(
        env.store.clone(),
        env.sn.clone(),
        NS,
        &f,
        "example.com/big:1",
        &PullOptions::default(),
        |_| {},
    )
    .await
    .expect("pull resumes");
    let reqs = f.blob_requests.lock().expect("lock").clone();
    let offsets: Vec<u64> = reqs
        .iter()
        .filter(|(d, _)| *d == layer_digest)
        .map(|(_, o)| *o)
        .collect();
    assert_eq!(offsets.len(), 2, "one retry: {offsets:?}");
    assert_eq!(offsets[0], 0);
    // Batches are flushed before retrying, so the resume starts exactly at the cut.
    assert_eq!(offsets[1], cut);
    env.with_view(NS, &Digest::of(&t).to_string(), |root| {
        assert_eq!(std::fs::read(root.join("big")).expect("big"), big);
    });
    assert_clean(&env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_blob_is_digest_mismatch_and_leaves_nothing() {
    let env = Env::new();
    let f = LayoutFetcher::from_layout(&test_images_dir().join("oci"));
    let mdesc = f.refs.lock().expect("lock")[BUSYBOX].clone();
    let body = f.blobs.lock().expect("lock")[&mdesc.digest].clone();
    let manifest = berth_image::manifest::parse_manifest(&body).expect("manifest");
    let layer = manifest.layers[0].clone();
    let mut evil = f.blobs.lock().expect("lock")[&layer.digest].to_vec();
    let last = evil.len() - 1;
    evil[last] ^= 0xff;
    f.wrong
        .lock()
        .expect("lock")
        .insert(layer.digest.clone(), Bytes::from(evil));
    let err = pull(
        env.store.clone(),
        env.sn.clone(),
        NS,
        &f,
        BUSYBOX,
        &PullOptions::default(),
        |_| {},
    )
    .await
    .expect_err("wrong blob");
    assert_eq!(err.kind(), ErrorKind::DigestMismatch, "{err}");
    assert!(env.store.image_list(NS, &all()).expect("images").is_empty());
    assert!(
        env.store
            .content_list(NS, &all())
            .expect("content")
            .is_empty(),
        "nothing committed"
    );
    assert!(
        env.sn.list().expect("snapshots").is_empty(),
        "no snapshot left"
    );
    assert_clean(&env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_are_bounded_and_repull_fetches_nothing() {
    let env = Env::new();
    let f = LayoutFetcher::default();
    *f.chunk_delay.lock().expect("lock") = Duration::from_millis(20);
    let mut layers = Vec::new();
    for i in 0..5u32 {
        let data = noise(100_000, i);
        let name = format!("f{i}");
        let t = tar_of(&[Entry::File(&name, &data)]);
        layers.push((gzip(&t), mt::OCI_LAYER_GZIP, t));
    }
    let m = f.add_image("amd64", &layers);
    f.add_ref("example.com/five:1", m);
    let diffs: Vec<Digest> = layers.iter().map(|(_, _, t)| Digest::of(t)).collect();
    pull(
        env.store.clone(),
        env.sn.clone(),
        NS,
        &f,
        "example.com/five:1",
        &PullOptions::default(),
        |_| {},
    )
    .await
    .expect("pull");
    let max = f.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 3, "at most 3 downloads in flight, saw {max}");
    assert!(max >= 2, "downloads overlap, saw {max}");
    env.with_view(NS, &chain_id(&diffs).expect("chain").to_string(), |root| {
        for i in 0..5 {
            assert!(root.join(format!("f{i}")).is_file());
        }
    });

    let (blobs, docs) = (f.blob_request_count(), f.doc_request_count());
    let second = Arc::new(Mutex::new(Vec::new()));
    let s2 = second.clone();
    pull(
        env.store.clone(),
        env.sn.clone(),
        NS,
        &f,
        "example.com/five:1",
        &PullOptions::default(),
        move |p| s2.lock().expect("lock").push(p),
    )
    .await
    .expect("re-pull");
    assert_eq!(f.blob_request_count(), blobs, "no blob fetched again");
    assert_eq!(f.doc_request_count(), docs, "no document fetched again");
    assert_clean(&env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_reference_is_not_found() {
    let env = Env::new();
    let f = LayoutFetcher::default();
    let err = pull(
        env.store.clone(),
        env.sn.clone(),
        NS,
        &f,
        "example.com/nope:1",
        &PullOptions::default(),
        |_| {},
    )
    .await
    .expect_err("missing");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("example.com/nope:1"));
    assert_clean(&env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_applies_while_it_downloads() {
    let env = Env::new();
    let f = LayoutFetcher::default();
    let big = noise(3 << 20, 11);
    let t = tar_of(&[Entry::File("first", b"early"), Entry::File("big", &big)]);
    let layer = gzip(&t);
    let m = f.add_image("amd64", &[(layer.clone(), mt::OCI_LAYER_GZIP, t.clone())]);
    f.add_ref("example.com/stream:1", m);
    // The last chunk is held back until the apply has written `first` into the snapshot:
    // only a streaming apply can do that before the download ends.
    let snapshots = env.dir.path().join("snapshots/snapshots");
    let gate: support::Gate = Arc::new(move || {
        std::fs::read_dir(&snapshots)
            .map(|rd| rd.flatten().any(|e| e.path().join("fs/first").exists()))
            .unwrap_or(false)
    });
    f.gate
        .lock()
        .expect("lock")
        .insert(Digest::of(&layer), gate);
    pull(
        env.store.clone(),
        env.sn.clone(),
        NS,
        &f,
        "example.com/stream:1",
        &PullOptions::default(),
        |_| {},
    )
    .await
    .expect("pull");
    assert_eq!(
        *f.gate_results.lock().expect("lock"),
        vec![true],
        "applied before download end"
    );
    env.with_view(NS, &Digest::of(&t).to_string(), |root| {
        assert_eq!(std::fs::read(root.join("big")).expect("big"), big);
    });
    assert_clean(&env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_and_all_platforms() {
    let env = Env::new();
    let f = LayoutFetcher::default();
    let amd_tar = tar_of(&[Entry::File("arch", b"amd64")]);
    let arm_tar = tar_of(&[Entry::File("arch", b"arm64")]);
    let amd = f.add_image_typed(
        "amd64",
        &[(gzip(&amd_tar), mt::DOCKER_LAYER_GZIP, amd_tar.clone())],
        mt::DOCKER_MANIFEST,
        mt::DOCKER_CONFIG,
    );
    let arm = f.add_image_typed(
        "arm64",
        &[(gzip(&arm_tar), mt::DOCKER_LAYER_GZIP, arm_tar.clone())],
        mt::DOCKER_MANIFEST,
        mt::DOCKER_CONFIG,
    );
    // Like buildkit's attestations: a manifest whose "layer" is not a tar at all.
    let statement = br#"{"_type":"https://in-toto.io/Statement/v0.1"}"#.to_vec();
    let att = f.add_image_typed(
        "unknown",
        &[(
            statement.clone(),
            "application/vnd.in-toto+json",
            statement.clone(),
        )],
        mt::OCI_MANIFEST,
        mt::OCI_CONFIG,
    );
    let index = f.add_index(vec![amd.clone(), arm.clone(), att]);
    f.add_ref("example.com/docker:1", index);
    let opts = PullOptions {
        all_platforms: true,
        ..PullOptions::default()
    };
    pull(
        env.store.clone(),
        env.sn.clone(),
        NS,
        &f,
        "example.com/docker:1",
        &opts,
        |_| {},
    )
    .await
    .expect("pull");
    for d in [
        &amd.digest,
        &arm.digest,
        &Digest::of(&gzip(&arm_tar)),
        &Digest::of(&statement),
    ] {
        assert!(
            env.store.content_info(NS, &d.to_string()).is_ok(),
            "{d} stored"
        );
    }
    let snaps = env.sn.list().expect("list");
    assert_eq!(
        snaps.len(),
        1,
        "only the host's image is unpacked: {snaps:?}"
    );
    assert_eq!(snaps[0].name, format!("{NS}/{}", Digest::of(&amd_tar)));
    assert_clean(&env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_image_both_succeed() {
    let env = Env::new();
    let f = LayoutFetcher::default();
    *f.chunk_delay.lock().expect("lock") = Duration::from_millis(5);
    let (diffs, m) = whiteout_image(&f);
    f.add_ref("example.com/wh:1", m);
    let opts = PullOptions::default();
    let a = pull(
        env.store.clone(),
        env.sn.clone(),
        NS,
        &f,
        "example.com/wh:1",
        &opts,
        |_| {},
    );
    let b = pull(
        env.store.clone(),
        env.sn.clone(),
        NS,
        &f,
        "example.com/wh:1",
        &opts,
        |_| {},
    );
    let (a, b) = tokio::join!(a, b);
    a.expect("first pull");
    b.expect("second pull");
    let top = chain_id(&diffs).expect("chain");
    env.with_view(NS, &top.to_string(), |root| {
        assert_eq!(std::fs::read(root.join("c/new")).expect("c/new"), b"new");
    });
    let kinds: Vec<_> = env
        .sn
        .list()
        .expect("list")
        .into_iter()
        .map(|i| i.kind)
        .collect();
    assert!(
        kinds.iter().all(|k| *k == berth_snapshot::Kind::Committed),
        "no extract left: {kinds:?}"
    );
    assert_clean(&env);
}

/// A pull that fails after snapshots were prepared leaves no image, ingest, lease or snapshot.
async fn assert_failed_cleanly(env: &Env, f: &LayoutFetcher, reference: &str, kind: ErrorKind) {
    let err = pull(
        env.store.clone(),
        env.sn.clone(),
        NS,
        f,
        reference,
        &PullOptions::default(),
        |_| {},
    )
    .await
    .expect_err("pull must fail");
    assert_eq!(err.kind(), kind, "{err}");
    assert!(env.store.image_list(NS, &all()).expect("images").is_empty());
    assert!(
        env.sn.list().expect("snapshots").is_empty(),
        "no snapshot left"
    );
    assert_clean(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_that_keeps_breaking_gives_up() {
    let env = Env::new();
    let f = LayoutFetcher::default();
    let t = tar_of(&[Entry::File("big", &noise(300_000, 3))]);
    let layer = gzip(&t);
    let m = f.add_image("amd64", &[(layer.clone(), mt::OCI_LAYER_GZIP, t)]);
    f.add_ref("example.com/flaky:1", m);
    f.always_cut
        .lock()
        .expect("lock")
        .insert(Digest::of(&layer), 100_000);
    assert_failed_cleanly(&env, &f, "example.com/flaky:1", ErrorKind::Unavailable).await;
    assert_eq!(f.blob_request_count(), 4, "first try and three retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_layer_and_wrong_diff_id_fail_cleanly() {
    let env = Env::new();
    let f = LayoutFetcher::default();
    let garbage = noise(10_000, 5);
    let m = f.add_image(
        "amd64",
        &[(gzip(&garbage), mt::OCI_LAYER_GZIP, garbage.clone())],
    );
    f.add_ref("example.com/garbage:1", m);
    assert_failed_cleanly(
        &env,
        &f,
        "example.com/garbage:1",
        ErrorKind::InvalidArgument,
    )
    .await;

    let t = tar_of(&[Entry::File("x", b"x")]);
    let other = tar_of(&[Entry::File("y", b"y")]);
    // The config claims another diff id than the layer really has.
    let m = f.add_image("amd64", &[(gzip(&t), mt::OCI_LAYER_GZIP, other)]);
    f.add_ref("example.com/liar:1", m);
    assert_failed_cleanly(&env, &f, "example.com/liar:1", ErrorKind::DigestMismatch).await;
}

/// The daemon runs pulls inside spawned tasks: the future must be `Send`.
#[allow(dead_code)]
fn pull_future_is_send(env: &Env, f: &LayoutFetcher) {
    fn assert_send<T: Send>(_: &T) {}
    let opts = PullOptions::default();
    let fut = pull(env.store.clone(), env.sn.clone(), NS, f, "x", &opts, |_| {});
    assert_send(&fut);
}

/// The offline test images (`shared/testimages/make-test-images.sh`): `scripts/test.sh` builds them
/// and points `BERTH_TEST_IMAGES` at them.
fn test_images_dir() -> std::path::PathBuf {
    std::env::var_os("BERTH_TEST_IMAGES")
        .map(std::path::PathBuf::from)
        .expect("BERTH_TEST_IMAGES is not set: run ./scripts/test.sh, which builds the offline test images")
}
