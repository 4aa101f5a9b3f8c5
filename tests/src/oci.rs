//! Builds OCI image layout tarballs in memory, for tests that need layers the offline busybox images
//! do not have: whiteouts, opaque dirs, hostile paths, many megabytes of data.

use std::io::Write;

use serde_json::json;

use crate::sha256_hex;

/// One tar entry. Names are written raw into the header, so a test can say `../x` on purpose.
pub enum Entry {
    Dir(&'static str),
    File(String, Vec<u8>, u32),
    Symlink(&'static str, &'static str),
    Hardlink(&'static str, &'static str),
}

pub fn file(name: &str, data: &[u8]) -> Entry {
    Entry::File(name.to_string(), data.to_vec(), 0o644)
}

/// An uncompressed layer tar.
pub fn layer_tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, kind, data, mode, link): (&str, tar::EntryType, &[u8], u32, Option<&str>) =
            match e {
                Entry::Dir(n) => (n, tar::EntryType::Directory, &[], 0o755, None),
                Entry::File(n, d, m) => {
                    (n.as_str(), tar::EntryType::Regular, d.as_slice(), *m, None)
                }
                Entry::Symlink(n, t) => (n, tar::EntryType::Symlink, &[], 0o777, Some(*t)),
                Entry::Hardlink(n, t) => (n, tar::EntryType::Link, &[], 0o644, Some(*t)),
            };
        // Raw header fields: the tar crate's path setters refuse `..`, which hostile tests need.
        let raw = &mut h.as_old_mut().name;
        raw.fill(0);
        raw[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(t) = link {
            let l = &mut h.as_old_mut().linkname;
            l.fill(0);
            l[..t.len()].copy_from_slice(t.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).expect("append tar entry");
    }
    b.into_inner().expect("finish tar")
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip finish")
}

pub struct Blob {
    pub media_type: String,
    pub data: Vec<u8>,
}

impl Blob {
    pub fn digest(&self) -> String {
        format!("sha256:{}", sha256_hex(&self.data))
    }

    pub fn descriptor(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest(), "size": self.data.len()})
    }
}

pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// A single-platform image: its blobs, manifest last.
pub struct Image {
    pub name: String,
    pub layers: Vec<Blob>,
    pub config: Blob,
    pub manifest: Blob,
}

impl Image {
    /// Layers given as (media type, uncompressed tar); gzip media types get compressed here.
    pub fn new(name: &str, layers: Vec<(&str, Vec<u8>)>) -> Image {
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|(_, t)| format!("sha256:{}", sha256_hex(t)))
            .collect();
        let layers: Vec<Blob> = layers
            .into_iter()
            .map(|(mt, tar)| Blob {
                media_type: mt.to_string(),
                data: if mt.ends_with("gzip") {
                    gzip(&tar)
                } else {
                    tar
                },
            })
            .collect();
        let config = Blob {
            media_type: "application/vnd.oci.image.config.v1+json".into(),
            data: serde_json::to_vec(&json!({
                "architecture": host_arch(), "os": "linux",
                "config": {"Cmd": ["sh"]},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            }))
            .expect("config json"),
        };
        Image::with_config(name, layers, config)
    }

    pub fn with_config(name: &str, layers: Vec<Blob>, config: Blob) -> Image {
        let manifest = Blob {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            data: serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config.descriptor(),
                "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
            }))
            .expect("manifest json"),
        };
        Image {
            name: name.to_string(),
            layers,
            config,
            manifest,
        }
    }
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

/// An OCI layout tarball holding `images`; `skip` names digests to leave out (missing-blob cases).
pub fn layout_tar(images: &[Image], skip: &[String]) -> Vec<u8> {
    let index = json!({
        "schemaVersion": 2,
        "manifests": images.iter().map(|i| {
            let mut d = i.manifest.descriptor();
            d["annotations"] = json!({"org.opencontainers.image.ref.name": i.name});
            d
        }).collect::<Vec<_>>(),
    });
    layout_tar_with_index(
        images,
        &serde_json::to_vec(&index).expect("index json"),
        skip,
    )
}

pub fn layout_tar_with_index(images: &[Image], index: &[u8], skip: &[String]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).expect("path");
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).expect("append");
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", index);
    let mut seen = std::collections::HashSet::new();
    for img in images {
        for blob in img.layers.iter().chain([&img.config, &img.manifest]) {
            let d = blob.digest();
            if skip.contains(&d) || !seen.insert(d.clone()) {
                continue;
            }
            add(
                &format!("blobs/sha256/{}", &d["sha256:".len()..]),
                &blob.data,
            );
        }
    }
    b.into_inner().expect("finish layout tar")
}

/// An OCI layout directory whose tag `tag` names an image index of `images`, one per platform
/// (`(image, os, architecture)`). Returns the index blob's digest.
pub fn multi_platform_layout_dir(
    dir: &std::path::Path,
    tag: &str,
    images: &[(Image, &str, &str)],
) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("blobs dir");
    let write = |b: &Blob| {
        std::fs::write(blobs.join(&b.digest()["sha256:".len()..]), &b.data).expect("write blob");
    };
    for (img, _, _) in images {
        for b in img.layers.iter().chain([&img.config, &img.manifest]) {
            write(b);
        }
    }
    let index = Blob {
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        data: serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": images.iter().map(|(img, os, arch)| {
                let mut d = img.manifest.descriptor();
                d["platform"] = json!({"os": os, "architecture": arch});
                d
            }).collect::<Vec<_>>(),
        }))
        .expect("index json"),
    };
    write(&index);
    let mut top = index.descriptor();
    top["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [top]})).expect("json"),
    )
    .expect("index.json");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    index.digest()
}

/// A single-layer image for `arch` whose one file says which platform it is.
pub fn platform_image(arch: &str) -> Image {
    let tar = layer_tar(&[file("platform", arch.as_bytes())]);
    let config = Blob {
        media_type: "application/vnd.oci.image.config.v1+json".into(),
        data: serde_json::to_vec(&json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&tar))]},
        }))
        .expect("config"),
    };
    Image::with_config(
        &format!("platform-{arch}"),
        vec![Blob {
            media_type: LAYER_GZIP.into(),
            data: gzip(&tar),
        }],
        config,
    )
}

/// An OCI layout directory holding `image` under tag `tag`.
pub fn layout_dir(dir: &std::path::Path, tag: &str, image: &Image) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("blobs dir");
    for b in image.layers.iter().chain([&image.config, &image.manifest]) {
        std::fs::write(blobs.join(&b.digest()["sha256:".len()..]), &b.data).expect("write blob");
    }
    let mut top = image.manifest.descriptor();
    top["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [top]})).expect("json"),
    )
    .expect("index.json");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
}
