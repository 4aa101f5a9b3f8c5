use berth_api::server::leases::leases_server::Leases;
use berth_api::services::v1::*;
use tonic::{Request, Response, Status};

use super::Service;
use crate::context;
use crate::convert::lease_to_pb;
use crate::daemon::blocking;
use crate::status::IntoStatus;

fn resource_from_pb(r: Option<Resource>) -> Result<berth_store::LeaseResource, Status> {
    let r = r.ok_or_else(|| Status::invalid_argument("resource is required"))?;
    Ok(berth_store::LeaseResource {
        id: r.id,
        kind: r.r#type,
    })
}

#[tonic::async_trait]
impl Leases for Service {
    async fn create(
        &self,
        req: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        let id = if req.id.is_empty() {
            uuid::Uuid::new_v4().simple().to_string()
        } else {
            req.id
        };
        let s = self.clone();
        let _hold = self.gc.hold().await;
        let lease = blocking(move || s.store.lease_create(&ns, &id, req.labels).status()).await?;
        Ok(Response::new(CreateResponse {
            lease: Some(lease_to_pb(lease)),
        }))
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<()>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        let s = self.clone();
        blocking(move || s.store.lease_delete(&ns, &req.id).status()).await?;
        if req.sync {
            crate::gc::collect(&self.0).await?;
        } else {
            self.gc.schedule();
        }
        Ok(Response::new(()))
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let ns = context::namespace(&req)?;
        let filter = berth_store::filters::parse(&req.into_inner().filters).status()?;
        let s = self.clone();
        let leases = blocking(move || s.store.lease_list(&ns, &filter).status()).await?;
        Ok(Response::new(ListResponse {
            leases: leases.into_iter().map(lease_to_pb).collect(),
        }))
    }

    async fn add_resource(&self, req: Request<AddResourceRequest>) -> Result<Response<()>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        let res = resource_from_pb(req.resource)?;
        let s = self.clone();
        let _hold = self.gc.hold().await;
        blocking(move || s.store.lease_add_resource(&ns, &req.id, res).status()).await?;
        Ok(Response::new(()))
    }

    async fn delete_resource(
        &self,
        req: Request<DeleteResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        let res = resource_from_pb(req.resource)?;
        let s = self.clone();
        blocking(move || s.store.lease_delete_resource(&ns, &req.id, res).status()).await?;
        self.gc.schedule();
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        req: Request<ListResourcesRequest>,
    ) -> Result<Response<ListResourcesResponse>, Status> {
        let ns = context::namespace(&req)?;
        let id = req.into_inner().id;
        let s = self.clone();
        let list = blocking(move || s.store.lease_list_resources(&ns, &id).status()).await?;
        Ok(Response::new(ListResourcesResponse {
            resources: list
                .into_iter()
                .map(|r| Resource {
                    id: r.id,
                    r#type: r.kind,
                })
                .collect(),
        }))
    }
}
