//! containerd's Snapshots service over berth's backends. Namespaces share a backend, so every key
//! is stored as `<namespace>/<key>` and translated back on the way out.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use berth_api::events as ev;
use berth_api::server::snapshots::snapshots_server::Snapshots;
use berth_api::services::v1::snapshots::*;
use berth_snapshot::Snapshotter;
use futures::Stream;
use tonic::{Request, Response, Status};

use super::Service;
use crate::context;
use crate::convert::{mounts_to_pb, paths, ts};
use crate::daemon::{backend_key, blocking, split_backend_key};
use crate::status::IntoStatus;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn require_key(key: &str) -> Result<(), Status> {
    if key.is_empty() {
        return Err(Status::invalid_argument("snapshot key must not be empty"));
    }
    Ok(())
}

fn parent(ns: &str, parent: &str) -> Option<String> {
    (!parent.is_empty()).then(|| backend_key(ns, parent))
}

fn strip(name: &str) -> String {
    split_backend_key(name)
        .map(|(_, k)| k.to_string())
        .unwrap_or_default()
}

fn kind_to_pb(k: berth_snapshot::Kind) -> i32 {
    match k {
        berth_snapshot::Kind::View => Kind::View as i32,
        berth_snapshot::Kind::Active => Kind::Active as i32,
        berth_snapshot::Kind::Committed => Kind::Committed as i32,
    }
}

fn info_to_pb(i: berth_snapshot::Info) -> Info {
    Info {
        name: strip(&i.name),
        parent: i.parent.as_deref().map(strip).unwrap_or_default(),
        kind: kind_to_pb(i.kind),
        created_at: ts(i.created_at),
        updated_at: ts(i.updated_at),
        labels: i.labels,
    }
}

struct InfoFields<'a>(&'a Info);

impl berth_store::filters::Adaptor for InfoFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "name" => Some(self.0.name.clone()),
            "parent" => Some(self.0.parent.clone()),
            "kind" => Some(
                match Kind::try_from(self.0.kind).unwrap_or(Kind::Unknown) {
                    Kind::View => "view",
                    Kind::Active => "active",
                    Kind::Committed => "committed",
                    Kind::Unknown => "unknown",
                }
                .to_string(),
            ),
            "labels" if path.len() == 2 => self.0.labels.get(&path[1]).cloned(),
            _ => None,
        }
    }
}

/// What Prepare and View share.
struct NewSnapshot {
    ns: String,
    lease: Option<String>,
    key: String,
    parent: String,
    labels: HashMap<String, String>,
    view: bool,
}

impl Service {
    /// Records a new snapshot in the request's lease, so it survives until the lease goes.
    fn lease_snapshot(
        &self,
        ns: &str,
        lease: Option<&str>,
        snapshotter: &str,
        key: &str,
    ) -> Result<(), Status> {
        if let Some(lease) = lease {
            self.store
                .lease_add_resource(
                    ns,
                    lease,
                    berth_store::LeaseResource {
                        id: key.to_string(),
                        kind: format!("snapshots/{snapshotter}"),
                    },
                )
                .status()?;
        }
        Ok(())
    }

    fn prepare_or_view(
        &self,
        sn: Arc<dyn Snapshotter>,
        new: NewSnapshot,
    ) -> Result<Vec<berth_snapshot::Mount>, Status> {
        let NewSnapshot {
            ns,
            lease,
            key,
            parent: parent_key,
            labels,
            view,
        } = new;
        require_key(&key)?;
        self.store.namespace_ensure(&ns).status()?;
        let bkey = backend_key(&ns, &key);
        let parent = parent(&ns, &parent_key);
        let mounts = if view {
            sn.view(&bkey, parent.as_deref(), labels).status()?
        } else {
            sn.prepare(&bkey, parent.as_deref(), labels).status()?
        };
        if let Err(e) = self.lease_snapshot(&ns, lease.as_deref(), sn.name(), &key) {
            let _ = sn.remove(&bkey);
            return Err(e);
        }
        Ok(mounts)
    }
}

#[tonic::async_trait]
impl Snapshots for Service {
    async fn prepare(
        &self,
        req: Request<PrepareSnapshotRequest>,
    ) -> Result<Response<PrepareSnapshotResponse>, Status> {
        let ns = context::namespace(&req)?;
        let lease = context::lease(&req)?;
        let req = req.into_inner();
        let sn = self.snapshotter(&req.snapshotter)?;
        let s = self.clone();
        let new = NewSnapshot {
            ns: ns.clone(),
            lease,
            key: req.key.clone(),
            parent: req.parent.clone(),
            labels: req.labels,
            view: false,
        };
        let snapshotter = sn.name().to_string();
        let _hold = self.gc.hold().await;
        let mounts = blocking(move || s.prepare_or_view(sn, new)).await?;
        self.events.publish(
            &ns,
            "/snapshot/prepare",
            &ev::SnapshotPrepare {
                key: req.key,
                parent: req.parent,
                snapshotter,
            },
        );
        Ok(Response::new(PrepareSnapshotResponse {
            mounts: mounts_to_pb(mounts),
        }))
    }

