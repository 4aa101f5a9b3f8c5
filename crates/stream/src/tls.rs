//! Optional TLS for the streaming server: a configured certificate and key (PEM), or a
//! self-signed certificate made at start-up for the listening address (containerd's
//! `enable_tls_streaming` without a key pair), whose PEM clients can pin.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsConfig {
    /// A certificate for the listening address (and `localhost`), made at start-up.
    SelfSigned,
    /// PEM files: the certificate chain and its private key.
    Files { cert: PathBuf, key: PathBuf },
}

pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    /// The serving certificate (PEM), for clients that pin it.
    pub(crate) cert_pem: String,
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Tls(format!("{what}: {e}"))
}

pub(crate) fn build(cfg: &TlsConfig, address: IpAddr) -> Result<Tls, Error> {
    let (chain, key, cert_pem) = match cfg {
        TlsConfig::SelfSigned => {
            let mut names = vec!["localhost".to_string()];
            names.push(address.to_string());
            let made = rcgen::generate_simple_self_signed(names)
                .map_err(|e| tls_err("make a self-signed certificate", e))?;
            let pem = made.cert.pem();
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
            (vec![made.cert.der().clone()], key, pem)
        }
        TlsConfig::Files { cert, key } => {
            let pem = std::fs::read_to_string(cert)
                .map_err(|e| tls_err(&format!("read {}", cert.display()), e))?;
            let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls_err(&format!("certificates in {}", cert.display()), e))?;
            if chain.is_empty() {
                return Err(Error::Tls(format!(
                    "{} holds no certificate",
                    cert.display()
                )));
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| tls_err(&format!("private key in {}", key.display()), e))?;
            (chain, key, pem)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("TLS versions", e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls_err("certificate and key", e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        cert_pem,
    })
}
