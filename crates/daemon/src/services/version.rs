use berth_api::server::version::version_server::Version;
use berth_api::services::v1::VersionResponse;
use tonic::{Request, Response, Status};

use super::Service;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// containerd clients parse the version; the revision says what it really is.
pub const REVISION: &str = concat!("berth-", env!("CARGO_PKG_VERSION"));

#[tonic::async_trait]
impl Version for Service {
    async fn version(&self, _req: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: VERSION.to_string(),
            revision: REVISION.to_string(),
        }))
    }
}
