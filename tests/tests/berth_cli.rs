//! berth's own CLI against berthd: namespaces, import (OCI layout and docker-archive), list,
//! export/re-import round trip, remove; and archives that must leave nothing recorded.

use berth_tests::oci::{self, Entry};
use berth_tests::{oci_index_refs, test_images, wait_until, Berthd};

fn json(run: berth_tests::Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout))
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|i| i["name"].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn namespaces_images_export_round_trip() {
    let images = test_images();
    let d = Berthd::start();
    let v = d.berth("default", &["version"]).ok();
    assert!(v.stdout.contains("berth-"), "{}", v.stdout);

    d.berth("default", &["ns", "create", "dev", "team=core"])
        .ok();
    let ns = json(d.berth("default", &["--format", "json", "ns", "ls"]).ok());
    assert!(names(&ns).contains(&"dev".to_string()), "{ns}");

    d.berth(
        "dev",
        &[
            "image",
            "import",
            images.join("busybox-oci.tar").to_str().expect("path"),
        ],
    )
    .ok();
    let listed = json(d.berth("dev", &["--format", "json", "image", "ls"]).ok());
    let listed: Vec<(String, String)> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|i| {
            (
                i["name"].as_str().expect("name").into(),
                i["digest"].as_str().expect("digest").into(),
            )
        })
        .collect();
    for (name, digest) in oci_index_refs(&images.join("oci")) {
        let full = format!("docker.io/library/{name}:latest");
        assert!(
            listed.contains(&(full.clone(), digest.clone())),
            "{full} {digest} not in {listed:?}"
        );
    }
    let snaps = d.berth("dev", &["snapshot", "ls"]).ok();
    assert!(snaps.stdout.contains("Committed"), "{}", snaps.stdout);
    // The images are containerd's too.
    assert!(d
        .ctr("dev", &["images", "ls", "-q"])
        .ok()
        .stdout
        .contains("docker.io/library/httpd:latest"));
    // Isolation.
    assert!(names(&json(
        d.berth("default", &["--format", "json", "image", "ls"])
            .ok()
    ))
    .is_empty());

    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("httpd.tar");
    d.berth(
        "dev",
        &[
            "image",
            "export",
            out.to_str().expect("path"),
            "docker.io/library/httpd:latest",
        ],
    )
    .ok();
    d.berth("copy", &["image", "import", out.to_str().expect("path")])
        .ok();
    let copy = json(d.berth("copy", &["--format", "json", "image", "ls"]).ok());
    let orig = json(
        d.berth(
            "dev",
            &[
                "--format",
                "json",
                "image",
                "ls",
                "name==docker.io/library/httpd:latest",
            ],
        )
        .ok(),
    );
    assert_eq!(copy[0]["name"], orig[0]["name"]);
    assert_eq!(
        copy[0]["digest"], orig[0]["digest"],
        "export/import changed the digest"
    );

    d.berth(
        "dev",
        &["image", "rm", "--sync", "docker.io/library/busybox:latest"],
    )
    .ok();
    let left = names(&json(
        d.berth("dev", &["--format", "json", "image", "ls"]).ok(),
    ));
    assert_eq!(left.len(), 2, "{left:?}");
    let missing = d.berth("dev", &["image", "rm", "docker.io/library/nope:latest"]);
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stderr.starts_with("berth: ") && missing.stderr.contains("not found"),
        "{}",
        missing.stderr
    );

    let busy = d.berth("default", &["ns", "rm", "dev"]);
    assert_eq!(busy.code, Some(1), "{}", busy.stdout);
    d.berth(
        "dev",
        &[
            "image",
            "rm",
            "--sync",
            "docker.io/library/httpd:latest",
            "docker.io/library/pause:latest",
        ],
    )
    .ok();
    d.berth("default", &["ns", "rm", "dev"]).ok();
    assert!(!names(&json(
        d.berth("default", &["--format", "json", "ns", "ls"]).ok()
    ))
    .contains(&"dev".to_string()));
}

#[test]
fn docker_archive_through_cli() {
    let images = test_images();
    let d = Berthd::start();
    d.berth(
        "default",
        &[
            "image",
            "import",
            images.join("pause-docker.tar").to_str().expect("path"),
        ],
    )
    .ok();
    let listed = names(&json(
        d.berth("default", &["--format", "json", "image", "ls"])
            .ok(),
    ));
    assert_eq!(listed, vec!["docker.io/library/pause:latest".to_string()]);
}

