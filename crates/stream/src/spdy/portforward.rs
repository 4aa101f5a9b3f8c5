//! Port forwarding over SPDY (`portforward.k8s.io`): per forwarded connection the client
//! opens an `error` and a `data` stream carrying the same `requestID` and the `port`.

use std::collections::HashMap;
use std::sync::Arc;

use berth_spdy::{Session, Stream};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{spawn_upgraded, spdy_config, REFUSED_STREAM};
use crate::backend::Backend;
use crate::server::{Body, Ctx};
use crate::types::PortForwardRequest;

const PROTOCOLS: &[&str] = &["portforward.k8s.io"];

pub(crate) fn upgrade(ctx: Ctx, req: Request<Incoming>, pf: PortForwardRequest) -> Response<Body> {
    let (resp, _) = match super::handshake(&req, PROTOCOLS, "portforward.k8s.io") {
        Ok(x) => x,
        Err(resp) => return *resp,
    };
    let backend = ctx.shared.backend.clone();
    let conn = ctx.conn.clone();
    let max = ctx.shared.cfg.max_streams_per_connection;
    spawn_upgraded(&ctx, req, move |io| async move {
        let (session, incoming) = Session::server(io, spdy_config(max));
        serve(session, incoming, pf, backend, conn, max).await;
    });
    resp
}

#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
}

async fn serve(
    session: Session,
    mut incoming: berth_spdy::Incoming,
    pf: PortForwardRequest,
    backend: Arc<dyn Backend>,
    conn: CancellationToken,
    max_pending: usize,
) {
    let pf = Arc::new(pf);
    let mut pending: HashMap<String, Pair> = HashMap::new();
    // Dropping the set on return aborts every forward: no task outlives the connection.
    let mut forwards = JoinSet::new();
    loop {
        let s = tokio::select! {
            _ = conn.cancelled() => break,
            _ = session.closed() => break,
            Some(_) = forwards.join_next(), if !forwards.is_empty() => continue,
            s = incoming.accept() => match s { Some(s) => s, None => break },
        };
        let (Some(id), Some(kind)) = (s.header("requestid"), s.header("streamtype")) else {
            s.reset(REFUSED_STREAM);
            continue;
        };
        let id = id.to_string();
        if !pending.contains_key(&id) && pending.len() >= max_pending {
            s.reset(REFUSED_STREAM);
            continue;
        }
        let pair = pending.entry(id.clone()).or_default();
        match kind {
            "error" if pair.error.is_none() => pair.error = Some(s),
            "data" if pair.data.is_none() => pair.data = Some(s),
            _ => {
                s.reset(REFUSED_STREAM);
                continue;
            }
        }
        if let Some(Pair {
            error: Some(error),
            data: Some(data),
        }) = pending
            .remove(&id)
            .filter(|p| p.error.is_some() && p.data.is_some())
        {
            forwards.spawn(forward(error, data, pf.clone(), backend.clone()));
        }
    }
}

async fn forward(
    mut error: Stream,
    mut data: Stream,
    pf: Arc<PortForwardRequest>,
    backend: Arc<dyn Backend>,
) {
    let _ = error.flush().await;
    let port = match data.header("port").map(|p| p.parse::<u16>()) {
        Some(Ok(p)) if p > 0 && (pf.ports.is_empty() || pf.ports.contains(&p)) => Ok(p),
        Some(Ok(p)) => Err(format!(
            "port {p} was not requested for pod {} (allowed: {:?})",
            pf.pod_sandbox_id, pf.ports
        )),
        _ => Err(format!(
            "invalid or missing port header {:?}",
            data.header("port")
        )),
    };
    let target = match port {
        Ok(port) => backend
            .port_forward(&pf.pod_sandbox_id, port)
            .await
            .map_err(|e| {
                format!(
                    "error forwarding port {port} to pod {}: {e}",
                    pf.pod_sandbox_id
                )
            }),
        Err(e) => Err(e),
    };
    match target {
        Ok(mut target) => {
            let _ = tokio::io::copy_bidirectional(&mut data, &mut target).await;
        }
        Err(msg) => {
            let _ = error.write_all(msg.as_bytes()).await;
            let _ = data.shutdown().await;
        }
    }
    let _ = error.shutdown().await;
}
