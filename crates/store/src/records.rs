//! The records the store keeps, and how filters see them.

use std::collections::HashMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::filters::{label_field, Adaptor};

pub type Labels = HashMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
    pub target: Descriptor,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

/// A protobuf `Any`, kept opaque: the store never interprets specs or runtime options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AnyBlob {
    pub type_url: String,
    /// Hex in the stored JSON: an OCI spec as a JSON number array would be four times larger.
    #[serde(with = "hex_bytes")]
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Runtime {
    pub name: String,
    pub options: Option<AnyBlob>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    #[serde(default)]
    pub labels: Labels,
    pub image: String,
    pub runtime: Runtime,
    pub spec: Option<AnyBlob>,
    pub snapshotter: String,
    pub snapshot_key: String,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    #[serde(default)]
    pub extensions: HashMap<String, AnyBlob>,
    #[serde(default)]
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: String,
    #[serde(default)]
    pub labels: Labels,
    pub created_at: SystemTime,
}

/// A resource held by a lease. `kind` is containerd's resource type: `content`, `ingests`, or
/// `snapshots/<snapshotter>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LeaseResource {
    pub id: String,
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentInfo {
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub labels: Labels,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestStatus {
    pub reference: String,
    pub offset: i64,
    pub total: i64,
    pub expected: Option<String>,
    pub started_at: SystemTime,
    pub updated_at: SystemTime,
}

fn first(path: &[String]) -> (&str, &[String]) {
    match path.split_first() {
        Some((head, rest)) => (head.as_str(), rest),
        None => ("", &[]),
    }
}

/// Only a one-part path names a scalar field.
fn scalar(rest: &[String], value: &str) -> Option<String> {
    rest.is_empty().then(|| value.to_string())
}

impl Adaptor for Namespace {
    fn field(&self, path: &[String]) -> Option<String> {
        match first(path) {
            ("name", rest) => scalar(rest, &self.name),
            ("labels", rest) => label_field(&self.labels, rest),
            _ => None,
        }
    }
}

impl Adaptor for Image {
    fn field(&self, path: &[String]) -> Option<String> {
        match first(path) {
            ("name", rest) => scalar(rest, &self.name),
            ("labels", rest) => label_field(&self.labels, rest),
            ("target", rest) => match first(rest) {
                ("digest", r) => scalar(r, &self.target.digest),
                ("mediatype", r) => scalar(r, &self.target.media_type),
                _ => None,
            },
            _ => None,
        }
    }
}

impl Adaptor for Container {
    fn field(&self, path: &[String]) -> Option<String> {
        match first(path) {
            ("id", rest) => scalar(rest, &self.id),
            ("image", rest) => scalar(rest, &self.image),
            ("snapshotter", rest) => scalar(rest, &self.snapshotter),
            ("runtime", rest) => match first(rest) {
                ("name", r) => scalar(r, &self.runtime.name),
                _ => None,
            },
            ("labels", rest) => label_field(&self.labels, rest),
            _ => None,
        }
    }
}

impl Adaptor for Lease {
    fn field(&self, path: &[String]) -> Option<String> {
        match first(path) {
            ("id", rest) => scalar(rest, &self.id),
            ("labels", rest) => label_field(&self.labels, rest),
            _ => None,
        }
    }
}

impl Adaptor for ContentInfo {
    fn field(&self, path: &[String]) -> Option<String> {
        match first(path) {
            ("digest", rest) => scalar(rest, &self.digest),
            ("size", rest) => scalar(rest, &self.size.to_string()),
            ("labels", rest) => label_field(&self.labels, rest),
            _ => None,
        }
    }
}

impl Adaptor for IngestStatus {
    fn field(&self, path: &[String]) -> Option<String> {
        match first(path) {
            ("ref", rest) => scalar(rest, &self.reference),
            _ => None,
        }
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}
