//! What a request carries besides its message: the namespace and the lease (containerd's headers).

use tonic::{Request, Status};

pub const NAMESPACE_HEADER: &str = "containerd-namespace";
pub const LEASE_HEADER: &str = "containerd-lease";

/// The namespace a request acts in. containerd refuses requests without one.
pub fn namespace<T>(req: &Request<T>) -> Result<String, Status> {
    let ns = req
        .metadata()
        .get(NAMESPACE_HEADER)
        .ok_or_else(|| {
            Status::failed_precondition(
                "namespace is required: set the containerd-namespace header",
            )
        })?
        .to_str()
        .map_err(|_| Status::invalid_argument("namespace header is not valid text"))?;
    berth_store::identifiers::validate(ns)
        .map_err(|e| Status::invalid_argument(format!("namespace {ns:?}: {e}")))?;
    Ok(ns.to_string())
}

/// The lease a request runs under, if any: what it creates is kept until the lease goes.
pub fn lease<T>(req: &Request<T>) -> Result<Option<String>, Status> {
    match req.metadata().get(LEASE_HEADER) {
        None => Ok(None),
        Some(v) => {
            let id = v
                .to_str()
                .map_err(|_| Status::invalid_argument("lease header is not valid text"))?;
            Ok((!id.is_empty()).then(|| id.to_string()))
        }
    }
}
