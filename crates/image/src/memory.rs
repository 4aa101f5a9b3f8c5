//! An in-memory blob store implementing both [`BlobSink`] and [`BlobSource`]: for tests and
//! small tools. It verifies digests like a real content store would.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::export::BlobSource;
use crate::import::BlobSink;
use crate::labels::Labels;

#[derive(Debug, Default)]
pub struct MemoryStore {
    pub blobs: HashMap<Digest, Vec<u8>>,
    pub labels: HashMap<Digest, Labels>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, d: &Digest) -> Option<&[u8]> {
        self.blobs.get(d).map(Vec::as_slice)
    }

    pub fn labels_of(&self, d: &Digest) -> BTreeMap<String, String> {
        self.labels.get(d).cloned().unwrap_or_default()
    }
}

impl BlobSink for MemoryStore {
    fn put(
        &mut self,
        expected: Option<&Descriptor>,
        media_type: &str,
        _size_hint: Option<u64>,
        r: &mut dyn Read,
    ) -> Result<Descriptor> {
        if let Some(e) = expected {
            if self.blobs.contains_key(&e.digest) {
                return Ok(e.clone());
            }
        }
        let mut buf = Vec::new();
        r.read_to_end(&mut buf)?;
        let digest = Digest::of(&buf);
        if let Some(e) = expected {
            if e.digest != digest {
                return Err(Error::DigestMismatch {
                    what: "blob".into(),
                    expected: e.digest.to_string(),
                    actual: digest.to_string(),
                });
            }
            if e.size != buf.len() as u64 {
                return Err(Error::SizeMismatch {
                    what: e.digest.to_string(),
                    expected: e.size,
                    actual: buf.len() as u64,
                });
            }
        }
        let desc = Descriptor::new(media_type, digest.clone(), buf.len() as u64);
        self.blobs.insert(digest, buf);
        Ok(desc)
    }

    fn set_labels(&mut self, digest: &Digest, labels: &Labels) -> Result<()> {
        if !self.blobs.contains_key(digest) {
            return Err(Error::NotFound(format!("blob {digest}")));
        }
        let l = self.labels.entry(digest.clone()).or_default();
        l.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(())
    }

    fn exists(&mut self, digest: &Digest) -> Result<bool> {
        Ok(self.blobs.contains_key(digest))
    }
}

impl BlobSource for MemoryStore {
    fn open(&mut self, desc: &Descriptor) -> Result<Option<Box<dyn Read + '_>>> {
        Ok(self
            .blobs
            .get(&desc.digest)
            .map(|b| Box::new(&b[..]) as Box<dyn Read + '_>))
    }

    fn exists(&mut self, digest: &Digest) -> Result<bool> {
        Ok(self.blobs.contains_key(digest))
    }
}
