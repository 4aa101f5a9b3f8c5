use berth_api::server::diff::diff_server::Diff;
use berth_api::services::v1::*;
use berth_api::types::Descriptor;
use tonic::{Request, Response, Status};

use super::Service;
use crate::context;
use crate::convert::mount_from_pb;
use crate::daemon::blocking;
use crate::status::IntoStatus;

/// What an applied layer is, uncompressed.
const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

#[tonic::async_trait]
impl Diff for Service {
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        let desc = req
            .diff
            .ok_or_else(|| Status::invalid_argument("diff descriptor is required"))?;
        if req.mounts.is_empty() {
            return Err(Status::invalid_argument("mounts are required"));
        }
        let mounts: Vec<_> = req.mounts.into_iter().map(mount_from_pb).collect();
        let s = self.clone();
        let span = tracing::info_span!("diff.apply", ns = %ns, digest = %desc.digest);
        let applied = blocking(move || {
            let _enter = span.enter();
            let (file, size) = s.store.content_open(&ns, &desc.digest).status()?;
            if desc.size > 0 && size != desc.size {
                return Err(Status::failed_precondition(format!(
                    "blob {}: size is {size}, descriptor says {}",
                    desc.digest, desc.size
                )));
            }
            let reader = std::io::BufReader::with_capacity(1 << 20, file);
            berth_diff::apply_to_mounts(reader, &desc.media_type, &mounts).status()
        })
        .await?;
        Ok(Response::new(ApplyResponse {
            applied: Some(Descriptor {
                media_type: LAYER_TAR.to_string(),
                digest: applied.diff_id,
                size: applied.size as i64,
                annotations: Default::default(),
            }),
        }))
    }

    async fn diff(&self, _req: Request<DiffRequest>) -> Result<Response<DiffResponse>, Status> {
        Err(Status::unimplemented(
            "Diff (computing a layer from two mounts) is not implemented in berth yet; Apply is",
        ))
    }
}
