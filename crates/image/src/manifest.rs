//! Manifest, index and config documents: bounded, validated parsing.

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::media_types as mt;
use crate::platform::Platform;

/// Largest manifest / index / config we will parse. Registries cap manifests at 4 MiB too; a
/// bigger one is hostile or broken, and refusing it before parsing bounds memory.
pub const MAX_JSON_SIZE: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The parts of an image config berth needs (platform and layer diff ids); other fields are
/// ignored here and kept verbatim in the content store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

impl ImageConfig {
    pub fn platform(&self) -> Platform {
        Platform::new(&self.os, &self.architecture, &self.variant).normalize()
    }
}

/// A manifest or an index, told apart by media type. (Short-lived parse result: boxing the
/// larger variant would buy nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    Manifest(Manifest),
    Index(Index),
}

/// Reads at most [`MAX_JSON_SIZE`] bytes, refusing (without reading further) anything larger.
pub fn read_bounded(r: &mut dyn Read, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(MAX_JSON_SIZE + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_JSON_SIZE {
        return Err(Error::TooLarge {
            what: what.to_string(),
            limit: MAX_JSON_SIZE,
        });
    }
    Ok(buf)
}

fn check_size(bytes: &[u8], what: &str) -> Result<()> {
    if bytes.len() as u64 > MAX_JSON_SIZE {
        return Err(Error::TooLarge {
            what: what.to_string(),
            limit: MAX_JSON_SIZE,
        });
    }
    Ok(())
}

fn parse_json<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T> {
    check_size(bytes, what)?;
    serde_json::from_slice(bytes).map_err(|e| Error::malformed(what, e))
}

pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest> {
    let m: Manifest = parse_json(bytes, "manifest")?;
    if m.schema_version != 2 {
        return Err(Error::malformed(
            "manifest",
            format!("schemaVersion {} (want 2)", m.schema_version),
        ));
    }
    Ok(m)
}

pub fn parse_index(bytes: &[u8]) -> Result<Index> {
    let i: Index = parse_json(bytes, "index")?;
    if i.schema_version != 2 {
        return Err(Error::malformed(
            "index",
            format!("schemaVersion {} (want 2)", i.schema_version),
        ));
    }
    Ok(i)
}

pub fn parse_config(bytes: &[u8]) -> Result<ImageConfig> {
    parse_json(bytes, "image config")
}

impl Document {
    /// Parses `bytes` as the document `media_type` names. An empty media type is detected from
    /// the JSON (`manifests` → index, `config` → manifest), as containerd does for OCI layouts
    /// whose descriptors omit it. Any other media type is an error naming it.
    pub fn parse(media_type: &str, bytes: &[u8]) -> Result<Self> {
        if mt::is_manifest(media_type) {
            return parse_manifest(bytes).map(Document::Manifest);
        }
        if mt::is_index(media_type) {
            return parse_index(bytes).map(Document::Index);
        }
        if !media_type.is_empty() {
            return Err(Error::UnsupportedMediaType(media_type.to_string()));
        }
        #[derive(Deserialize)]
        struct Probe {
            #[serde(rename = "mediaType", default)]
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
            config: Option<serde_json::Value>,
        }
        let probe: Probe = parse_json(bytes, "manifest")?;
        if let Some(t) = probe.media_type.filter(|t| !t.is_empty()) {
            return Document::parse(&t, bytes);
        }
        match (probe.manifests.is_some(), probe.config.is_some()) {
            (true, false) => parse_index(bytes).map(Document::Index),
            (false, true) => parse_manifest(bytes).map(Document::Manifest),
            _ => Err(Error::malformed(
                "manifest",
                "cannot tell manifest from index (no mediaType)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn manifest_json() -> String {
        format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","digest":"{D}","size":2}},
            "layers":[{{"mediaType":"{}","digest":"{D}","size":3}}]}}"#,
            mt::OCI_CONFIG,
            mt::OCI_LAYER_GZIP
        )
    }

    #[test]
    fn parses_by_media_type_and_detection() {
        let m = manifest_json();
        match Document::parse(mt::OCI_MANIFEST, m.as_bytes()).expect("manifest") {
            Document::Manifest(m) => assert_eq!(m.layers[0].size, 3),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Document::parse("", m.as_bytes()),
            Ok(Document::Manifest(_))
        ));
        let idx = format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{D}","size":1}}]}}"#);
        assert!(matches!(
            Document::parse("", idx.as_bytes()),
            Ok(Document::Index(_))
        ));
    }

    #[test]
    fn errors_are_clear() {
        let err = Document::parse("application/x-evil", b"{}").expect_err("unknown type");
        assert!(err.to_string().contains("application/x-evil"), "{err}");
        let err = Document::parse(mt::OCI_MANIFEST, b"{not json").expect_err("bad json");
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("malformed manifest"), "{err}");
        let bad_digest = manifest_json().replace("e3b0", "zzzz");
        assert!(parse_manifest(bad_digest.as_bytes()).is_err());
        let v1 = manifest_json().replace("\"schemaVersion\":2", "\"schemaVersion\":1");
        assert!(parse_manifest(v1.as_bytes()).is_err());
    }

    #[test]
    fn refuses_oversized_documents() {
        let big = vec![b' '; (MAX_JSON_SIZE + 1) as usize];
        let err = parse_manifest(&big).expect_err("too big");
        assert!(matches!(err, Error::TooLarge { .. }));
        let err = read_bounded(&mut &big[..], "index").expect_err("too big");
        assert!(matches!(err, Error::TooLarge { .. }));
        let ok = read_bounded(&mut &b"{}"[..], "index").expect("small");
        assert_eq!(ok, b"{}");
    }

    #[test]
    fn config_platform_and_diff_ids() {
        let c = parse_config(
            format!(r#"{{"architecture":"arm64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{D}"]}},"config":{{"Env":["A=1"]}}}}"#)
                .as_bytes(),
        )
        .expect("config");
        assert_eq!(c.platform().to_string(), "linux/arm64/v8");
        assert_eq!(c.rootfs.diff_ids.len(), 1);
    }
}
