//! The events ttrpc service shims forward to (`containerd.services.events.ttrpc.v1.Events`).

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::{create_events, Events};
use containerd_shim_protos::ttrpc;
use containerd_shim_protos::ttrpc::asynchronous::{Server, TtrpcContext};

use crate::error::{Error, Result};
use crate::manager::Inner;

/// The daemon's event exchange. Called from async context: it must not block.
pub trait EventSink: Send + Sync + 'static {
    fn publish(&self, namespace: &str, topic: &str, event: prost_types::Any);
}

/// Holds the manager weakly: a dropped manager stops accepting events (the shim retries later,
/// against whichever manager serves the socket then).
struct Forwarder {
    inner: Weak<Inner>,
}

#[async_trait]
impl Events for Forwarder {
    async fn forward(&self, _ctx: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
        let Some(inner) = self.inner.upgrade() else {
            return Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::UNAVAILABLE,
                "task manager is shutting down",
            )));
        };
        let Some(env) = req.envelope.into_option() else {
            return Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::INVALID_ARGUMENT,
                "forward: no envelope",
            )));
        };
        inner.forward_event(env).await;
        Ok(Empty::new())
    }
}

/// Binds the events socket (replacing a stale one from a previous berthd) and starts serving.
pub(crate) async fn serve(path: &std::path::Path, inner: Weak<Inner>) -> Result<Server> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
    }
    match tokio::fs::symlink_metadata(path).await {
        Ok(m) => {
            use std::os::unix::fs::FileTypeExt;
            if !m.file_type().is_socket() {
                return Err(Error::FailedPrecondition(format!(
                    "{} exists and is not a socket",
                    path.display()
                )));
            }
            tokio::fs::remove_file(path)
                .await
                .map_err(|e| Error::io(format!("remove stale {}", path.display()), e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
    }
    let service = create_events(Arc::new(Forwarder { inner }));
    let mut server = Server::new()
        .bind(&format!("unix://{}", path.display()))
        .map_err(|e| Error::Internal(format!("bind events socket {}: {e}", path.display())))?
        .register_service(service);
    server
        .start()
        .await
        .map_err(|e| Error::Internal(format!("serve events socket {}: {e}", path.display())))?;
    Ok(server)
}
