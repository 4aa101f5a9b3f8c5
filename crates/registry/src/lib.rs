//! berth-registry: a registry client for the OCI distribution spec, as containerd's resolver,
//! fetcher and pusher do it: `hosts.toml` mirrors, TLS per host, Basic and Bearer auth with a
//! token cache, resumable blob downloads with a stall timeout, and pushes with cross-repo mount.
//!
//! ```no_run
//! # async fn demo() -> berth_registry::Result<()> {
//! use futures::StreamExt;
//! let client = berth_registry::Client::new(berth_registry::RegistryConfig::default())?;
//! let (name, desc) = client.resolve("127.0.0.1:5000/busybox:latest").await?;
//! let manifest = client.fetch_manifest(&name, &desc).await?; // verified, <= 4 MiB
//! # let layer = desc.clone();
//! let mut got = 0u64;
//! let mut blob = client.fetch_blob(&name, &layer, got).await?;
//! while let Some(chunk) = blob.next().await {
//!     // On an Unavailable/Timeout error, call fetch_blob again with `got` to resume.
//!     got += chunk?.len() as u64;
//! }
//! # let _ = manifest;
//! # Ok(())
//! # }
//! ```
//!
//! Errors carry an [`ErrorKind`] for mapping to gRPC codes. Hosts come from containerd's
//! `hosts.toml` ([`hosts`]); a blob stream read from offset 0 is digest-checked at its end, a
//! resumed one must be checked by the caller (it holds the prefix).

pub mod auth;
pub mod client;
pub mod error;
pub mod fetch;
pub mod hosts;
pub mod push;

pub use auth::Credentials;
pub use berth_image::{Descriptor, Digest, Reference};
pub use client::{Client, RegistryConfig, DEFAULT_STALL_TIMEOUT};
pub use error::{Error, ErrorKind, HostError, Result};
pub use fetch::{BlobStream, MAX_MANIFEST_SIZE};
pub use hosts::{Capabilities, Capability, RegistryHost};
