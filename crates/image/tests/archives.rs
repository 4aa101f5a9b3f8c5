//! Import / export against the real test images and small hostile archives.

use std::io::Read;
use std::path::{Path, PathBuf};

use berth_image::manifest::{parse_config, parse_manifest};
use berth_image::media_types as mt;
use berth_image::{
    export, import, plan_unpack, BlobSource, Descriptor, Digest, ErrorKind, ExportOptions,
    ImportOptions, MemoryStore,
};

/// The offline test images: `scripts/test.sh` builds them and points `BERTH_TEST_IMAGES` at them.
/// (Always `Some`: a missing image set fails the test rather than skipping it.)
fn test_images() -> Option<PathBuf> {
    Some(
        std::env::var_os("BERTH_TEST_IMAGES")
            .map(PathBuf::from)
            .expect("BERTH_TEST_IMAGES is not set: run ./scripts/test.sh, which builds the offline test images"),
    )
}

fn open(p: &Path) -> std::fs::File {
    std::fs::File::open(p).expect("open test image")
}

#[test]
fn imports_real_oci_layout() {
    let Some(dir) = test_images() else { return };
    let mut store = MemoryStore::new();
    let images = import(
        open(&dir.join("busybox-oci.tar")),
        &mut store,
        &ImportOptions::default(),
    )
    .expect("import");
    let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "docker.io/library/busybox:latest",
            "docker.io/library/pause:latest",
            "docker.io/library/httpd:latest"
        ]
    );
    // Every image's manifest is labelled for GC and the graph is complete.
    for img in &images {
        let m = parse_manifest(store.get(&img.target.digest).expect("manifest")).expect("parse");
        let labels = store.labels_of(&img.target.digest);
        assert_eq!(
            labels["containerd.io/gc.ref.content.config"],
            m.config.digest.to_string()
        );
        let config = parse_config(store.get(&m.config.digest).expect("config")).expect("cfg");
        let plan = plan_unpack(&m, &config).expect("plan");
        assert_eq!(plan.len(), m.layers.len());
        for step in &plan {
            assert!(store.get(&step.layer.digest).is_some());
            assert_eq!(
                store.labels_of(&step.layer.digest)["containerd.io/uncompressed"],
                step.diff_id.to_string()
            );
        }
    }
    // The three images share one layer.
    assert_eq!(store.blobs.len(), 7);
}

#[test]
fn imports_real_docker_archive() {
    let Some(dir) = test_images() else { return };
    let mut store = MemoryStore::new();
    let images = import(
        open(&dir.join("busybox-docker.tar")),
        &mut store,
        &ImportOptions::default(),
    )
    .expect("import");
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].name, "docker.io/library/busybox:latest");
    assert_eq!(images[0].target.media_type, mt::DOCKER_MANIFEST);
    let m = parse_manifest(store.get(&images[0].target.digest).expect("manifest")).expect("m");
    assert_eq!(m.media_type.as_deref(), Some(mt::DOCKER_MANIFEST));
    assert_eq!(m.layers.len(), 1);
    assert_eq!(m.layers[0].media_type, mt::DOCKER_LAYER);
    let layer = store.get(&m.layers[0].digest).expect("layer");
    assert_eq!(Digest::of(layer), m.layers[0].digest);
    let config = parse_config(store.get(&m.config.digest).expect("config")).expect("cfg");
    // An uncompressed layer's digest is its diff id.
    assert_eq!(config.rootfs.diff_ids[0], m.layers[0].digest);
}

#[test]
fn export_then_import_keeps_digests() {
    let Some(dir) = test_images() else { return };
    let mut store = MemoryStore::new();
    let images = import(
        open(&dir.join("busybox-oci.tar")),
        &mut store,
        &ImportOptions::default(),
    )
    .expect("import");
    let pairs: Vec<(String, Descriptor)> = images
        .iter()
        .map(|i| (i.name.clone(), i.target.clone()))
        .collect();
    let mut out = Vec::new();
    export(&pairs, &mut store, &ExportOptions::default(), &mut out).expect("export");
    let mut again = MemoryStore::new();
    let back = import(&out[..], &mut again, &ImportOptions::default()).expect("reimport");
    assert_eq!(back.len(), images.len());
    for (a, b) in images.iter().zip(&back) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.target.digest, b.target.digest);
    }
    assert_eq!(again.blobs.len(), store.blobs.len());
}

// ---- hand-made archives ----

fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, *data).expect("append");
    }
    b.into_inner().expect("finish")
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

const LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

fn small_image() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let layer = tar_of(&[("hello", b"world")]);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        Digest::of(&layer)
    )
    .into_bytes();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":{}}},"layers":[{{"mediaType":"{}","digest":"{}","size":{}}}]}}"#,
        mt::OCI_MANIFEST,
        mt::OCI_CONFIG,
        Digest::of(&config),
        config.len(),
        mt::OCI_LAYER,
        Digest::of(&layer),
        layer.len()
    )
    .into_bytes();
    (layer, config, manifest)
}

