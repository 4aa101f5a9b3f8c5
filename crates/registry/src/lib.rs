//! berth-registry: a registry client for the OCI distribution spec, as containerd's resolver,
//! fetcher and pusher do it: `hosts.toml` mirrors, TLS per host, Basic and Bearer auth with a
//! token cache, resumable blob downloads with a stall timeout, and pushes with cross-repo mount.

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
