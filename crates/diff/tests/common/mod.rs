//! Helpers shared by the diff tests: building tars by hand, sentinels, tree listings.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const TAR_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const TAR_ZST: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

fn header(ty: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(ty);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_size(size);
    h
}

/// A PAX extended header body from records.
pub fn pax_body(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        // The length prefix counts itself; iterate until it is stable.
        let rest = k.len() + v.len() + 3;
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

impl Layer {
    pub fn new() -> Self {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        self.b.append_data(&mut h, path, &[][..]).expect("dir");
        self
    }

    pub fn dir_mtime(mut self, path: &str, mode: u32, mtime: u64) -> Self {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        h.set_mtime(mtime);
        self.b.append_data(&mut h, path, &[][..]).expect("dir");
        self
    }

    pub fn file(mut self, path: &str, data: &[u8]) -> Self {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        self.b.append_data(&mut h, path, data).expect("file");
        self
    }

    pub fn file_owned(mut self, path: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.b.append_data(&mut h, path, data).expect("file");
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        self.b.append_link(&mut h, path, target).expect("symlink");
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Link, 0o644, 0);
        self.b.append_link(&mut h, path, target).expect("hardlink");
        self
    }

    pub fn node(mut self, path: &str, ty: tar::EntryType, major: u32, minor: u32) -> Self {
        let mut h = header(ty, 0o600, 0);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        self.b.append_data(&mut h, path, &[][..]).expect("node");
        self
    }

    /// A PAX header applying to the next entry.
    pub fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
        let body = pax_body(records);
        let mut h = header(tar::EntryType::XHeader, 0o644, body.len() as u64);
        self.b
            .append_data(&mut h, "PaxHeaders/x", body.as_slice())
            .expect("pax");
        self
    }

    /// An entry whose name bytes are written verbatim (the builder refuses `..`).
    pub fn raw(
        mut self,
        ty: tar::EntryType,
        name: &[u8],
        link: Option<&[u8]>,
        data: &[u8],
    ) -> Self {
        let mut h = header(ty, 0o644, data.len() as u64);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
        }
        h.set_cksum();
        self.b.append(&h, data).expect("raw");
        self
    }

    pub fn build(self) -> Vec<u8> {
        self.b.into_inner().expect("finish tar")
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// A temp dir with `root/` (apply target) and `sentinel/keep` (must never change).
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("root")).expect("root");
        fs::create_dir(dir.path().join("sentinel")).expect("sentinel");
        fs::write(dir.path().join("sentinel/keep"), b"precious").expect("keep");
        Sandbox { dir }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn sentinel(&self) -> PathBuf {
        self.dir.path().join("sentinel")
    }

    /// Nothing outside `root/` changed: the sandbox holds only root and sentinel, and the
    /// sentinel holds only its untouched file.
    pub fn assert_untouched(&self) {
        let mut top: Vec<String> = fs::read_dir(self.dir.path())
            .expect("read sandbox")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert_eq!(top, vec!["root".to_string(), "sentinel".to_string()]);
        let sentinel = listing(&self.sentinel());
        assert_eq!(sentinel.len(), 1, "sentinel changed: {sentinel:?}");
        assert_eq!(
            sentinel.get("keep").map(String::as_str),
            Some("file:precious")
        );
    }
}

/// Relative path -> short description ("file:<content>", "dir", "link:<target>", ...),
/// without following symlinks.
pub fn listing(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for p in entries {
        let rel = p
            .strip_prefix(root)
            .expect("prefix")
            .to_string_lossy()
            .into_owned();
        let md = fs::symlink_metadata(&p).expect("lstat");
        let desc = if md.is_dir() {
            walk(root, &p, out);
            "dir".to_string()
        } else if md.file_type().is_symlink() {
            format!("link:{}", fs::read_link(&p).expect("readlink").display())
        } else if md.is_file() {
            format!(
                "file:{}",
                String::from_utf8_lossy(&fs::read(&p).expect("read"))
            )
        } else {
            format!("node:{:o}:{}", md.mode() & 0o170000, md.rdev())
        };
        out.insert(rel, desc);
    }
}
