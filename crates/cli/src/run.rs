//! `berth run`: image → snapshot → container → task → start, attached or detached, as
//! `ctr run` does it over the same API.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use berth_image::manifest::parse_config;
use berth_image::{chain_id, Descriptor, Digest, PlatformMatcher};
use berth_spec::{ImageRuntimeConfig, Options};
use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{
    PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteRequest, DeleteTaskRequest, GetImageRequest,
};
use containerd_client::tonic::Code;

use crate::attach::start_and_wait;
use crate::conn::Conn;
use crate::progress::Progress;
use crate::stdio::{Attached, RawTerminal, StdioPaths};
use crate::unpack::{read_small, resolve_manifest, unpack};

pub struct RunArgs {
    pub rm: bool,
    pub detach: bool,
    pub tty: bool,
    pub env: Vec<String>,
    pub mounts: Vec<String>,
    pub user: Option<String>,
    pub cwd: Option<String>,
    pub cpus: Option<f64>,
    pub memory: Option<String>,
    pub runtime: String,
    pub snapshotter: String,
    pub image: String,
    pub id: String,
    pub args: Vec<String>,
}

fn now_ts() -> prost_types::Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// The image's runtime config and top chain id (unpacking into `snapshotter` if needed).
async fn image_rootfs(
    conn: &Conn,
    name: &str,
    snapshotter: &str,
) -> Result<(ImageRuntimeConfig, Option<Digest>)> {
    let img = conn
        .images()
        .get(GetImageRequest { name: name.into() })
        .await?
        .into_inner()
        .image
        .ok_or_else(|| anyhow!("image {name} not found"))?;
    let t = img
        .target
        .ok_or_else(|| anyhow!("image {name} has no target"))?;
    let target = Descriptor::new(
        t.media_type.clone(),
        Digest::parse(&t.digest)?,
        u64::try_from(t.size).map_err(|_| anyhow!("negative size for {}", t.digest))?,
    );
    let (_, manifest) = resolve_manifest(conn, &target, &PlatformMatcher::host()).await?;
    let config_bytes = read_small(conn, &manifest.config.digest).await?;
    let config = parse_config(&config_bytes)?;
    let runtime = ImageRuntimeConfig::from_image_config(&config_bytes)?;
    let top = chain_id(&config.rootfs.diff_ids);
    if let Some(top) = &top {
        let stat = conn
            .snapshots()
            .stat(StatSnapshotRequest {
                snapshotter: snapshotter.into(),
                key: top.to_string(),
            })
            .await;
        match stat {
            Ok(_) => {}
            // Not unpacked for this snapshotter yet: do it now, as ctr run does.
            Err(s) if s.code() == Code::NotFound => {
                unpack(conn, name, &target, snapshotter, &Progress::new()).await?;
            }
            Err(s) => return Err(s.into()),
        }
    }
    Ok((runtime, top))
}

async fn create_lease(conn: &Conn) -> Result<String> {
    let expire = time::OffsetDateTime::now_utc() + time::Duration::hours(24);
    let expire = expire.format(&time::format_description::well_known::Rfc3339)?;
    let lease = conn
        .leases()
        .create(CreateRequest {
            id: format!(
                "berth-run-{}",
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ),
            labels: HashMap::from([(berth_image::labels::GC_EXPIRE.to_string(), expire)]),
        })
        .await?
        .into_inner()
        .lease
        .ok_or_else(|| anyhow!("lease service returned no lease"))?;
    Ok(lease.id)
}

/// Snapshot + container record, under a lease so nothing is collected half-made.
async fn create_container(
    conn: &Conn,
    leased: &Conn,
    a: &RunArgs,
    spec_json: Vec<u8>,
    top: Option<Digest>,
) -> Result<()> {
    {
        leased
            .snapshots()
            .prepare(PrepareSnapshotRequest {
                snapshotter: a.snapshotter.clone(),
                key: a.id.clone(),
                parent: top.map(|t| t.to_string()).unwrap_or_default(),
                labels: HashMap::new(),
            })
            .await
            .context("prepare snapshot")?;
        let created = leased
            .containers()
            .create(CreateContainerRequest {
                container: Some(Container {
                    id: a.id.clone(),
                    image: a.image.clone(),
                    runtime: Some(Runtime {
                        name: a.runtime.clone(),
                        options: None,
                    }),
                    spec: Some(prost_types::Any {
                        type_url: berth_spec::SPEC_TYPE_URL.into(),
                        value: spec_json,
                    }),
                    snapshotter: a.snapshotter.clone(),
                    snapshot_key: a.id.clone(),
                    created_at: Some(now_ts()),
                    updated_at: Some(now_ts()),
                    ..Default::default()
                }),
            })
            .await;
        if let Err(e) = created {
            remove_snapshot(conn, &a.snapshotter, &a.id).await;
            return Err(anyhow::Error::from(e));
        }
        Ok(())
    }
}

/// Whether resolving `user` needs the image's account files (anything but `uid:gid`).
fn needs_rootfs(user: &str) -> bool {
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    !matches!(user.split_once(':'), Some((u, g)) if numeric(u) && numeric(g))
}

