//! The WebSocket transports: the `channel.k8s.io` family, where every message starts with the
//! number of the stream it belongs to.

pub(crate) mod frame;
pub(crate) mod portforward;
pub(crate) mod remote;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::SplitSink;
use futures::SinkExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, UPGRADE};
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::server::{negotiate, text, Body, Ctx};
use frame::Encoding;

pub(crate) type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// Messages queued for the single task that owns the socket's write half.
pub(crate) enum Out {
    Data(u8, Bytes),
    Close,
}

/// Messages a session may queue before its producers wait: bounds memory per connection.
pub(crate) const OUT_QUEUE: usize = 16;
/// Largest read from a local stream forwarded as one message.
pub(crate) const CHUNK: usize = 32 * 1024;
/// How long the end of a session may take to flush before its tasks are aborted.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Validates the WebSocket handshake and picks the first subprotocol the client offers that
/// `supported` lists; a client offering none gets `default`.
pub(crate) fn handshake(
    req: &Request<Incoming>,
    supported: &[&'static str],
    default: &'static str,
) -> Result<(Response<Body>, &'static str), Box<Response<Body>>> {
    let headers = req.headers();
    let Some(key) = headers.get("sec-websocket-key") else {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key",
        )));
    };
    if headers
        .get("sec-websocket-version")
        .is_some_and(|v| v.as_bytes() != b"13")
    {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "unsupported Sec-WebSocket-Version (want 13)",
        )));
    }
    let (chosen, offered) = negotiate(headers, "sec-websocket-protocol", supported, default)
        .map_err(|offered| {
            Box::new(text(
                StatusCode::BAD_REQUEST,
                format!(
                    "none of the offered WebSocket subprotocols {offered:?} is supported; \
                     this server speaks {supported:?}"
                ),
            ))
        })?;
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert("sec-websocket-accept", accept);
    }
    if offered {
        h.insert("sec-websocket-protocol", HeaderValue::from_static(chosen));
    }
    Ok((resp, chosen))
}

/// Runs `session` on the upgraded socket in its own task, counted as a live session.
pub(crate) fn spawn_upgraded<F, Fut>(ctx: &Ctx, req: Request<Incoming>, session: F)
where
    F: FnOnce(Ws) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let guard = ctx.session();
    tokio::spawn(async move {
        let _guard = guard;
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("streaming: WebSocket upgrade failed: {e}");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        session(ws).await;
    });
}

/// Owns the write half: sends queued messages in order until closed, cancelled or failing.
pub(crate) async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut rx: mpsc::Receiver<Out>,
    enc: Encoding,
    session: CancellationToken,
) {
    loop {
        let item = tokio::select! {
            biased;
            m = rx.recv() => m,
            _ = session.cancelled() => break,
        };
        let sent = match item {
            None => break,
            Some(Out::Data(ch, data)) => {
                tokio::select! {
                    r = sink.send(frame::encode(enc, ch, &data)) => r,
                    _ = session.cancelled() => break,
                }
            }
            Some(Out::Close) => {
                let close = Message::Close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                }));
                let _ = sink.send(close).await;
                break;
            }
        };
        if let Err(e) = sent {
            tracing::debug!("streaming: WebSocket write failed: {e}");
            // The client is gone: everything else in the session must stop too.
            session.cancel();
            break;
        }
    }
}

/// Copies a local stream into channel `ch` until EOF, an error or the end of the session;
/// returning drops `from`, so its writer's next write fails.
pub(crate) async fn pump(
    mut from: impl AsyncRead + Unpin,
    ch: u8,
    out: mpsc::Sender<Out>,
    session: CancellationToken,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = tokio::select! {
            _ = session.cancelled() => return,
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
        };
        let msg = Out::Data(ch, Bytes::copy_from_slice(&buf[..n]));
        tokio::select! {
            _ = session.cancelled() => return,
            r = out.send(msg) => if r.is_err() { return },
        }
    }
}

/// Queues `msg` unless the session ends or the writer stays blocked past `FLUSH_TIMEOUT`.
pub(crate) async fn send_last(out: &mpsc::Sender<Out>, msg: Out, session: &CancellationToken) {
    tokio::select! {
        _ = session.cancelled() => {}
        _ = tokio::time::timeout(FLUSH_TIMEOUT, out.send(msg)) => {}
    }
}

/// Waits for a task to finish for at most `limit`, then aborts it, so none outlives a session.
pub(crate) async fn finish(task: JoinHandle<()>, limit: Duration) {
    let abort = task.abort_handle();
    if tokio::time::timeout(limit, task).await.is_err() {
        abort.abort();
    }
}
