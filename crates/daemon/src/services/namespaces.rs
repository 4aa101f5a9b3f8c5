use berth_api::events as ev;
use berth_api::server::namespaces::namespaces_server::Namespaces;
use berth_api::services::v1::*;
use tonic::{Request, Response, Status};

use super::Service;
use crate::convert::paths;
use crate::daemon::blocking;
use crate::status::IntoStatus;

fn to_pb(n: berth_store::Namespace) -> Namespace {
    Namespace {
        name: n.name,
        labels: n.labels,
    }
}

impl Service {
    /// Snapshots live in the backends, not in the metadata store: ask them.
    fn namespace_has_snapshots(&self, ns: &str) -> Result<bool, Status> {
        let prefix = format!("{ns}/");
        for sn in self.snapshotters.values() {
            if sn
                .list()
                .status()?
                .iter()
                .any(|i| i.name.starts_with(&prefix))
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[tonic::async_trait]
impl Namespaces for Service {
    async fn get(
        &self,
        req: Request<GetNamespaceRequest>,
    ) -> Result<Response<GetNamespaceResponse>, Status> {
        let name = req.into_inner().name;
        let s = self.clone();
        let n = blocking(move || s.store.namespace_get(&name).status()).await?;
        Ok(Response::new(GetNamespaceResponse {
            namespace: Some(to_pb(n)),
        }))
    }

    async fn list(
        &self,
        _req: Request<ListNamespacesRequest>,
    ) -> Result<Response<ListNamespacesResponse>, Status> {
        let s = self.clone();
        let list = blocking(move || s.store.namespace_list().status()).await?;
        Ok(Response::new(ListNamespacesResponse {
            namespaces: list.into_iter().map(to_pb).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<CreateNamespaceRequest>,
    ) -> Result<Response<CreateNamespaceResponse>, Status> {
        let n = req
            .into_inner()
            .namespace
            .ok_or_else(|| Status::invalid_argument("namespace is required"))?;
        let s = self.clone();
        let created =
            blocking(move || s.store.namespace_create(&n.name, n.labels).status()).await?;
        self.events.publish(
            &created.name,
            "/namespaces/create",
            &ev::NamespaceCreate {
                name: created.name.clone(),
                labels: created.labels.clone(),
            },
        );
        Ok(Response::new(CreateNamespaceResponse {
            namespace: Some(to_pb(created)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateNamespaceRequest>,
    ) -> Result<Response<UpdateNamespaceResponse>, Status> {
        let req = req.into_inner();
        let n = req
            .namespace
            .ok_or_else(|| Status::invalid_argument("namespace is required"))?;
        let fields = paths(req.update_mask);
        let s = self.clone();
        let updated = blocking(move || {
            s.store
                .namespace_update(&n.name, n.labels, &fields)
                .status()
        })
        .await?;
        self.events.publish(
            &updated.name,
            "/namespaces/update",
            &ev::NamespaceUpdate {
                name: updated.name.clone(),
                labels: updated.labels.clone(),
            },
        );
        Ok(Response::new(UpdateNamespaceResponse {
            namespace: Some(to_pb(updated)),
        }))
    }

    async fn delete(&self, req: Request<DeleteNamespaceRequest>) -> Result<Response<()>, Status> {
        let name = req.into_inner().name;
        let s = self.clone();
        let n = name.clone();
        blocking(move || {
            s.store.namespace_get(&n).status()?;
            if s.namespace_has_snapshots(&n)? {
                return Err(Status::failed_precondition(format!(
                    "namespace {n:?} must be empty, but it still has snapshots"
                )));
            }
            s.store.namespace_delete(&n).status()
        })
        .await?;
        self.events.publish(
            &name,
            "/namespaces/delete",
            &ev::NamespaceDelete { name: name.clone() },
        );
        Ok(Response::new(()))
    }
}
