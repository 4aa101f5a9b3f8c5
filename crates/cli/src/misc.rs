//! Small listing commands: version, namespaces, content, snapshots, leases.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Result};
use containerd_client::services::v1::snapshots::{Kind, ListSnapshotsRequest};
use containerd_client::services::v1::{
    CreateNamespaceRequest, DeleteNamespaceRequest, ListContentRequest, ListNamespacesRequest,
    ListRequest, Namespace,
};
use serde::Serialize;

use crate::conn::Conn;
use crate::output::{self, Format};

pub async fn version(conn: &Conn, format: Format) -> Result<()> {
    let v = conn.version().version(()).await?.into_inner();
    #[derive(Serialize)]
    struct Out {
        client: &'static str,
        server_version: String,
        server_revision: String,
    }
    let out = Out {
        client: env!("CARGO_PKG_VERSION"),
        server_version: v.version,
        server_revision: v.revision,
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&out)?),
        Format::Table => {
            println!("Client:\n  Version:  {}\n", out.client);
            println!(
                "Server:\n  Version:  {}\n  Revision: {}",
                out.server_version, out.server_revision
            );
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct NsRow {
    name: String,
    labels: BTreeMap<String, String>,
}

pub async fn ns_ls(conn: &Conn, format: Format) -> Result<()> {
    let list = conn
        .namespaces()
        .list(ListNamespacesRequest::default())
        .await?
        .into_inner()
        .namespaces;
    let mut rows: Vec<NsRow> = list
        .into_iter()
        .map(|n| NsRow {
            name: n.name,
            labels: n.labels.into_iter().collect(),
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    output::print(format, &["NAME", "LABELS"], &rows, |r| {
        vec![r.name.clone(), output::labels_str(&r.labels)]
    })
}

pub fn parse_labels(kv: &[String]) -> Result<HashMap<String, String>> {
    kv.iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("invalid label {s:?} (want key=value)"),
        })
        .collect()
}

pub async fn ns_create(conn: &Conn, name: String, labels: Vec<String>) -> Result<()> {
    let labels = parse_labels(&labels)?;
    conn.namespaces()
        .create(CreateNamespaceRequest {
            namespace: Some(Namespace { name, labels }),
        })
        .await?;
    Ok(())
}

pub async fn ns_rm(conn: &Conn, names: Vec<String>) -> Result<()> {
    for name in names {
        conn.namespaces()
            .delete(DeleteNamespaceRequest { name: name.clone() })
            .await?;
        println!("{name}");
    }
    Ok(())
}

#[derive(Serialize)]
struct ContentRow {
    digest: String,
    size: i64,
    created_at: String,
    #[serde(skip)]
    age: String,
    labels: BTreeMap<String, String>,
}

pub async fn content_ls(conn: &Conn, filters: Vec<String>, format: Format) -> Result<()> {
    let mut stream = conn
        .content()
        .list(ListContentRequest { filters })
        .await?
        .into_inner();
    let mut rows = Vec::new();
    while let Some(m) = stream.message().await? {
        for i in m.info {
            rows.push(ContentRow {
                digest: i.digest,
                size: i.size,
                created_at: output::rfc3339(i.created_at.as_ref()),
                age: output::age(i.created_at.as_ref()),
                labels: i.labels.into_iter().collect(),
            });
        }
    }
    rows.sort_by(|a, b| a.digest.cmp(&b.digest));
    output::print(format, &["DIGEST", "SIZE", "AGE", "LABELS"], &rows, |r| {
        vec![
            r.digest.clone(),
            output::human_size(r.size.max(0) as u64),
            r.age.clone(),
            output::labels_str(&r.labels),
        ]
    })
}

#[derive(Serialize)]
struct SnapRow {
    key: String,
    parent: String,
    kind: String,
    labels: BTreeMap<String, String>,
}

pub async fn snapshot_ls(conn: &Conn, snapshotter: String, format: Format) -> Result<()> {
    let mut stream = conn
        .snapshots()
        .list(ListSnapshotsRequest {
            snapshotter,
            filters: Vec::new(),
        })
        .await?
        .into_inner();
    let mut rows = Vec::new();
    while let Some(m) = stream.message().await? {
        for i in m.info {
            let kind = match Kind::try_from(i.kind) {
                Ok(Kind::View) => "View",
                Ok(Kind::Active) => "Active",
                Ok(Kind::Committed) => "Committed",
                _ => "Unknown",
            };
            rows.push(SnapRow {
                key: i.name,
                parent: i.parent,
                kind: kind.to_string(),
                labels: i.labels.into_iter().collect(),
            });
        }
    }
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    output::print(format, &["KEY", "PARENT", "KIND"], &rows, |r| {
        vec![r.key.clone(), r.parent.clone(), r.kind.clone()]
    })
}

#[derive(Serialize)]
struct LeaseRow {
    id: String,
    created_at: String,
    labels: BTreeMap<String, String>,
}

pub async fn lease_ls(conn: &Conn, filters: Vec<String>, format: Format) -> Result<()> {
    let list = conn
        .leases()
        .list(ListRequest { filters })
        .await?
        .into_inner()
        .leases;
    let mut rows: Vec<LeaseRow> = list
        .into_iter()
        .map(|l| LeaseRow {
            id: l.id,
            created_at: output::rfc3339(l.created_at.as_ref()),
            labels: l.labels.into_iter().collect(),
        })
        .collect();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    output::print(format, &["ID", "CREATED AT", "LABELS"], &rows, |r| {
        vec![
            r.id.clone(),
            r.created_at.clone(),
            output::labels_str(&r.labels),
        ]
    })
}
