//! Shared helpers for the integration tests: a store in a temp dir and one-call blob writes.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;

use berth_store::{Labels, Store};
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

/// A store on a fresh temp dir; the dir (and everything in it) goes when the TempDir drops.
pub fn store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open store");
    (dir, store)
}

pub fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<HashMap<_, _>>()
}

/// Writes and commits `data` in `ns` with `labels`, returning its digest.
pub fn put(store: &Store, ns: &str, data: &[u8], l: Labels) -> String {
    put_leased(store, ns, data, l, None)
}

pub fn put_leased(store: &Store, ns: &str, data: &[u8], l: Labels, lease: Option<&str>) -> String {
    let reference = format!("ref-{}", sha(data));
    let mut w = store
        .content_writer(ns, &reference, data.len() as i64, None, lease)
        .expect("writer");
    w.write(0, data).expect("write");
    match w.commit(data.len() as i64, Some(&sha(data)), l) {
        Ok(d) => d,
        // The blob exists already (another image's layer): it is recorded, like containerd.
        Err(e) if e.kind() == berth_store::ErrorKind::AlreadyExists => sha(data),
        Err(e) => panic!("commit: {e}"),
    }
}

pub fn read_all(store: &Store, ns: &str, digest: &str) -> Vec<u8> {
    let (mut f, size) = store.content_open(ns, digest).expect("open");
    let mut out = Vec::new();
    f.read_to_end(&mut out).expect("read");
    assert_eq!(out.len() as i64, size);
    out
}

pub fn blob_path(dir: &TempDir, digest: &str) -> std::path::PathBuf {
    dir.path()
        .join("content/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

pub fn filter(fs: &[&str]) -> berth_store::Filter {
    berth_store::filters::parse(&fs.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("filter")
}
