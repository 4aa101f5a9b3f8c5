use berth_api::server::images::images_server::Images;
use berth_api::services::v1::*;
use tonic::{Request, Response, Status};

use super::Service;
use crate::context;
use crate::convert::{image_from_pb, image_to_pb, paths};
use crate::daemon::blocking;
use crate::status::IntoStatus;

#[tonic::async_trait]
impl Images for Service {
    async fn get(
        &self,
        req: Request<GetImageRequest>,
    ) -> Result<Response<GetImageResponse>, Status> {
        let ns = context::namespace(&req)?;
        let name = req.into_inner().name;
        let s = self.clone();
        let image = blocking(move || s.store.image_get(&ns, &name).status()).await?;
        Ok(Response::new(GetImageResponse {
            image: Some(image_to_pb(image)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let ns = context::namespace(&req)?;
        let filter = berth_store::filters::parse(&req.into_inner().filters).status()?;
        let s = self.clone();
        let images = blocking(move || s.store.image_list(&ns, &filter).status()).await?;
        Ok(Response::new(ListImagesResponse {
            images: images.into_iter().map(image_to_pb).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<CreateImageRequest>,
    ) -> Result<Response<CreateImageResponse>, Status> {
        let ns = context::namespace(&req)?;
        let image = req
            .into_inner()
            .image
            .ok_or_else(|| Status::invalid_argument("image is required"))?;
        if image.target.is_none() {
            return Err(Status::invalid_argument(format!(
                "image {:?}: target is required",
                image.name
            )));
        }
        let s = self.clone();
        let ns2 = ns.clone();
        let _hold = self.gc.hold().await;
        let created =
            blocking(move || s.store.image_create(&ns2, image_from_pb(image)).status()).await?;
        self.events.publish(
            &ns,
            "/images/create",
            &ImageCreate {
                name: created.name.clone(),
                labels: created.labels.clone(),
            },
        );
        Ok(Response::new(CreateImageResponse {
            image: Some(image_to_pb(created)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateImageRequest>,
    ) -> Result<Response<UpdateImageResponse>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        let image = req
            .image
            .ok_or_else(|| Status::invalid_argument("image is required"))?;
        let fields = paths(req.update_mask);
        let s = self.clone();
        let ns2 = ns.clone();
        let _hold = self.gc.hold().await;
        let updated = blocking(move || {
            s.store
                .image_update(&ns2, image_from_pb(image), &fields)
                .status()
        })
        .await?;
        self.events.publish(
            &ns,
            "/images/update",
            &ImageUpdate {
                name: updated.name.clone(),
                labels: updated.labels.clone(),
            },
        );
        // The old target may be garbage now.
        self.gc.schedule();
        Ok(Response::new(UpdateImageResponse {
            image: Some(image_to_pb(updated)),
        }))
    }

    async fn delete(&self, req: Request<DeleteImageRequest>) -> Result<Response<()>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        let s = self.clone();
        let ns2 = ns.clone();
        let name = req.name.clone();
        blocking(move || {
            if let Some(target) = req.target {
                let current = s.store.image_get(&ns2, &name).status()?;
                if current.target.digest != target.digest {
                    return Err(Status::failed_precondition(format!(
                        "image {name:?}: target is {}, not {}",
                        current.target.digest, target.digest
                    )));
                }
            }
            s.store.image_delete(&ns2, &name).status()
        })
        .await?;
        self.events
            .publish(&ns, "/images/delete", &ImageDelete { name: req.name });
        if req.sync {
            crate::gc::collect(&self.0).await?;
        } else {
            self.gc.schedule();
        }
        Ok(Response::new(()))
    }
}
