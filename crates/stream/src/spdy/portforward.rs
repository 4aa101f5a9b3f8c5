//! Port forwarding over SPDY (`portforward.k8s.io`): per forwarded connection the client
//! opens an `error` and a `data` stream carrying the same `requestID` and the `port`.

use std::collections::HashMap;
use std::sync::Arc;

use berth_spdy::{Session, Stream};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
        // Only a complete pair leaves the map: a half-arrived one waits for its other stream.
        let complete = pending
            .get(&id)
            .is_some_and(|p| p.error.is_some() && p.data.is_some());
        if let Some(Pair {
            error: Some(error),
            data: Some(data),
        }) = complete.then(|| pending.remove(&id)).flatten()
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
        Ok(target) => pump(&mut data, target).await,
        Err(msg) => {
            let _ = error.write_all(msg.as_bytes()).await;
            let _ = data.shutdown().await;
        }
    }
    let _ = error.shutdown().await;
    // Dropping a stream the client has not finished resets it, and a reset may overtake the
    // data still queued for it: wait (bounded) for the client to finish its side first.
    let _ = tokio::time::timeout(CLIENT_FINISH, async {
        let _ = drain_to_eof(&mut data).await;
        let _ = drain_to_eof(&mut error).await;
    })
    .await;
}

/// How long a finished forward waits for its client to close the streams before dropping them.
const CLIENT_FINISH: std::time::Duration = std::time::Duration::from_secs(5);

async fn drain_to_eof(s: &mut Stream) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    while s.read(&mut buf).await? > 0 {}
    Ok(())
}

/// Copies both ways until the pod side ends the connection: the client's half-close reaches the
/// pod as a TCP half-close, the pod's end reaches the client as FIN on the data stream.
async fn pump(data: &mut Stream, target: crate::backend::BoxStream) {
    let (mut from_pod, mut to_pod) = tokio::io::split(target);
    let (mut from_client, mut to_client) = tokio::io::split(data);
    let up = async {
        let _ = tokio::io::copy(&mut from_client, &mut to_pod).await;
        let _ = to_pod.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut from_pod, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    tokio::pin!(up);
    tokio::pin!(down);
    tokio::select! {
        _ = &mut down => {}
        // The client is done sending; the pod still answers until it closes.
        _ = &mut up => (&mut down).await,
    }
}
