use std::pin::Pin;

use berth_api::events as ev;
use berth_api::server::containers::containers_server::Containers;
use berth_api::services::v1::*;
use futures::Stream;
use tonic::{Request, Response, Status};

use super::Service;
use crate::context;
use crate::convert::{container_from_pb, container_to_pb, paths};
use crate::daemon::blocking;
use crate::status::IntoStatus;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Containers for Service {
    async fn get(
        &self,
        req: Request<GetContainerRequest>,
    ) -> Result<Response<GetContainerResponse>, Status> {
        let ns = context::namespace(&req)?;
        let id = req.into_inner().id;
        let s = self.clone();
        let c = blocking(move || s.store.container_get(&ns, &id).status()).await?;
        Ok(Response::new(GetContainerResponse {
            container: Some(container_to_pb(c)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let ns = context::namespace(&req)?;
        let filter = berth_store::filters::parse(&req.into_inner().filters).status()?;
        let s = self.clone();
        let list = blocking(move || s.store.container_list(&ns, &filter).status()).await?;
        Ok(Response::new(ListContainersResponse {
            containers: list.into_iter().map(container_to_pb).collect(),
        }))
    }

    type ListStreamStream = BoxStream<ListContainerMessage>;

    async fn list_stream(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<Self::ListStreamStream>, Status> {
        let ns = context::namespace(&req)?;
        let filter = berth_store::filters::parse(&req.into_inner().filters).status()?;
        let s = self.clone();
        let list = blocking(move || s.store.container_list(&ns, &filter).status()).await?;
        let msgs: Vec<Result<ListContainerMessage, Status>> = list
            .into_iter()
            .map(|c| {
                Ok(ListContainerMessage {
                    container: Some(container_to_pb(c)),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(msgs))))
    }

    async fn create(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let ns = context::namespace(&req)?;
        let c = req
            .into_inner()
            .container
            .ok_or_else(|| Status::invalid_argument("container is required"))?;
        berth_store::identifiers::validate(&c.id).status()?;
        let s = self.clone();
        let ns2 = ns.clone();
        let _hold = self.gc.hold().await;
        let created = blocking(move || {
            s.store
                .container_create(&ns2, container_from_pb(c))
                .status()
        })
        .await?;
        self.events.publish(
            &ns,
            "/containers/create",
            &ev::ContainerCreate {
                id: created.id.clone(),
                image: created.image.clone(),
                runtime: Some(ev::container_create::Runtime {
                    name: created.runtime.name.clone(),
                    options: created
                        .runtime
                        .options
                        .clone()
                        .map(crate::convert::blob_to_any),
                }),
            },
        );
        Ok(Response::new(CreateContainerResponse {
            container: Some(container_to_pb(created)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateContainerRequest>,
    ) -> Result<Response<UpdateContainerResponse>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        let c = req
            .container
            .ok_or_else(|| Status::invalid_argument("container is required"))?;
        let fields = paths(req.update_mask);
        let s = self.clone();
        let ns2 = ns.clone();
        let _hold = self.gc.hold().await;
        let updated = blocking(move || {
            s.store
                .container_update(&ns2, container_from_pb(c), &fields)
                .status()
        })
        .await?;
        self.events.publish(
            &ns,
            "/containers/update",
            &ev::ContainerUpdate {
                id: updated.id.clone(),
                image: updated.image.clone(),
                labels: updated.labels.clone(),
                snapshot_key: updated.snapshot_key.clone(),
            },
        );
        self.gc.schedule();
        Ok(Response::new(UpdateContainerResponse {
            container: Some(container_to_pb(updated)),
        }))
    }

    async fn delete(&self, req: Request<DeleteContainerRequest>) -> Result<Response<()>, Status> {
        let ns = context::namespace(&req)?;
        let id = req.into_inner().id;
        self.refuse_if_task_exists(&ns, &id).await?;
        let s = self.clone();
        let (ns2, id2) = (ns.clone(), id.clone());
        blocking(move || s.store.container_delete(&ns2, &id2).status()).await?;
        self.events
            .publish(&ns, "/containers/delete", &ev::ContainerDelete { id });
        self.gc.schedule();
        Ok(Response::new(()))
    }
}
