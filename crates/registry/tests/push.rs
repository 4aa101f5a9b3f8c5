//! Pushes to a real docker-registry and reads back.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use berth_registry::{Credentials, Digest, ErrorKind};
use bytes::Bytes;
use common::*;

fn busybox_manifest() -> (
    Bytes,
    berth_registry::Descriptor,
    Vec<berth_registry::Descriptor>,
) {
    let d =
        Digest::parse("sha256:9006b0346e26175ceb069b560e5a6bbd053928eba943742e033425dfcd1e4665")
            .unwrap();
    let body = Bytes::from(oci_blob(&d));
    let (config, layers) = manifest_parts(&body);
    (body, config, layers)
}

#[tokio::test]
async fn push_blobs_and_manifest_then_resolve() {
    let reg = Registry::start(None);
    let c = client();
    let (body, config, layers) = busybox_manifest();
    let reference = format!("{}/pushed/busybox:v1", reg.host());
    for d in std::iter::once(&config).chain(&layers) {
        assert!(!c.blob_exists(&reference, d).await.unwrap());
        let f = tokio::fs::File::open(format!("{}/blobs/sha256/{}", test_oci(), d.digest.hex()))
            .await
            .unwrap();
        c.push_blob(&reference, d, f, None).await.unwrap();
        assert!(c.blob_exists(&reference, d).await.unwrap());
    }
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let digest = c.push_manifest(&reference, mt, body.clone()).await.unwrap();
    assert_eq!(digest, Digest::of(&body).to_string());
    let (_, desc) = c.resolve(&reference).await.unwrap();
    assert_eq!(desc.digest.to_string(), digest);
    assert_eq!(desc.media_type, mt);
    assert_eq!(c.fetch_manifest(&reference, &desc).await.unwrap(), body);
    let (got, err) = collect(c.fetch_blob(&reference, &layers[0], 0).await.unwrap()).await;
    assert!(err.is_none());
    assert_eq!(Digest::of(&got), layers[0].digest);

    // A second push of an existing blob skips the upload: an empty reader would not do.
    c.push_blob(&reference, &layers[0], tokio::io::empty(), None)
        .await
        .unwrap();

    // Cross-repository mount: the other repository gets the blob without its bytes.
    let other = format!("{}/mounted/busybox:v1", reg.host());
    for d in std::iter::once(&config).chain(&layers) {
        c.push_blob(&other, d, tokio::io::empty(), Some("pushed/busybox"))
            .await
            .unwrap();
        assert!(c.blob_exists(&other, d).await.unwrap());
    }
    c.push_manifest(&other, mt, body.clone()).await.unwrap();
    let e = c
        .push_blob(&other, &config, tokio::io::empty(), Some("x&from=evil"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let (_, d2) = c.resolve(&other).await.unwrap();
    assert_eq!(d2.digest.to_string(), digest);
}

#[tokio::test]
async fn push_with_wrong_bytes_is_digest_mismatch() {
    let reg = Registry::start(None);
    let c = client();
    let desc = berth_registry::Descriptor::new(
        "application/octet-stream",
        Digest::of(b"the real bytes"),
        14,
    );
    let reference = format!("{}/x/y:1", reg.host());
    let e = c
        .push_blob(
            &reference,
            &desc,
            std::io::Cursor::new(b"other bytes!!!".to_vec()),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DigestMismatch, "{e}");
    assert!(!c.blob_exists(&reference, &desc).await.unwrap());

    // A manifest whose blobs are missing is refused by the registry.
    let (body, _, _) = busybox_manifest();
    let e = c
        .push_manifest(
            &reference,
            "application/vnd.oci.image.manifest.v1+json",
            body,
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
}

#[tokio::test]
async fn push_to_htpasswd_registry() {
    let reg = Registry::start(Some(("alice", "s3cret")));
    let (body, config, layers) = busybox_manifest();
    let reference = format!("{}/private/busybox:v1", reg.host());
    let anon = client();
    let e = anon
        .push_blob(&reference, &config, tokio::io::empty(), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");

    let c = anon.with_credentials(
        &reg.host(),
        Credentials {
            username: "alice".into(),
            password: "s3cret".into(),
        },
    );
    for d in std::iter::once(&config).chain(&layers) {
        let data = oci_blob(&d.digest);
        c.push_blob(&reference, d, std::io::Cursor::new(data), None)
            .await
            .unwrap();
    }
    let digest = c
        .push_manifest(
            &reference,
            "application/vnd.oci.image.manifest.v1+json",
            body,
        )
        .await
        .unwrap();
    assert_eq!(
        c.resolve(&reference).await.unwrap().1.digest.to_string(),
        digest
    );
}

/// Requests to a push host carry the hosts.toml headers.
#[tokio::test]
async fn host_headers_are_sent() {
    let reg = Registry::start(None);
    reg.push_test_image("busybox", "busybox:latest", None);
    let seen = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
    let (sn, up) = (seen.clone(), reg.host());
    let front = Server::start(Arc::new(move |req: Req, s| {
        sn.lock().unwrap().push(
            req.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("x-berth-test"))
                .map(|(_, v)| v.clone())
                .collect(),
        );
        let up = up.clone();
        Box::pin(async move {
            let (st, h, b) = forward(&up, &req).await;
            relay(s, st, h, b).await;
        })
    }))
    .await;
    let toml = format!(
        "server = \"http://{}\"\n[header]\n  x-berth-test = [\"a\", \"b\"]\n",
        front.host()
    );
    let (_d, path) = config_dir_with(&[("example.invalid", toml)]);
    let c = berth_registry::Client::new(berth_registry::RegistryConfig {
        config_path: Some(path),
        ..Default::default()
    })
    .unwrap();
    c.resolve("example.invalid/busybox:latest").await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|h| h == &["a", "b"]), "{seen:?}");
}

/// An upload runs as long as its body moves; once the reader stops for the stall timeout it
/// fails with Timeout.
#[tokio::test]
async fn upload_stall_timeout_counts_idle_time_only() {
    use tokio::io::AsyncWriteExt;
    let reg = Registry::start(None);
    let c = berth_registry::Client::new(berth_registry::RegistryConfig {
        stall_timeout: std::time::Duration::from_secs(1),
        ..Default::default()
    })
    .unwrap();
    let reference = format!("{}/slow/blob:1", reg.host());

    // Slow but steady: 8 chunks 300 ms apart (2.4 s in all, over the 1 s stall timeout).
    let data: Vec<u8> = (0..8 * 1024u32).map(|i| (i % 199) as u8).collect();
    let desc = berth_registry::Descriptor::new(
        "application/octet-stream",
        Digest::of(&data),
        data.len() as u64,
    );
    let (mut w, r) = tokio::io::duplex(1024);
    let d = data.clone();
    let writer = tokio::spawn(async move {
        for chunk in d.chunks(1024) {
            w.write_all(chunk).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    });
    c.push_blob(&reference, &desc, r, None).await.unwrap();
    writer.await.unwrap();
    assert!(c.blob_exists(&reference, &desc).await.unwrap());

    // Stops after the first chunk: Timeout, in about the stall timeout.
    let data2: Vec<u8> = vec![7u8; 4096];
    let desc2 = berth_registry::Descriptor::new(
        "application/octet-stream",
        Digest::of(&data2),
        data2.len() as u64,
    );
    let (mut w, r) = tokio::io::duplex(1024);
    w.write_all(&data2[..512]).await.unwrap();
    let t = std::time::Instant::now();
    let e = c.push_blob(&reference, &desc2, r, None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    drop(w);
}
