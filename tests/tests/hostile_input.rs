//! Hostile input: each case gets a clear error with containerd's gRPC code, writes nothing outside
//! the snapshot, and records nothing.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_tests::client::{self, req};
use berth_tests::oci::{self, Entry};
use berth_tests::{runtime, sha256_hex, Berthd};
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::namespaces_client::NamespacesClient;
use containerd_client::services::v1::{
    CreateNamespaceRequest, DeleteNamespaceRequest, InfoRequest, Namespace,
};
use containerd_client::types::Descriptor;
use tonic::Code;

/// Every file named `pwned` under `dir`.
fn pwned_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name() == "pwned" {
                out.push(p.clone());
            }
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            }
        }
    }
    out
}

/// Applies `entries` as a layer through Content.Write + Snapshots.Prepare + Diff.Apply and returns
/// the Apply error's code; asserts nothing named `pwned` appeared anywhere.
fn apply_hostile(entries: Vec<Entry>, outside: &Path) -> (Code, String) {
    let d = Berthd::start();
    let rt = runtime();
    let ch = rt.block_on(d.channel());
    let tar = oci::layer_tar(&entries);
    let digest = format!("sha256:{}", sha256_hex(&tar));
    rt.block_on(client::write_blob(&ch, "default", "hostile", &tar, &digest))
        .expect("write blob");
    let mounts = rt
        .block_on(client::prepare(&ch, "default", "overlayfs", "hostile", ""))
        .expect("prepare");
    let desc = Descriptor {
        media_type: oci::LAYER_TAR.into(),
        digest,
        size: tar.len() as i64,
        annotations: HashMap::new(),
    };
    let err = rt
        .block_on(client::apply(&ch, "default", desc, mounts))
        .expect_err("hostile layer applied");
    assert!(
        pwned_under(outside).is_empty(),
        "written outside: {:?}",
        pwned_under(outside)
    );
    let stray: Vec<_> = pwned_under(d.dir.path())
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains("/fs/"))
        .collect();
    assert!(
        stray.is_empty(),
        "written outside the snapshot's fs: {stray:?}"
    );
    rt.block_on(client::remove(&ch, "default", "overlayfs", "hostile"))
        .expect("remove failed snapshot");
    (err.code(), err.message().to_string())
}

fn outside_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("berth-outside-")
        .tempdir_in("/tmp")
        .expect("outside dir")
}

/// `../` repeated far enough to climb out of any snapshot directory, then an absolute host path.
fn climb(to: &Path) -> String {
    format!(
        "{}{}",
        "../".repeat(12),
        to.to_str().expect("utf8").trim_start_matches('/')
    )
}

#[test]
fn dotdot_path_is_refused() {
    let outside = outside_dir();
    let name = format!("{}/pwned", climb(outside.path()));
    let (code, msg) = apply_hostile(vec![oci::file(&name, b"x")], outside.path());
    assert_eq!(code, Code::InvalidArgument, "{msg}");
}

#[test]
fn entry_under_symlink_to_root_is_refused() {
    let outside = outside_dir();
    let under = format!(
        "escape/{}/pwned",
        outside
            .path()
            .to_str()
            .expect("utf8")
            .trim_start_matches('/')
    );
    let (code, msg) = apply_hostile(
        vec![
            Entry::Symlink("escape", "/"),
            Entry::File(under, b"x".to_vec(), 0o644),
        ],
        outside.path(),
    );
    assert_eq!(code, Code::InvalidArgument, "{msg}");
}

#[test]
fn entry_under_symlink_to_dotdot_is_refused() {
    let outside = outside_dir();
    let (code, msg) = apply_hostile(
        vec![
            Entry::Symlink("up", ".."),
            Entry::File("up/pwned".into(), b"x".to_vec(), 0o644),
        ],
        outside.path(),
    );
    assert_eq!(code, Code::InvalidArgument, "{msg}");
}

#[test]
fn hardlink_out_of_the_layer_is_refused() {
    let outside = outside_dir();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, b"host secret").expect("secret");
    let target: &'static str =
        Box::leak(format!("{}/secret", climb(outside.path())).into_boxed_str());
    let (code, msg) = apply_hostile(vec![Entry::Hardlink("pwned", target)], outside.path());
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert_eq!(
        std::fs::metadata(&secret).expect("secret").nlink(),
        1,
        "host file got a new link"
    );

    let abs: &'static str = Box::leak(secret.to_str().expect("utf8").to_string().into_boxed_str());
    let (code, msg) = apply_hostile(vec![Entry::Hardlink("pwned", abs)], outside.path());
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert_eq!(
        std::fs::metadata(&secret).expect("secret").nlink(),
        1,
        "host file got a new link"
    );
}