pub async fn run(conn: &Conn, ns: &str, a: RunArgs) -> Result<u8> {
    let lease = create_lease(conn).await?;
    let leased = conn.with_lease(&lease)?;
    let res = prepare(conn, &leased, ns, &a).await;
    // The container record now keeps its snapshot alive; the lease has done its job.
    let _ = conn
        .leases()
        .delete(DeleteRequest {
            id: lease,
            sync: false,
        })
        .await;
    res?;
    start(conn, a).await
}

/// Spec (user names resolved in a view of the image when needed) and container record.
async fn prepare(conn: &Conn, leased: &Conn, ns: &str, a: &RunArgs) -> Result<()> {
    let memory = a
        .memory
        .as_deref()
        .map(berth_spec::parse_memory)
        .transpose()?;
    let (image_cfg, top) = image_rootfs(leased, &a.image, &a.snapshotter).await?;
    let opts = Options {
        env: a.env.clone(),
        cwd: a.cwd.clone(),
        user: a.user.clone(),
        mounts: a.mounts.clone(),
        cpus: a.cpus,
        memory,
        terminal: a.tty,
    };
    let build = |rootfs: Option<&std::path::Path>| -> Result<berth_spec::Spec> {
        let mut spec = berth_spec::default_spec(ns, &a.id)?;
        berth_spec::with_image_config(&mut spec, &image_cfg, &a.args, rootfs)?;
        berth_spec::apply_options(&mut spec, &opts, rootfs)?;
        Ok(spec)
    };
    let user = a.user.as_deref().unwrap_or(&image_cfg.user);
    let spec = match (&top, !user.is_empty() && needs_rootfs(user)) {
        (Some(top), true) => {
            let viewed = crate::rootfs::with_view(leased, &a.snapshotter, &top.to_string(), |p| {
                build(Some(p))
            })
            .await;
            match viewed {
                Ok(spec) => spec?,
                // No local mount (not root, remote daemon): numeric users still work.
                Err(_) => build(None)?,
            }
        }
        _ => build(None)?,
    };
    let has_args = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().as_ref())
        .is_some_and(|a| !a.is_empty());
    if !has_args {
        anyhow::bail!("no command: the image sets none and none was given");
    }
    create_container(conn, leased, a, berth_spec::to_json(&spec)?, top).await
}

pub async fn remove_snapshot(conn: &Conn, snapshotter: &str, key: &str) {
    let _ = conn
        .snapshots()
        .remove(RemoveSnapshotRequest {
            snapshotter: snapshotter.into(),
            key: key.into(),
        })
        .await;
}

/// Removes the container record and its snapshot (errors ignored: best-effort cleanup).
pub async fn remove_container(conn: &Conn, id: &str, snapshotter: &str) {
    let _ = conn
        .containers()
        .delete(DeleteContainerRequest { id: id.into() })
        .await;
    remove_snapshot(conn, snapshotter, id).await;
}

async fn start(conn: &Conn, a: RunArgs) -> Result<u8> {
    let res = run_task(conn, &a).await;
    if a.rm && !a.detach {
        remove_container(conn, &a.id, &a.snapshotter).await;
    } else if res.is_err() {
        // A container whose task never started is useless; ctr leaves it, we tidy up.
        let _ = conn
            .tasks()
            .delete(DeleteTaskRequest {
                container_id: a.id.clone(),
            })
            .await;
        if a.rm {
            remove_container(conn, &a.id, &a.snapshotter).await;
        }
    }
    res
}

async fn run_task(conn: &Conn, a: &RunArgs) -> Result<u8> {
    let mounts = conn
        .snapshots()
        .mounts(containerd_client::services::v1::snapshots::MountsRequest {
            snapshotter: a.snapshotter.clone(),
            key: a.id.clone(),
        })
        .await?
        .into_inner()
        .mounts;
    // -d: null IO (empty paths), like ctr's cio.NullIO.
    let mut io = if a.detach {
        None
    } else {
        Some(Attached::new(a.tty)?)
    };
    let paths = io.as_ref().map(|i| i.paths.clone()).unwrap_or(StdioPaths {
        terminal: a.tty,
        ..Default::default()
    });
    conn.tasks()
        .create(CreateTaskRequest {
            container_id: a.id.clone(),
            rootfs: mounts,
            stdin: paths.stdin,
            stdout: paths.stdout,
            stderr: paths.stderr,
            terminal: paths.terminal,
            ..Default::default()
        })
        .await?;
    let _raw = if a.tty && !a.detach {
        RawTerminal::enable()
    } else {
        None
    };
    let status = start_and_wait(conn, &a.id, "", io.as_mut()).await?;
    drop(_raw);
    let Some(code) = status else {
        return Ok(0);
    };
    // ctr run deletes the exited task (not the container) unless detached.
    conn.tasks()
        .delete(DeleteTaskRequest {
            container_id: a.id.clone(),
        })
        .await?;
    Ok(exit_code(code))
}

/// A process exit status as our own exit code (statuses above 255 wrap like a shell's).
pub fn exit_code(status: u32) -> u8 {
    (status & 0xff) as u8
}