    async fn view(
        &self,
        req: Request<ViewSnapshotRequest>,
    ) -> Result<Response<ViewSnapshotResponse>, Status> {
        let ns = context::namespace(&req)?;
        let lease = context::lease(&req)?;
        let req = req.into_inner();
        let sn = self.snapshotter(&req.snapshotter)?;
        let s = self.clone();
        let _hold = self.gc.hold().await;
        let new = NewSnapshot {
            ns,
            lease,
            key: req.key,
            parent: req.parent,
            labels: req.labels,
            view: true,
        };
        let mounts = blocking(move || s.prepare_or_view(sn, new)).await?;
        Ok(Response::new(ViewSnapshotResponse {
            mounts: mounts_to_pb(mounts),
        }))
    }

    async fn mounts(
        &self,
        req: Request<MountsRequest>,
    ) -> Result<Response<MountsResponse>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        require_key(&req.key)?;
        let sn = self.snapshotter(&req.snapshotter)?;
        let mounts = blocking(move || sn.mounts(&backend_key(&ns, &req.key)).status()).await?;
        Ok(Response::new(MountsResponse {
            mounts: mounts_to_pb(mounts),
        }))
    }

    async fn commit(&self, req: Request<CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        let ns = context::namespace(&req)?;
        let lease = context::lease(&req)?;
        let req = req.into_inner();
        require_key(&req.key)?;
        require_key(&req.name)?;
        let sn = self.snapshotter(&req.snapshotter)?;
        let s = self.clone();
        let (ns2, name, key) = (ns.clone(), req.name.clone(), req.key.clone());
        let _hold = self.gc.hold().await;
        blocking(move || {
            sn.commit(
                &backend_key(&ns2, &name),
                &backend_key(&ns2, &key),
                req.labels,
            )
            .status()?;
            s.lease_snapshot(&ns2, lease.as_deref(), sn.name(), &name)
        })
        .await?;
        self.events.publish(
            &ns,
            "/snapshot/commit",
            &ev::SnapshotCommit {
                key: req.key,
                name: req.name,
                snapshotter: self.snapshotter(&req.snapshotter)?.name().to_string(),
            },
        );
        Ok(Response::new(()))
    }

    async fn remove(&self, req: Request<RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        require_key(&req.key)?;
        let sn = self.snapshotter(&req.snapshotter)?;
        let name = sn.name().to_string();
        let (ns2, key) = (ns.clone(), req.key.clone());
        blocking(move || sn.remove(&backend_key(&ns2, &key)).status()).await?;
        self.events.publish(
            &ns,
            "/snapshot/remove",
            &ev::SnapshotRemove {
                key: req.key,
                snapshotter: name,
            },
        );
        self.gc.schedule();
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<StatSnapshotRequest>,
    ) -> Result<Response<StatSnapshotResponse>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        require_key(&req.key)?;
        let sn = self.snapshotter(&req.snapshotter)?;
        let info = blocking(move || sn.stat(&backend_key(&ns, &req.key)).status()).await?;
        Ok(Response::new(StatSnapshotResponse {
            info: Some(info_to_pb(info)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateSnapshotRequest>,
    ) -> Result<Response<UpdateSnapshotResponse>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        let info = req
            .info
            .ok_or_else(|| Status::invalid_argument("info is required"))?;
        require_key(&info.name)?;
        let fields = paths(req.update_mask);
        let sn = self.snapshotter(&req.snapshotter)?;
        let _hold = self.gc.hold().await;
        let updated = blocking(move || {
            let bkey = backend_key(&ns, &info.name);
            let mut current = sn.stat(&bkey).status()?;
            current.labels = info.labels;
            sn.update(current, &fields).status()
        })
        .await?;
        self.gc.schedule();
        Ok(Response::new(UpdateSnapshotResponse {
            info: Some(info_to_pb(updated)),
        }))
    }

    type ListStream = BoxStream<ListSnapshotsResponse>;

    async fn list(
        &self,
        req: Request<ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        let filter = berth_store::filters::parse(&req.filters).status()?;
        let sn = self.snapshotter(&req.snapshotter)?;
        let prefix = format!("{ns}/");
        let infos: Vec<Info> = blocking(move || {
            Ok(sn
                .list()
                .status()?
                .into_iter()
                .filter(|i| i.name.starts_with(&prefix))
                .map(info_to_pb)
                .filter(|i| filter.matches(&InfoFields(i)))
                .collect())
        })
        .await?;
        let batches: Vec<Result<ListSnapshotsResponse, Status>> = infos
            .chunks(100)
            .map(|c| Ok(ListSnapshotsResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(batches))))
    }

    async fn usage(&self, req: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        require_key(&req.key)?;
        let sn = self.snapshotter(&req.snapshotter)?;
        let u = blocking(move || sn.usage(&backend_key(&ns, &req.key)).status()).await?;
        Ok(Response::new(UsageResponse {
            size: u.size,
            inodes: u.inodes,
        }))
    }

    async fn cleanup(&self, req: Request<CleanupRequest>) -> Result<Response<()>, Status> {
        context::namespace(&req)?;
        let sn = self.snapshotter(&req.into_inner().snapshotter)?;
        let _exclusive = self.gc.hold().await;
        blocking(move || sn.cleanup().status()).await?;
        Ok(Response::new(()))
    }
}
