//! `berth image ...`: import, ls, rm, export.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use berth_image::manifest::{parse_config, parse_index, parse_manifest};
use berth_image::{
    export, import, media_types as mt, select_manifest, Descriptor, Digest, ExportOptions,
    ImportOptions, ImportedImage, PlatformMatcher,
};
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{
    CreateImageRequest, CreateRequest, DeleteImageRequest, DeleteRequest, GetImageRequest, Image,
    ListImagesRequest, UpdateImageRequest,
};
use containerd_client::tonic::Code;
use serde::Serialize;

use crate::blobs::GrpcContent;
use crate::conn::{Conn, Svc};
use crate::output::{self, Format};
use crate::progress::Progress;
use crate::unpack::{read_small, to_proto, unpack};

pub struct ImportArgs {
    pub file: PathBuf,
    pub no_unpack: bool,
    pub snapshotter: String,
    pub all_platforms: bool,
    pub base_name: String,
}

fn now_ts() -> prost_types::Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// A lease that expires on its own (24h) if we die before deleting it, so a crashed import
/// never pins content forever.
async fn create_lease(leases: &mut LeasesClient<Svc>) -> Result<String> {
    let expire = time::OffsetDateTime::now_utc() + time::Duration::hours(24);
    let expire = expire.format(&time::format_description::well_known::Rfc3339)?;
    let id = format!(
        "berth-import-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let resp = leases
        .create(CreateRequest {
            id,
            labels: HashMap::from([(berth_image::labels::GC_EXPIRE.to_string(), expire)]),
        })
        .await?;
    resp.into_inner()
        .lease
        .map(|l| l.id)
        .ok_or_else(|| anyhow!("lease service returned no lease"))
}

pub async fn import_cmd(conn: &Conn, args: ImportArgs) -> Result<()> {
    let mut leases = conn.leases();
    let lease = create_lease(&mut leases).await?;
    let leased = conn.with_lease(&lease)?;
    let result = import_under_lease(&leased, &args).await;
    // Always drop the lease: on success the images and GC labels keep everything alive.
    let _ = leases
        .delete(DeleteRequest {
            id: lease,
            sync: false,
        })
        .await;
    let images = result?;
    for img in images {
        println!("{} {}", img.name, img.target.digest);
    }
    Ok(())
}

async fn import_under_lease(conn: &Conn, args: &ImportArgs) -> Result<Vec<ImportedImage>> {
    let progress = Progress::new();
    progress.status(format!("importing {}", args.file.display()));
    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let opts = ImportOptions {
        base_name: args.base_name.clone(),
        all_platforms: args.all_platforms,
        platform: PlatformMatcher::host(),
    };
    let mut sink = GrpcContent::new(tokio::runtime::Handle::current(), conn.content());
    let images = tokio::task::spawn_blocking(move || {
        import(BufReader::with_capacity(1 << 20, file), &mut sink, &opts)
    })
    .await??;
    // Unpack before naming anything: an archive whose layers cannot be applied records no image
    // (its content and snapshots stay only under the lease, which goes at the end).
    if !args.no_unpack {
        let mut seen = std::collections::HashSet::new();
        for img in &images {
            if !seen.insert(img.target.digest.clone()) {
                continue;
            }
            progress.status(format!("unpacking {}", img.name));
            unpack(conn, &img.name, &img.target, &args.snapshotter, &progress).await?;
            progress.line(format!("unpacked {}", img.name));
        }
    }
    for img in &images {
        create_or_update_image(conn, img).await?;
        progress.line(format!("{}: {}", img.name, img.target.digest));
    }
    Ok(images)
}

async fn create_or_update_image(conn: &Conn, img: &ImportedImage) -> Result<()> {
    let mut target = img.target.clone();
    // The name annotations belong to the archive's index, not to the stored image.
    target.annotations.clear();
    let image = Image {
        name: img.name.clone(),
        labels: HashMap::new(),
        target: Some(to_proto(&target)),
        created_at: Some(now_ts()),
        updated_at: Some(now_ts()),
    };
    let mut images = conn.images();
    match images
        .create(CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::AlreadyExists => {
            images
                .update(UpdateImageRequest {
                    image: Some(image),
                    update_mask: None,
                    source_date_epoch: None,
                })
                .await?;
            Ok(())
        }
        Err(s) => Err(s.into()),
    }
}

#[derive(Serialize)]
struct ImageRow {
    name: String,
    #[serde(rename = "type")]
    media_type: String,
    digest: String,
    size: Option<u64>,
    platforms: Vec<String>,
    labels: std::collections::BTreeMap<String, String>,
}

fn from_proto(d: &containerd_client::types::Descriptor) -> Result<Descriptor> {
    Ok(Descriptor::new(
        d.media_type.clone(),
        Digest::parse(&d.digest)?,
        u64::try_from(d.size).map_err(|_| anyhow!("negative size for {}", d.digest))?,
    ))
}

/// Size (manifest + config + layers of the host platform, plus the index) and platforms.
async fn describe(conn: &Conn, target: &Descriptor) -> Result<(u64, Vec<String>)> {
    let bytes = read_small(conn, &target.digest).await?;
    let (mut size, manifest_desc, platforms) = if mt::is_index(&target.media_type) {
        let idx = parse_index(&bytes)?;
        let platforms = idx
            .manifests
            .iter()
            .filter_map(|d| {
                d.platform
                    .as_ref()
                    .map(|p| p.clone().normalize().to_string())
            })
            .collect();
        let m = select_manifest(&idx, &PlatformMatcher::host())?;
        (target.size, m, Some(platforms))
    } else {
        (0, target.clone(), None)
    };
    let m = parse_manifest(&read_small(conn, &manifest_desc.digest).await?)?;
    size += manifest_desc.size + m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>();
    let platforms = match platforms {
        Some(p) => p,
        None => {
            let cfg = parse_config(&read_small(conn, &m.config.digest).await?)?;
            vec![cfg.platform().to_string()]
        }
    };
    Ok((size, platforms))
}

pub async fn ls(conn: &Conn, filters: Vec<String>, format: Format) -> Result<()> {
    let images = conn
        .images()
        .list(ListImagesRequest { filters })
        .await?
        .into_inner()
        .images;
    let mut rows = Vec::new();
    for img in images {
        let Some(t) = img.target.as_ref() else {
            continue;
        };
        let (size, platforms) = match from_proto(t) {
            Ok(d) => describe(conn, &d)
                .await
                .map_or((None, Vec::new()), |(s, p)| (Some(s), p)),
            Err(_) => (None, Vec::new()),
        };
        rows.push(ImageRow {
            name: img.name.clone(),
            media_type: t.media_type.clone(),
            digest: t.digest.clone(),
            size,
            platforms,
            labels: img.labels.into_iter().collect(),
        });
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    output::print(
        format,
        &["NAME", "TYPE", "DIGEST", "SIZE", "PLATFORMS"],
        &rows,
        |r| {
            vec![
                r.name.clone(),
                r.media_type.clone(),
                r.digest.clone(),
                r.size.map_or("-".into(), output::human_size),
                if r.platforms.is_empty() {
                    "-".into()
                } else {
                    r.platforms.join(",")
                },
            ]
        },
    )
}

pub async fn rm(conn: &Conn, names: Vec<String>, sync: bool) -> Result<()> {
    let mut failed = None;
    for name in names {
        let r = conn
            .images()
            .delete(DeleteImageRequest {
                name: name.clone(),
                sync,
                target: None,
            })
            .await;
        match r {
            Ok(_) => println!("{name}"),
            Err(s) => {
                eprintln!("berth: {name}: {}", s.message());
                failed = Some(s);
            }
        }
    }
    match failed {
        Some(s) => Err(crate::Reported(s).into()),
        None => Ok(()),
    }
}

pub async fn export_cmd(conn: &Conn, out: &Path, names: Vec<String>) -> Result<()> {
    let mut pairs = Vec::new();
    for name in names {
        let img = conn
            .images()
            .get(GetImageRequest { name: name.clone() })
            .await?
            .into_inner()
            .image
            .ok_or_else(|| anyhow!("image {name} not found"))?;
        let target = img
            .target
            .as_ref()
            .ok_or_else(|| anyhow!("image {name} has no target"))?;
        pairs.push((img.name.clone(), from_proto(target)?));
    }
    // Write next to the destination and rename: a failed export leaves no half archive.
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.partial",
        out.file_name()
            .map_or("export".into(), |n| n.to_string_lossy())
    ));
    let file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut source = GrpcContent::new(tokio::runtime::Handle::current(), conn.content());
    let res = tokio::task::spawn_blocking(move || {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        export(&pairs, &mut source, &ExportOptions::default(), &mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok::<_, anyhow::Error>(())
    })
    .await?;
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// The name an image reference is stored under (`busybox` → `docker.io/library/busybox:latest`).
fn normalised(reference: &str) -> Result<String> {
    Ok(berth_image::Reference::parse(reference)
        .map_err(|e| anyhow!("{e}"))?
        .to_string())
}

/// `<name> <digest>` of a stored image.
pub async fn print_image(conn: &Conn, reference: &str) -> Result<()> {
    let name = normalised(reference)?;
    let img = conn
        .images()
        .get(GetImageRequest { name: name.clone() })
        .await?
        .into_inner()
        .image
        .ok_or_else(|| anyhow!("image {name} has no record"))?;
    let digest = img.target.map(|t| t.digest).unwrap_or_default();
    println!("{name} {digest}");
    Ok(())
}

/// A second name for an image: same target, new record (replacing one of that name).
pub async fn tag(conn: &Conn, src: &str, dst: &str) -> Result<()> {
    let (src, dst) = (normalised(src)?, normalised(dst)?);
    let mut img = conn
        .images()
        .get(GetImageRequest { name: src.clone() })
        .await?
        .into_inner()
        .image
        .ok_or_else(|| anyhow!("image {src} has no record"))?;
    img.name = dst.clone();
    img.created_at = None;
    img.updated_at = None;
    let created = conn
        .images()
        .create(containerd_client::services::v1::CreateImageRequest {
            image: Some(img.clone()),
            source_date_epoch: None,
        })
        .await;
    match created {
        Ok(_) => {}
        Err(s) if s.code() == Code::AlreadyExists => {
            conn.images()
                .update(containerd_client::services::v1::UpdateImageRequest {
                    image: Some(img),
                    update_mask: None,
                    source_date_epoch: None,
                })
                .await?;
        }
        Err(s) => return Err(s.into()),
    }
    println!("{dst}");
    Ok(())
}
