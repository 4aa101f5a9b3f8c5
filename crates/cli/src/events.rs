//! `berth events`: the Events.Subscribe stream, one line per event with its payload decoded
//! when it is one of containerd's own event types.

use std::io::Write;

use anyhow::Result;
use containerd_client::events as ev;
use containerd_client::services::v1::SubscribeRequest;
use prost::Message;
use serde_json::{json, Value};

use crate::conn::Conn;
use crate::output::{self, Format};

fn ts(t: &Option<prost_types::Timestamp>) -> Value {
    json!(output::rfc3339(t.as_ref()))
}

/// The event payload as JSON for the task and container events; `Debug` text for other
/// known types; the raw type URL for unknown ones.
pub fn decode(any: &prost_types::Any) -> Value {
    let b = any.value.as_slice();
    let name = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
    macro_rules! dbg_of {
        ($t:ty) => {
            <$t>::decode(b).map(|m| json!(format!("{m:?}"))).ok()
        };
    }
    let v = match name {
        "containerd.events.TaskCreate" => ev::TaskCreate::decode(b)
            .map(|e| json!({"container_id": e.container_id, "bundle": e.bundle, "pid": e.pid}))
            .ok(),
        "containerd.events.TaskStart" => ev::TaskStart::decode(b)
            .map(|e| json!({"container_id": e.container_id, "pid": e.pid}))
            .ok(),
        "containerd.events.TaskExit" => ev::TaskExit::decode(b)
            .map(|e| {
                json!({"container_id": e.container_id, "id": e.id, "pid": e.pid,
                       "exit_status": e.exit_status, "exited_at": ts(&e.exited_at)})
            })
            .ok(),
        "containerd.events.TaskDelete" => ev::TaskDelete::decode(b)
            .map(|e| {
                json!({"container_id": e.container_id, "id": e.id, "pid": e.pid,
                       "exit_status": e.exit_status, "exited_at": ts(&e.exited_at)})
            })
            .ok(),
        "containerd.events.TaskOOM" => ev::TaskOom::decode(b)
            .map(|e| json!({"container_id": e.container_id}))
            .ok(),
        "containerd.events.TaskExecAdded" => ev::TaskExecAdded::decode(b)
            .map(|e| json!({"container_id": e.container_id, "exec_id": e.exec_id}))
            .ok(),
        "containerd.events.TaskExecStarted" => ev::TaskExecStarted::decode(b)
            .map(|e| json!({"container_id": e.container_id, "exec_id": e.exec_id, "pid": e.pid}))
            .ok(),
        "containerd.events.TaskPaused" => ev::TaskPaused::decode(b)
            .map(|e| json!({"container_id": e.container_id}))
            .ok(),
        "containerd.events.TaskResumed" => ev::TaskResumed::decode(b)
            .map(|e| json!({"container_id": e.container_id}))
            .ok(),
        "containerd.events.ContainerCreate" => ev::ContainerCreate::decode(b)
            .map(|e| {
                json!({"id": e.id, "image": e.image,
                       "runtime": e.runtime.map(|r| r.name).unwrap_or_default()})
            })
            .ok(),
        "containerd.events.ContainerDelete" => ev::ContainerDelete::decode(b)
            .map(|e| json!({"id": e.id}))
            .ok(),
        "containerd.events.ContainerUpdate" => dbg_of!(ev::ContainerUpdate),
        "containerd.events.SnapshotPrepare" => dbg_of!(ev::SnapshotPrepare),
        "containerd.events.SnapshotCommit" => dbg_of!(ev::SnapshotCommit),
        "containerd.events.SnapshotRemove" => dbg_of!(ev::SnapshotRemove),
        "containerd.events.NamespaceCreate" => dbg_of!(ev::NamespaceCreate),
        "containerd.events.NamespaceDelete" => dbg_of!(ev::NamespaceDelete),
        "containerd.events.ContentDelete" => dbg_of!(ev::ContentDelete),
        _ => None,
    };
    v.unwrap_or_else(|| json!({"type_url": any.type_url}))
}

pub async fn events(conn: &Conn, filters: Vec<String>, format: Format) -> Result<()> {
    let mut stream = conn
        .events()
        .subscribe(SubscribeRequest { filters })
        .await?
        .into_inner();
    let stdout = std::io::stdout();
    while let Some(e) = stream.message().await? {
        let payload = e.event.as_ref().map(decode).unwrap_or(Value::Null);
        let time = output::rfc3339(e.timestamp.as_ref());
        let mut out = stdout.lock();
        match format {
            Format::Json => {
                let line = json!({"timestamp": time, "topic": e.topic,
                                  "namespace": e.namespace, "event": payload});
                writeln!(out, "{line}")?;
            }
            Format::Table => {
                writeln!(out, "{time} {} {} {payload}", e.topic, e.namespace)?;
            }
        }
        // Consumers (tests, pipes) need each event as it happens.
        out.flush()?;
    }
    Ok(())
}
