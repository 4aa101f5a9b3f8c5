//! Port forwarding over WebSocket: the ports come from the query (`?ports=80,8080`); port i
//! uses channel 2i for data and 2i+1 for errors, and each channel's first message (from the
//! server) is the port number, 2 bytes little-endian.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::SplitStream;
use futures::StreamExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::frame::{self, Encoding};
use super::{
    finish, pump, send_last, spawn_upgraded, write_loop, Out, Ws, FLUSH_TIMEOUT, OUT_QUEUE,
};
use crate::backend::Backend;
use crate::server::{text, Body, Ctx};
use crate::types::PortForwardRequest;

const PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "portforward.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// The ports named by the query's `ports` parameters (comma lists, possibly repeated).
fn query_ports(query: Option<&str>) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in query.unwrap_or("").split('&') {
        let Some(value) = pair.strip_prefix("ports=") else {
            continue;
        };
        for p in value.replace("%2C", ",").replace("%2c", ",").split(',') {
            match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => return Err(format!("invalid port {p:?} in query parameter \"ports\"")),
            }
        }
    }
    Ok(ports)
}

pub(crate) fn upgrade(ctx: Ctx, req: Request<Incoming>, pf: PortForwardRequest) -> Response<Body> {
    let ports = match query_ports(req.uri().query()) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    if ports.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "port forwarding over WebSocket needs the query parameter \"ports\" (e.g. ?ports=80,8080)",
        );
    }
    if let Some(p) = ports
        .iter()
        .find(|p| !pf.ports.is_empty() && !pf.ports.contains(p))
    {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "port {p} was not requested for pod {} (allowed: {:?})",
                pf.pod_sandbox_id, pf.ports
            ),
        );
    }
    // Two channels per port, and channel numbers are one byte.
    let max = (ctx.shared.cfg.max_streams_per_connection / 2).min(127);
    if ports.len() > max {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "{} ports requested; at most {max} per connection",
                ports.len()
            ),
        );
    }
    let (resp, protocol) = match super::handshake(&req, PROTOCOLS, "v4.channel.k8s.io") {
        Ok(x) => x,
        Err(resp) => return *resp,
    };
    let enc = if protocol.contains("base64") {
        Encoding::Base64
    } else {
        Encoding::Binary
    };
    let backend = ctx.shared.backend.clone();
    let conn = ctx.conn.clone();
    let pod = pf.pod_sandbox_id;
    spawn_upgraded(&ctx, req, move |ws| {
        serve(ws, enc, pod, ports, backend, conn)
    });
    resp
}

async fn serve(
    ws: Ws,
    enc: Encoding,
    pod: String,
    ports: Vec<u16>,
    backend: Arc<dyn Backend>,
    conn: CancellationToken,
) {
    let session = conn.child_token();
    let (sink, stream) = ws.split();
    let (out, out_rx) = mpsc::channel(OUT_QUEUE);
    let writer = tokio::spawn(write_loop(sink, out_rx, enc, session.clone()));

    let mut inbound = HashMap::new();
    let mut forwards = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let data_ch = u8::try_from(2 * i).unwrap_or(u8::MAX);
        let err_ch = data_ch.saturating_add(1);
        // The port prefix is how the client tells which port a channel carries.
        let prefix = Bytes::copy_from_slice(&port.to_le_bytes());
        send_last(&out, Out::Data(data_ch, prefix.clone()), &session).await;
        send_last(&out, Out::Data(err_ch, prefix), &session).await;
        let (tx, rx) = mpsc::channel(16);
        inbound.insert(data_ch, tx);
        forwards.push(tokio::spawn(forward(
            Forward {
                pod: pod.clone(),
                port,
                data_ch,
                err_ch,
            },
            backend.clone(),
            rx,
            out.clone(),
            session.clone(),
        )));
    }
    let reader = tokio::spawn(read_loop(stream, enc, inbound, session.clone()));
    for f in forwards {
        let _ = f.await;
    }
    send_last(&out, Out::Close, &session).await;
    drop(out);
    finish(writer, FLUSH_TIMEOUT).await;
    session.cancel();
    finish(reader, FLUSH_TIMEOUT).await;
}

struct Forward {
    pod: String,
    port: u16,
    data_ch: u8,
    err_ch: u8,
}

async fn forward(
    f: Forward,
    backend: Arc<dyn Backend>,
    mut inbound: mpsc::Receiver<Vec<u8>>,
    out: mpsc::Sender<Out>,
    session: CancellationToken,
) {
    let dialed = tokio::select! {
        _ = session.cancelled() => return,
        r = backend.port_forward(&f.pod, f.port) => r,
    };
    let target = match dialed {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("error forwarding port {} to pod {}: {e}", f.port, f.pod);
            send_last(&out, Out::Data(f.err_ch, msg.into()), &session).await;
            return;
        }
    };
    let (from_target, mut to_target) = tokio::io::split(target);
    let up = async {
        while let Some(data) = inbound.recv().await {
            if to_target.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = to_target.shutdown().await;
    };
    let down = pump(from_target, f.data_ch, out.clone(), session.clone());
    tokio::pin!(up, down);
    let mut up_done = false;
    loop {
        tokio::select! {
            _ = session.cancelled() => break,
            _ = &mut down => break,
            _ = &mut up, if !up_done => up_done = true,
        }
    }
}

async fn read_loop(
    mut stream: SplitStream<Ws>,
    enc: Encoding,
    mut inbound: HashMap<u8, mpsc::Sender<Vec<u8>>>,
    session: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = session.cancelled() => break,
            m = stream.next() => m,
        };
        let msg = match msg {
            Some(Ok(m)) if !m.is_close() => m,
            _ => break,
        };
        let Some((ch, data)) = frame::decode(enc, msg) else {
            continue;
        };
        let Some(tx) = inbound.get(&ch) else { continue };
        let sent = tokio::select! {
            _ = session.cancelled() => break,
            r = tx.send(data) => r,
        };
        if sent.is_err() {
            inbound.remove(&ch);
        }
    }
    session.cancel();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ports_from_query() {
        assert_eq!(query_ports(Some("ports=80,8080")).unwrap(), vec![80, 8080]);
        assert_eq!(
            query_ports(Some("a=b&ports=1%2C2&ports=3")).unwrap(),
            vec![1, 2, 3]
        );
        assert!(query_ports(None).unwrap().is_empty());
        assert!(query_ports(Some("ports=x")).is_err());
        assert!(query_ports(Some("ports=0")).is_err());
    }
}
