//! `berth container ...`: ls, info, rm.

use anyhow::{anyhow, bail, Result};
use containerd_client::services::v1::{
    DeleteContainerRequest, DeleteTaskRequest, GetContainerRequest, GetRequest,
    ListContainersRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::v1::Status as TaskStatus;
use serde::Serialize;
use serde_json::{json, Value};

use crate::conn::Conn;
use crate::output::{self, Format};
use crate::run::remove_snapshot;
use crate::task::status_name;

#[derive(Serialize)]
struct Row {
    container: String,
    image: String,
    runtime: String,
}

pub async fn ls(conn: &Conn, filters: Vec<String>, format: Format) -> Result<()> {
    let list = conn
        .containers()
        .list(ListContainersRequest { filters })
        .await?
        .into_inner()
        .containers;
    let mut rows: Vec<Row> = list
        .into_iter()
        .map(|c| Row {
            container: c.id,
            image: if c.image.is_empty() {
                "-".into()
            } else {
                c.image
            },
            runtime: c.runtime.map(|r| r.name).unwrap_or_default(),
        })
        .collect();
    rows.sort_by(|a, b| a.container.cmp(&b.container));
    output::print(format, &["CONTAINER", "IMAGE", "RUNTIME"], &rows, |r| {
        vec![r.container.clone(), r.image.clone(), r.runtime.clone()]
    })
}

/// The container record as JSON, the spec decoded (ctr container info prints the same shape).
pub async fn info(conn: &Conn, id: String) -> Result<()> {
    let c = conn
        .containers()
        .get(GetContainerRequest { id: id.clone() })
        .await?
        .into_inner()
        .container
        .ok_or_else(|| anyhow!("container {id} not found"))?;
    let spec = c.spec.as_ref().map(|s| {
        serde_json::from_slice::<Value>(&s.value)
            .unwrap_or_else(|_| json!({"type_url": s.type_url}))
    });
    let labels: std::collections::BTreeMap<_, _> = c.labels.into_iter().collect();
    let out = json!({
        "ID": c.id,
        "Labels": labels,
        "Image": c.image,
        "Runtime": {
            "Name": c.runtime.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
            "Options": c.runtime.as_ref().and_then(|r| r.options.as_ref()).map(|o| o.type_url.clone()),
        },
        "SnapshotKey": c.snapshot_key,
        "Snapshotter": c.snapshotter,
        "CreatedAt": output::rfc3339(c.created_at.as_ref()),
        "UpdatedAt": output::rfc3339(c.updated_at.as_ref()),
        "Extensions": c.extensions.keys().collect::<Vec<_>>(),
        "Spec": spec,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Deletes one container: a stopped (or never started) task goes first; a live one refuses.
async fn rm_one(conn: &Conn, id: &str) -> Result<()> {
    let c = conn
        .containers()
        .get(GetContainerRequest { id: id.into() })
        .await?
        .into_inner()
        .container
        .ok_or_else(|| anyhow!("container {id} not found"))?;
    match conn
        .tasks()
        .get(GetRequest {
            container_id: id.into(),
            exec_id: String::new(),
        })
        .await
    {
        Ok(t) => {
            let p = t.into_inner().process.unwrap_or_default();
            match TaskStatus::try_from(p.status) {
                Ok(TaskStatus::Stopped) | Ok(TaskStatus::Created) => {
                    conn.tasks()
                        .delete(DeleteTaskRequest {
                            container_id: id.into(),
                        })
                        .await?;
                }
                _ => bail!(
                    "cannot delete a non stopped container: task {id} is {}",
                    status_name(p.status)
                ),
            }
        }
        Err(s) if s.code() == Code::NotFound => {}
        Err(s) => return Err(s.into()),
    }
    conn.containers()
        .delete(DeleteContainerRequest { id: id.into() })
        .await?;
    if !c.snapshot_key.is_empty() {
        remove_snapshot(conn, &c.snapshotter, &c.snapshot_key).await;
    }
    Ok(())
}

pub async fn rm(conn: &Conn, ids: Vec<String>) -> Result<()> {
    let mut failed = None;
    for id in ids {
        match rm_one(conn, &id).await {
            Ok(()) => println!("{id}"),
            Err(e) => {
                let msg = e
                    .chain()
                    .find_map(|c| c.downcast_ref::<containerd_client::tonic::Status>())
                    .map(|s| s.message().to_string())
                    .unwrap_or_else(|| format!("{e:#}"));
                eprintln!("berth: {id}: {msg}");
                failed = Some(containerd_client::tonic::Status::failed_precondition(msg));
            }
        }
    }
    match failed {
        Some(s) => Err(crate::Reported(s).into()),
        None => Ok(()),
    }
}