/// Imports `tar` with the CLI, expects failure mentioning `needle`, then checks that no image was
/// recorded and that, once the import's lease is gone, no content or snapshot is left either.
fn refused_import(tar: Vec<u8>, needle: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("bad.tar");
    std::fs::write(&path, tar).expect("write");
    let d = Berthd::start();
    let r = d.berth(
        "default",
        &["image", "import", path.to_str().expect("path")],
    );
    assert_eq!(
        r.code,
        Some(1),
        "import of a bad archive succeeded: {}",
        r.stdout
    );
    assert!(
        r.stderr.to_lowercase().contains(needle),
        "error lacks {needle:?}: {}",
        r.stderr
    );
    assert!(names(&json(
        d.berth("default", &["--format", "json", "image", "ls"])
            .ok()
    ))
    .is_empty());
    assert!(
        d.berth("default", &["lease", "ls"])
            .ok()
            .stdout
            .lines()
            .nth(1)
            .is_none(),
        "lease left"
    );
    wait_until("nothing left", || {
        d.ctr("default", &["content", "ls", "-q"])
            .ok()
            .stdout
            .trim()
            .is_empty()
            && d.ctr("default", &["snapshots", "ls"])
                .ok()
                .stdout
                .lines()
                .count()
                <= 1
    });
}

#[test]
fn manifest_naming_a_missing_blob() {
    let img = oci::Image::new(
        "example.com/t/missing:1",
        vec![(oci::LAYER_GZIP, oci::layer_tar(&[oci::file("a", b"a")]))],
    );
    let layer = img.layers[0].digest();
    refused_import(oci::layout_tar(&[img], &[layer]), "not found");
}

#[test]
fn malformed_index_json() {
    let img = oci::Image::new(
        "example.com/t/json:1",
        vec![(oci::LAYER_TAR, oci::layer_tar(&[oci::file("a", b"a")]))],
    );
    refused_import(
        oci::layout_tar_with_index(&[img], b"{\"manifests\": [", &[]),
        "malformed",
    );
}

#[test]
fn hostile_layer_records_nothing() {
    let bad = oci::layer_tar(&[Entry::Symlink("up", ".."), oci::file("up/pwned", b"x")]);
    let img = oci::Image::new("example.com/t/hostile:1", vec![(oci::LAYER_TAR, bad)]);
    refused_import(oci::layout_tar(&[img], &[]), "escape");
}

#[test]
fn unknown_layer_media_type_records_nothing() {
    let tar = oci::layer_tar(&[oci::file("a", b"a")]);
    let layer = oci::Blob {
        media_type: "application/vnd.example.layer".into(),
        data: tar.clone(),
    };
    let config = oci::Blob {
        media_type: "application/vnd.oci.image.config.v1+json".into(),
        data: serde_json::to_vec(&serde_json::json!({
            "architecture": oci::host_arch(), "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", berth_tests::sha256_hex(&tar))]},
        }))
        .expect("json"),
    };
    let img = oci::Image::with_config("example.com/t/odd:1", vec![layer], config);
    refused_import(
        oci::layout_tar(&[img], &[]),
        "application/vnd.example.layer",
    );
}

#[test]
fn run_exec_and_remove_through_berthd() {
    let images = test_images();
    let d = Berthd::start();
    let ns = d.unique_ns();
    d.berth(
        &ns,
        &[
            "image",
            "import",
            images.join("busybox-oci.tar").to_str().expect("path"),
        ],
    )
    .ok();
    let shim = "io.containerd.berth.v2";
    let run = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "--runtime",
            shim,
            "docker.io/library/busybox:latest",
            "once",
            "sh",
            "-c",
            "echo hi; echo oops >&2; exit 7",
        ],
    );
    assert_eq!(run.code, Some(7), "{} {}", run.stdout, run.stderr);
    assert_eq!(run.stdout.trim(), "hi");
    assert!(run.stderr.contains("oops"), "{}", run.stderr);

    d.berth(
        &ns,
        &[
            "run",
            "-d",
            "--runtime",
            shim,
            "--env",
            "GREETING=hello",
            "docker.io/library/busybox:latest",
            "svc",
            "sleep",
            "1000",
        ],
    )
    .ok();
    let ls = d.berth(&ns, &["task", "ls"]).ok();
    assert!(
        ls.stdout
            .lines()
            .any(|l| l.starts_with("svc") && l.contains("RUNNING")),
        "{}",
        ls.stdout
    );
    let exec = d.berth(
        &ns,
        &[
            "task",
            "exec",
            "--exec-id",
            "e1",
            "svc",
            "sh",
            "-c",
            "echo $GREETING; exit 5",
        ],
    );
    assert_eq!(exec.code, Some(5), "{}", exec.stderr);
    assert_eq!(exec.stdout.trim(), "hello");
    d.berth(&ns, &["task", "kill", "-s", "SIGKILL", "svc"]).ok();
    wait_until("stopped", || {
        d.berth(&ns, &["task", "ls"])
            .ok()
            .stdout
            .contains("STOPPED")
    });
    d.berth(&ns, &["container", "rm", "svc"]).ok();
    assert!(!d
        .berth(&ns, &["container", "ls"])
        .ok()
        .stdout
        .contains("svc"));
}
