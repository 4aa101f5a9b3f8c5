//! HTTPS registries: a private CA from hosts.toml, skip_verify, and the refusal without either.

#![allow(clippy::unwrap_used)]

mod common;

use berth_registry::{Client, Digest, ErrorKind, RegistryConfig};
use common::*;

fn client_with(host: &str, toml: &str) -> (tempfile::TempDir, Client) {
    let (d, path) = config_dir_with(&[(host, toml.to_string())]);
    let c = Client::new(RegistryConfig {
        config_path: Some(path),
        ..RegistryConfig::default()
    })
    .unwrap();
    (d, c)
}

async fn pull_manifest_and_layer(c: &Client, reference: &str) {
    let (_, desc) = c.resolve(reference).await.unwrap();
    let body = c.fetch_manifest(reference, &desc).await.unwrap();
    let (_, layers) = manifest_parts(&body);
    let (got, err) = collect(c.fetch_blob(reference, &layers[0], 0).await.unwrap()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(Digest::of(&got), layers[0].digest);
}

#[tokio::test]
async fn https_registry_with_ca_and_skip_verify() {
    let pki = make_pki();
    let reg = Registry::start_with(None, Some((&pki.cert, &pki.key)));
    reg.push_test_image("busybox", "busybox:latest", None);
    let host = reg.host();
    let reference = format!("{host}/busybox:latest");

    // Unknown issuer: refused.
    let (_d1, c) = client_with(&host, &format!("server = \"https://{host}\"\n"));
    let e = c.resolve(&reference).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("certificate"), "{e}");

    // The private CA from hosts.toml (a path relative to the host directory works too).
    let (d2, c) = client_with(
        &host,
        &format!("server = \"https://{host}\"\nca = \"ca.pem\"\n"),
    );
    std::fs::copy(&pki.ca, d2.path().join(&host).join("ca.pem")).unwrap();
    pull_manifest_and_layer(&c, &reference).await;

    // skip_verify.
    let (_d3, c) = client_with(
        &host,
        &format!("server = \"https://{host}\"\nskip_verify = true\n"),
    );
    pull_manifest_and_layer(&c, &reference).await;

    // A CA file that is missing is a configuration error naming it.
    let (_d4, c) = client_with(
        &host,
        &format!("server = \"https://{host}\"\nca = \"/nonexistent/ca.pem\"\n"),
    );
    let e = c.resolve(&reference).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}

/// A registry that demands a client certificate: refused without `client`, pushes and pulls
/// with it.
#[tokio::test]
async fn client_certificate_from_hosts_toml() {
    let pki = make_pki();
    let reg = Registry::start_full(None, Some((&pki.cert, &pki.key)), Some(&pki.ca));
    let host = reg.host();
    let reference = format!("{host}/mtls/busybox:v1");
    let ca = pki.ca.display();

    let (_d1, c) = client_with(
        &host,
        &format!("server = \"https://{host}\"\nca = \"{ca}\"\n"),
    );
    let e = c.resolve(&reference).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");

    let toml = format!(
        "server = \"https://{host}\"\nca = \"{ca}\"\nclient = [[\"{}\", \"{}\"]]\n",
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let (_d2, c) = client_with(&host, &toml);
    let md =
        Digest::parse("sha256:9006b0346e26175ceb069b560e5a6bbd053928eba943742e033425dfcd1e4665")
            .unwrap();
    let body = bytes::Bytes::from(oci_blob(&md));
    let (config, layers) = manifest_parts(&body);
    for d in std::iter::once(&config).chain(&layers) {
        c.push_blob(
            &reference,
            d,
            std::io::Cursor::new(oci_blob(&d.digest)),
            None,
        )
        .await
        .unwrap();
    }
    let mt = "application/vnd.oci.image.manifest.v1+json";
    assert_eq!(
        c.push_manifest(&reference, mt, body).await.unwrap(),
        md.to_string()
    );
    pull_manifest_and_layer(&c, &reference).await;
}