fn index_for(manifest: &[u8], name: &str) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{name}"}}}}]}}"#,
        mt::OCI_MANIFEST,
        Digest::of(manifest),
        manifest.len()
    )
    .into_bytes()
}

#[test]
fn index_before_blobs_and_bare_tag_naming() {
    let (layer, config, manifest) = small_image();
    let index = index_for(&manifest, "v1");
    let t = tar_of(&[
        ("index.json", &index),
        ("oci-layout", LAYOUT),
        (&blob_path(&Digest::of(&manifest)), &manifest),
        (&blob_path(&Digest::of(&layer)), &layer),
        (&blob_path(&Digest::of(&config)), &config),
    ]);
    let mut store = MemoryStore::new();
    let opts = ImportOptions {
        base_name: "example.com/app".into(),
        ..Default::default()
    };
    let images = import(&t[..], &mut store, &opts).expect("import");
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].name, "example.com/app:v1");
}

#[test]
fn blob_with_wrong_digest_is_refused() {
    let (layer, config, manifest) = small_image();
    let mut evil = layer.clone();
    evil[0] ^= 1;
    let t = tar_of(&[
        ("oci-layout", LAYOUT),
        (&blob_path(&Digest::of(&layer)), &evil),
        (&blob_path(&Digest::of(&config)), &config),
        (&blob_path(&Digest::of(&manifest)), &manifest),
        ("index.json", &index_for(&manifest, "x:1")),
    ]);
    let mut store = MemoryStore::new();
    let err = import(&t[..], &mut store, &ImportOptions::default()).expect_err("bad digest");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(store.get(&Digest::of(&evil)).is_none());
}

#[test]
fn missing_blob_is_not_found() {
    let (layer, _config, manifest) = small_image();
    let t = tar_of(&[
        ("oci-layout", LAYOUT),
        (&blob_path(&Digest::of(&layer)), &layer),
        (&blob_path(&Digest::of(&manifest)), &manifest),
        ("index.json", &index_for(&manifest, "x:1")),
    ]);
    let err = import(&t[..], &mut MemoryStore::new(), &ImportOptions::default())
        .expect_err("missing config");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[test]
fn malformed_inputs_are_invalid_argument() {
    let (_layer, _config, manifest) = small_image();
    let cases: Vec<Vec<u8>> = vec![
        tar_of(&[("oci-layout", LAYOUT), ("index.json", b"{nope")]),
        tar_of(&[("manifest.json", b"[{\"Config\": 3}]")]),
        tar_of(&[
            ("oci-layout", b"{\"imageLayoutVersion\":\"9\"}"),
            ("index.json", b"{}"),
        ]),
        tar_of(&[("hello.txt", b"hi")]),
        tar_of(&[("blobs/sha256/not-hex", b"x"), ("oci-layout", LAYOUT)]),
        tar_of(&[
            ("oci-layout", LAYOUT),
            (&blob_path(&Digest::of(&manifest)), &manifest),
            // index claims the manifest is a layer type
            (
                "index.json",
                &index_for(&manifest, "x:1").replace_media_type(),
            ),
        ]),
        b"this is not a tar archive at all, not even close........".repeat(20),
    ];
    for (i, t) in cases.iter().enumerate() {
        let err = import(&t[..], &mut MemoryStore::new(), &ImportOptions::default())
            .expect_err(&format!("case {i}"));
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "case {i}: {err}");
    }
}

trait ReplaceMediaType {
    fn replace_media_type(self) -> Vec<u8>;
}
impl ReplaceMediaType for Vec<u8> {
    fn replace_media_type(self) -> Vec<u8> {
        String::from_utf8(self)
            .expect("utf8")
            .replace(mt::OCI_MANIFEST, "application/x-evil")
            .into_bytes()
    }
}

#[test]
fn oversized_index_is_refused() {
    let big = vec![b' '; (berth_image::MAX_JSON_SIZE + 10) as usize];
    let t = tar_of(&[("oci-layout", LAYOUT), ("index.json", &big)]);
    let err =
        import(&t[..], &mut MemoryStore::new(), &ImportOptions::default()).expect_err("too big");
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
}

