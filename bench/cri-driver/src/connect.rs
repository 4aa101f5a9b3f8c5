//! A tonic channel over a unix socket (CRI sockets are never TCP here).

use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use crate::error::Error;

/// Connects to the gRPC server on `socket`; every call on the channel fails after `rpc_timeout`
/// so a hung daemon ends the run with an error instead of blocking the script.
pub async fn channel(socket: &Path, rpc_timeout: Duration) -> Result<Channel, Error> {
    let path = socket.to_path_buf();
    // The URI is never dialled: the connector below opens the unix socket instead.
    let endpoint = Endpoint::from_static("http://localhost")
        .timeout(rpc_timeout)
        .connect_timeout(Duration::from_secs(10));
    endpoint
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await
        .map_err(|source| Error::Connect {
            socket: socket.to_path_buf(),
            source,
        })
}
