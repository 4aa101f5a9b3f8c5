//! Serving and URLs: a self-signed TLS server answers over TLS (a client pinning its certificate gets
//! HTTP answers; URLs say https), a plain-HTTP client gets nothing, and a wildcard bind advertises
//! a reachable address in its URLs.

use std::sync::Arc;

use async_trait::async_trait;
use berth_stream::{
    AttachRequest, Backend, BackendError, BoxStream, Config, ExecRequest, Io, Server, TlsConfig,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Nothing;

#[async_trait]
impl Backend for Nothing {
    async fn exec(&self, _: &ExecRequest, _: Io) -> Result<i32, BackendError> {
        Ok(0)
    }
    async fn attach(&self, _: &AttachRequest, _: Io) -> Result<(), BackendError> {
        Ok(())
    }
    async fn port_forward(&self, _: &str, _: u16) -> Result<BoxStream, BackendError> {
        Err(BackendError::Failed("no ports here".into()))
    }
}

async fn get_over_tls(server: &Server, path: &str) -> String {
    let pem = server.certificate_pem().expect("TLS on");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(c.expect("cert")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let name = ServerName::IpAddress(server.local_addr().ip().into());
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("send");
    let mut answer = String::new();
    let _ = tls.read_to_string(&mut answer).await;
    answer
}

#[tokio::test]
async fn self_signed_tls_serves_and_plain_http_does_not() {
    let server = Server::start(
        Config {
            tls: Some(TlsConfig::SelfSigned),
            ..Default::default()
        },
        Arc::new(Nothing),
    )
    .await
    .expect("start");
    let url = server
        .exec_url(ExecRequest {
            container_id: "c".into(),
            cmd: vec!["true".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: false,
        })
        .expect("url");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let answer = get_over_tls(&server, "/exec/not-a-token").await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    let mut plain = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    plain
        .write_all(b"GET /exec/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        plain.read_to_end(&mut buf),
    )
    .await;
    assert!(
        !buf.starts_with(b"HTTP/1.1"),
        "plain HTTP must not be served"
    );
}

#[tokio::test]
async fn configured_files_are_used_and_bad_ones_refused() {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, made.cert.pem()).expect("write cert");
    std::fs::write(&key, made.key_pair.serialize_pem()).expect("write key");
    let server = Server::start(
        Config {
            tls: Some(TlsConfig::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            ..Default::default()
        },
        Arc::new(Nothing),
    )
    .await
    .expect("start");
    assert_eq!(server.certificate_pem(), Some(made.cert.pem().as_str()));
    let answer = get_over_tls(&server, "/exec/nope").await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    std::fs::write(&key, "not a key").expect("spoil key");
    let err = Server::start(
        Config {
            tls: Some(TlsConfig::Files { cert, key }),
            ..Default::default()
        },
        Arc::new(Nothing),
    )
    .await
    .err()
    .expect("a bad key is refused");
    assert!(err.to_string().contains("k.pem"), "{err}");
}

#[tokio::test]
async fn urls_of_a_wildcard_bind_carry_the_advertised_address() {
    let advertised: std::net::IpAddr = "127.0.0.2".parse().expect("ip");
    let server = Server::start(
        Config {
            address: "0.0.0.0".parse().expect("ip"),
            advertise: Some(advertised),
            ..Default::default()
        },
        Arc::new(Nothing),
    )
    .await
    .expect("start");
    let url = server
        .exec_url(ExecRequest {
            container_id: "c".into(),
            cmd: vec!["true".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: false,
        })
        .expect("url");
    let want = format!("http://127.0.0.2:{}/exec/", server.local_addr().port());
    assert!(url.starts_with(&want), "{url}");
}