#[test]
fn docker_archive_with_symlinked_gzip_layer_and_two_images() {
    let layer_tar = tar_of(&[("f", b"data")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &layer_tar).expect("gzip");
    let layer = gz.finish().expect("gzip");
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        Digest::of(&layer_tar)
    )
    .into_bytes();
    let manifest_json =
        br#"[{"Config":"c.json","RepoTags":["a:1","quay.io/b/c:2"],"Layers":["id/layer.tar"]},
                             {"Config":"c.json","RepoTags":null,"Layers":["real.tar.gz"]}]"#;
    let mut b = tar::Builder::new(Vec::new());
    for (p, d) in [
        ("manifest.json", &manifest_json[..]),
        ("real.tar.gz", &layer),
        ("c.json", &config),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(d.len() as u64);
        b.append_data(&mut h, p, d).expect("append");
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "id/layer.tar", "../real.tar.gz")
        .expect("link");
    let t = b.into_inner().expect("tar");

    let mut store = MemoryStore::new();
    let images = import(&t[..], &mut store, &ImportOptions::default()).expect("import");
    let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["docker.io/library/a:1", "quay.io/b/c:2"]);
    let m = parse_manifest(store.get(&images[0].target.digest).expect("m")).expect("parse");
    assert_eq!(m.layers[0].media_type, mt::DOCKER_LAYER_GZIP);
    assert_eq!(m.layers[0].digest, Digest::of(&layer));
    assert_eq!(
        store.labels_of(&m.layers[0].digest)["containerd.io/uncompressed"],
        Digest::of(&layer_tar).to_string()
    );

    // A symlink loop referenced by manifest.json is NotFound, not a hang.
    let mut b = tar::Builder::new(Vec::new());
    let mj = br#"[{"Config":"c.json","RepoTags":["a"],"Layers":["x"]}]"#;
    for (p, d) in [("manifest.json", &mj[..]), ("c.json", &config)] {
        let mut h = tar::Header::new_gnu();
        h.set_size(d.len() as u64);
        b.append_data(&mut h, p, d).expect("append");
    }
    for (from, to) in [("x", "y"), ("y", "x")] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, from, to).expect("link");
    }
    let t = b.into_inner().expect("tar");
    let err = import(&t[..], &mut MemoryStore::new(), &ImportOptions::default()).expect_err("loop");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

/// A source that lost a layer: export must fail with NotFound rather than write a bad archive.
#[test]
fn export_missing_layer_is_not_found() {
    let (layer, config, manifest) = small_image();
    let t = tar_of(&[
        ("oci-layout", LAYOUT),
        (&blob_path(&Digest::of(&layer)), &layer),
        (&blob_path(&Digest::of(&config)), &config),
        (&blob_path(&Digest::of(&manifest)), &manifest),
        ("index.json", &index_for(&manifest, "x:1")),
    ]);
    let mut store = MemoryStore::new();
    let images = import(&t[..], &mut store, &ImportOptions::default()).expect("import");
    store.blobs.remove(&Digest::of(&layer));
    let pairs = vec![(images[0].name.clone(), images[0].target.clone())];
    let err = export(&pairs, &mut store, &ExportOptions::default(), Vec::new())
        .expect_err("missing layer");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    // And a present source reads back byte-identical blobs.
    let mut r = BlobSource::open(&mut store, &images[0].target)
        .expect("open")
        .expect("present");
    let mut buf = Vec::new();
    r.read_to_end(&mut buf).expect("read");
    assert_eq!(buf, manifest);
}

/// A multi-platform index where only the host platform's content is in the archive: import
/// succeeds (others are skipped, as with containerd), unless every platform is required; export
/// skips the absent platform too.
#[test]
fn index_with_missing_foreign_platform() {
    let (layer, config, manifest) = small_image();
    let foreign = Digest::of(b"arm64 manifest that is not in the archive");
    let host = berth_image::Platform::host();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{oi}","manifests":[
            {{"mediaType":"{om}","digest":"{fd}","size":40,"platform":{{"os":"linux","architecture":"s390x"}}}},
            {{"mediaType":"{om}","digest":"{md}","size":{ms},"platform":{{"os":"{os}","architecture":"{arch}","variant":"{var}"}}}}]}}"#,
        oi = mt::OCI_INDEX,
        om = mt::OCI_MANIFEST,
        fd = foreign,
        md = Digest::of(&manifest),
        ms = manifest.len(),
        os = host.os,
        arch = host.architecture,
        var = host.variant,
    )
    .into_bytes();
    let top = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"example.com/multi:1"}}}}]}}"#,
        mt::OCI_INDEX,
        Digest::of(&index),
        index.len()
    )
    .into_bytes();
    let t = tar_of(&[
        ("oci-layout", LAYOUT),
        (&blob_path(&Digest::of(&layer)), &layer),
        (&blob_path(&Digest::of(&config)), &config),
        (&blob_path(&Digest::of(&manifest)), &manifest),
        (&blob_path(&Digest::of(&index)), &index),
        ("index.json", &top),
    ]);
    let mut store = MemoryStore::new();
    let images = import(&t[..], &mut store, &ImportOptions::default()).expect("import");
    assert_eq!(images[0].name, "example.com/multi:1");
    assert_eq!(images[0].target.media_type, mt::OCI_INDEX);
    let labels = store.labels_of(&Digest::of(&index));
    assert_eq!(
        labels["containerd.io/gc.ref.content.m.0"],
        foreign.to_string()
    );
    assert_eq!(
        labels["containerd.io/gc.ref.content.m.1"],
        Digest::of(&manifest).to_string()
    );

    let all = ImportOptions {
        all_platforms: true,
        ..Default::default()
    };
    let err = import(&t[..], &mut MemoryStore::new(), &all).expect_err("foreign missing");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    let pairs = vec![(images[0].name.clone(), images[0].target.clone())];
    let mut out = Vec::new();
    export(&pairs, &mut store, &ExportOptions::default(), &mut out).expect("export");
    let back =
        import(&out[..], &mut MemoryStore::new(), &ImportOptions::default()).expect("reimport");
    assert_eq!(back[0].target.digest, Digest::of(&index));
}
