//! Exec and attach over SPDY: the client opens `error`, `stdin`, `stdout`, `stderr` and
//! `resize` streams (`streamType` header) for the parts of the session it wants.

use std::sync::Arc;
use std::time::Duration;

use berth_spdy::{Session, Stream};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{spawn_upgraded, spdy_config, REFUSED_STREAM};
use crate::backend::{Backend, BoxRead, BoxWrite, Io};
use crate::remote::{drain_sizes, Command};
use crate::server::{Body, Ctx};
use crate::status::{text_status, v4_status};
use crate::ws::{finish, FLUSH_TIMEOUT};

const PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// How long the client has to open the streams it announced (the kubelet's default).
const STREAM_WAIT: Duration = Duration::from_secs(30);
const PIPE: usize = 64 * 1024;

pub(crate) fn upgrade(ctx: Ctx, req: Request<Incoming>, cmd: Command) -> Response<Body> {
    let (resp, protocol) = match super::handshake(&req, PROTOCOLS, "channel.k8s.io") {
        Ok(x) => x,
        Err(resp) => return *resp,
    };
    let backend = ctx.shared.backend.clone();
    let conn = ctx.conn.clone();
    let max = ctx.shared.cfg.max_streams_per_connection;
    spawn_upgraded(&ctx, req, move |io| async move {
        let (session, incoming) = Session::server(io, spdy_config(max));
        serve(session, incoming, protocol, cmd, backend, conn).await;
    });
    resp
}

#[derive(Default)]
struct Streams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

impl Streams {
    fn complete(&self, cmd: &Command, want_resize: bool) -> bool {
        self.error.is_some()
            && (!cmd.stdin() || self.stdin.is_some())
            && (!cmd.stdout() || self.stdout.is_some())
            && (!cmd.stderr() || self.stderr.is_some())
            && (!want_resize || self.resize.is_some())
    }

    fn slot(&mut self, kind: &str) -> Option<&mut Option<Stream>> {
        match kind {
            "error" => Some(&mut self.error),
            "stdin" => Some(&mut self.stdin),
            "stdout" => Some(&mut self.stdout),
            "stderr" => Some(&mut self.stderr),
            "resize" => Some(&mut self.resize),
            _ => None,
        }
    }
}

async fn serve(
    session: Session,
    mut incoming: berth_spdy::Incoming,
    protocol: &'static str,
    cmd: Command,
    backend: Arc<dyn Backend>,
    conn: CancellationToken,
) {
    let token = conn.child_token();
    let watch = {
        let (session, token) = (session.clone(), token.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = session.closed() => token.cancel(),
                _ = token.cancelled() => {}
            }
        })
    };
    let want_resize = cmd.tty() && matches!(protocol, "v3.channel.k8s.io" | "v4.channel.k8s.io");
    let mut streams = Streams::default();
    let waited = tokio::time::timeout(STREAM_WAIT, async {
        while !streams.complete(&cmd, want_resize) {
            let s = tokio::select! {
                _ = token.cancelled() => return false,
                s = incoming.accept() => match s { Some(s) => s, None => return false },
            };
            let kind = s.header("streamtype").unwrap_or("").to_string();
            match streams.slot(&kind) {
                Some(slot) if slot.is_none() => *slot = Some(s),
                _ => s.reset(REFUSED_STREAM),
            }
        }
        true
    })
    .await;
    if waited != Ok(true) {
        tracing::debug!("streaming: SPDY client did not open its streams in time");
        token.cancel();
        finish(watch, FLUSH_TIMEOUT).await;
        return;
    }
    // Streams opened later have no place in this session.
    let refuse = tokio::spawn(async move {
        while let Some(s) = incoming.accept().await {
            s.reset(REFUSED_STREAM);
        }
    });

    let stdin = match streams.stdin.take() {
        Some(mut s) => {
            // We never write on stdin: half-close our side at once.
            let _ = s.shutdown().await;
            Some(Box::new(s) as BoxRead)
        }
        None => None,
    };
    let mut pumps = Vec::new();
    let mut output = |stream: Option<Stream>| {
        stream.map(|s| {
            let (backend_end, drain) = tokio::io::duplex(PIPE);
            pumps.push(tokio::spawn(pump(drain, s, token.clone())));
            Box::new(backend_end) as BoxWrite
        })
    };
    let stdout = output(streams.stdout.take());
    let stderr = output(streams.stderr.take());
    let mut resize_task = None;
    let resize = match (cmd.tty(), streams.resize.take()) {
        (true, Some(s)) => {
            let (tx, rx) = mpsc::channel(16);
            resize_task = Some(tokio::spawn(read_sizes(s, tx, token.clone())));
            Some(rx)
        }
        _ => None,
    };
    let io = Io {
        stdin,
        stdout,
        stderr,
        resize,
        gone: token.clone(),
    };
    let outcome = cmd.run(&*backend, io).await;
    for p in pumps {
        finish(p, FLUSH_TIMEOUT).await;
    }
    let status = if protocol == "v4.channel.k8s.io" {
        Some(v4_status(&outcome))
    } else {
        text_status(&outcome)
    };
    if let Some(mut error) = streams.error.take() {
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, async {
            if let Some(status) = status {
                let _ = error.write_all(&status).await;
            }
            let _ = error.shutdown().await;
        })
        .await;
    }
    if let Some(t) = resize_task {
        t.abort();
    }
    refuse.abort();
    // GOAWAY lets the driver flush and close once the remaining streams are gone.
    session.goaway().await;
    drop(session);
    token.cancel();
    finish(watch, FLUSH_TIMEOUT).await;
}

/// Copies what the backend writes to the client's stream, then FINs it.
async fn pump(mut from: tokio::io::DuplexStream, mut to: Stream, token: CancellationToken) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = tokio::select! {
            _ = token.cancelled() => return,
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        let written = tokio::select! {
            _ = token.cancelled() => return,
            r = to.write_all(&buf[..n]) => r,
        };
        if written.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

async fn read_sizes(mut s: Stream, tx: mpsc::Sender<crate::TermSize>, token: CancellationToken) {
    let _ = s.shutdown().await;
    let mut pending = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = tokio::select! {
            _ = token.cancelled() => return,
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
        };
        pending.extend_from_slice(&buf[..n]);
        match drain_sizes(&mut pending) {
            Ok(sizes) => {
                for size in sizes {
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::debug!("streaming: {e}"),
        }
    }
}