#[test]
fn unknown_layer_media_type_is_refused() {
    let d = Berthd::start();
    let rt = runtime();
    let ch = rt.block_on(d.channel());
    let tar = oci::layer_tar(&[oci::file("a", b"a")]);
    let digest = format!("sha256:{}", sha256_hex(&tar));
    rt.block_on(client::write_blob(&ch, "default", "odd", &tar, &digest))
        .expect("write");
    let mounts = rt
        .block_on(client::prepare(&ch, "default", "overlayfs", "odd", ""))
        .expect("prepare");
    let desc = Descriptor {
        media_type: "application/vnd.example.unknown".into(),
        digest,
        size: tar.len() as i64,
        annotations: HashMap::new(),
    };
    let err = rt
        .block_on(client::apply(&ch, "default", desc, mounts))
        .expect_err("applied");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("application/vnd.example.unknown"),
        "{}",
        err.message()
    );
}

#[test]
fn blob_with_wrong_digest_is_not_committed() {
    let d = Berthd::start();
    let rt = runtime();
    let ch = rt.block_on(d.channel());
    let claimed = format!("sha256:{}", sha256_hex(b"what the client claims"));
    let err = rt
        .block_on(client::write_blob(
            &ch,
            "default",
            "liar",
            b"what the client sends",
            &claimed,
        ))
        .expect_err("mismatching blob committed");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    let info = rt.block_on(
        ContentClient::new(ch.clone()).info(req("default", InfoRequest { digest: claimed })),
    );
    assert_eq!(info.expect_err("blob recorded").code(), Code::NotFound);
    let blobs = std::fs::read_dir(d.root().join("content/blobs/sha256"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "a blob file was written");
}

#[test]
fn digest_algorithms_other_than_sha256_are_refused() {
    let d = Berthd::start();
    let rt = runtime();
    let ch = rt.block_on(d.channel());
    let err = rt
        .block_on(client::write_blob(
            &ch,
            "default",
            "md5",
            b"x",
            "md5:9dd4e461268c8034f5c8564e155c67a6",
        ))
        .expect_err("md5 accepted");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("md5") || err.message().contains("algorithm"),
        "{}",
        err.message()
    );
}

#[test]
fn bad_identifiers_are_invalid_arguments() {
    let d = Berthd::start();
    let rt = runtime();
    let ch = rt.block_on(d.channel());
    let mut ns = NamespacesClient::new(ch.clone());
    for bad in ["bad name!", "../up", "-lead", &"a".repeat(77), ""] {
        let err = rt
            .block_on(ns.create(CreateNamespaceRequest {
                namespace: Some(Namespace {
                    name: bad.to_string(),
                    labels: HashMap::new(),
                }),
            }))
            .expect_err(bad);
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{bad:?}: {}",
            err.message()
        );
    }
    let ok = "a".repeat(76);
    rt.block_on(ns.create(CreateNamespaceRequest {
        namespace: Some(Namespace {
            name: ok.clone(),
            labels: HashMap::new(),
        }),
    }))
    .expect("76 characters is allowed");
    // A request in a namespace with a bad name is refused the same way.
    let err = rt
        .block_on(ContentClient::new(ch.clone()).info(req(
            "bad..name",
            InfoRequest {
                digest: "sha256:00".into(),
            },
        )))
        .expect_err("bad namespace header");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[test]
fn namespace_holding_images_cannot_be_deleted() {
    let d = Berthd::start();
    let img = oci::Image::new(
        "example.com/a/b:1",
        vec![(oci::LAYER_TAR, oci::layer_tar(&[oci::file("f", b"f")]))],
    );
    let dir = tempfile::tempdir().expect("tmp");
    let tar = dir.path().join("img.tar");
    std::fs::write(&tar, oci::layout_tar(&[img], &[])).expect("write");
    d.ctr("busy", &["images", "import", tar.to_str().expect("path")])
        .ok();
    let rt = runtime();
    let ch = rt.block_on(d.channel());
    let err = rt
        .block_on(NamespacesClient::new(ch).delete(DeleteNamespaceRequest {
            name: "busy".into(),
        }))
        .expect_err("deleted a namespace holding images");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(d
        .ctr("busy", &["images", "ls", "-q"])
        .ok()
        .stdout
        .contains("example.com/a/b:1"));
}
