//! The built `berth` binary against a real containerd 1.6 on a temp dir (skipped, with a
//! printed reason, when containerd or the test images are unavailable).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Containerd;
use serde_json::Value;

/// One of the offline test images: `scripts/test.sh` builds them and points `BERTH_TEST_IMAGES`
/// at them. (Always `Some`: a missing image fails the test rather than skipping it.)
fn test_image(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("BERTH_TEST_IMAGES")
        .map(PathBuf::from)
        .expect(
        "BERTH_TEST_IMAGES is not set: run ./scripts/test.sh, which builds the offline test images",
    );
    let p = dir.join(name);
    assert!(p.exists(), "{} is missing", p.display());
    Some(p)
}

/// (name, digest) pairs from the archive's own index.json.
fn index_entries(tar_path: &Path) -> Vec<(String, String)> {
    let out = Command::new("tar")
        .arg("xOf")
        .arg(tar_path)
        .arg("index.json")
        .output()
        .expect("tar");
    let v: Value = serde_json::from_slice(&out.stdout).expect("index.json");
    v["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .expect("name")
                    .to_string(),
                m["digest"].as_str().expect("digest").to_string(),
            )
        })
        .collect()
}

fn listed(images: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = images
        .as_array()
        .expect("array")
        .iter()
        .map(|i| {
            (
                i["name"].as_str().expect("name").to_string(),
                i["digest"].as_str().expect("digest").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn import_ls_snapshot_export_roundtrip_rm() {
    let Some(tarball) = test_image("busybox-oci.tar") else {
        return;
    };
    let Some(ctrd) = Containerd::start() else {
        return;
    };

    let v = ctrd.ok("t1", &["version"]);
    assert!(v.contains("Server"), "{v}");

    let out = ctrd.ok("t1", &["image", "import", tarball.to_str().expect("path")]);
    let mut want = index_entries(&tarball);
    want.sort();
    for (name, digest) in &want {
        assert!(out.contains(&format!("{name} {digest}")), "{out}");
    }
    assert_eq!(listed(&ctrd.json("t1", &["image", "ls"])), want);

    // The shared layer was unpacked once, committed under its chain id (= its diff id).
    let snaps = ctrd.json("t1", &["snapshot", "ls"]);
    let snaps = snaps.as_array().expect("array");
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["kind"], "Committed");
    let content = ctrd.json("t1", &["content", "ls"]);
    let uncompressed: Vec<&str> = content
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|c| c["labels"]["containerd.io/uncompressed"].as_str())
        .collect();
    assert_eq!(uncompressed, [snaps[0]["key"].as_str().expect("key")]);
    // The import lease is gone.
    assert_eq!(ctrd.json("t1", &["lease", "ls"]), Value::Array(vec![]));

    // Export and re-import into another namespace: same names, same digests.
    let exported = ctrd.dir.path().join("export.tar");
    let names: Vec<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
    let mut args = vec!["image", "export", exported.to_str().expect("path")];
    args.extend(&names);
    ctrd.ok("t1", &args);
    ctrd.ok(
        "t2",
        &[
            "image",
            "import",
            "--no-unpack",
            exported.to_str().expect("path"),
        ],
    );
    assert_eq!(listed(&ctrd.json("t2", &["image", "ls"])), want);
    assert_eq!(index_entries(&exported).len(), want.len());

    // rm removes; a missing name is an error with the server's message.
    ctrd.ok("t1", &["image", "rm", "--sync", names[0]]);
    let left = listed(&ctrd.json("t1", &["image", "ls"]));
    assert_eq!(left.len(), want.len() - 1);
    assert!(!left.iter().any(|(n, _)| n == names[0]));
    let out = ctrd.berth("t1", &["image", "rm", "docker.io/library/nope:latest"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("berth: ") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn docker_archive_import_and_namespaces() {
    let Some(tarball) = test_image("httpd-docker.tar") else {
        return;
    };
    let Some(ctrd) = Containerd::start() else {
        return;
    };
    let out = ctrd.ok("d", &["image", "import", tarball.to_str().expect("path")]);
    assert!(
        out.starts_with("docker.io/library/httpd:latest sha256:"),
        "{out}"
    );
    let images = ctrd.json("d", &["image", "ls"]);
    assert_eq!(
        images[0]["type"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        ctrd.json("d", &["snapshot", "ls"]).as_array().map(Vec::len),
        Some(1)
    );

    ctrd.ok("d", &["ns", "create", "extra", "team=infra"]);
    let ns = ctrd.json("d", &["ns", "ls"]);
    let extra = ns
        .as_array()
        .expect("array")
        .iter()
        .find(|n| n["name"] == "extra")
        .expect("namespace listed");
    assert_eq!(extra["labels"]["team"], "infra");
    ctrd.ok("d", &["ns", "rm", "extra"]);

    // A garbage archive is refused with a clear message and exit 1.
    let junk = ctrd.dir.path().join("junk.tar");
    std::fs::write(&junk, b"not a tar").expect("write");
    let out = ctrd.berth("d", &["image", "import", junk.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("berth: "));
}
