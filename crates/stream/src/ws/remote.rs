//! Exec and attach over WebSocket: channels 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize.

use std::sync::Arc;

use futures::stream::SplitStream;
use futures::StreamExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::frame::{self, Encoding};
use super::{
    finish, pump, send_last, spawn_upgraded, write_loop, Out, Ws, FLUSH_TIMEOUT, OUT_QUEUE,
};
use crate::backend::{Backend, BoxRead, BoxWrite, Io};
use crate::remote::{drain_sizes, Command};
use crate::server::{Body, Ctx};
use crate::status::{text_status, v4_status};
use crate::types::TermSize;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: `[255, channel]` closes the client's side of `channel` (stdin EOF).
const CLOSE: u8 = 255;

/// Bytes buffered between the socket and the backend in each direction of a stream.
const PIPE: usize = 64 * 1024;

const PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "base64.channel.k8s.io",
    "channel.k8s.io",
];

#[derive(Clone, Copy)]
struct Mode {
    enc: Encoding,
    /// v4 and later end with a JSON status; older ones with error text only on failure.
    json_status: bool,
    close_signal: bool,
}

impl Mode {
    fn of(protocol: &str) -> Mode {
        Mode {
            enc: if protocol.contains("base64") {
                Encoding::Base64
            } else {
                Encoding::Binary
            },
            json_status: protocol.starts_with("v4.") || protocol.starts_with("v5."),
            close_signal: protocol.starts_with("v5."),
        }
    }
}

pub(crate) fn upgrade(ctx: Ctx, req: Request<Incoming>, cmd: Command) -> Response<Body> {
    let (resp, protocol) = match super::handshake(&req, PROTOCOLS, "channel.k8s.io") {
        Ok(x) => x,
        Err(resp) => return *resp,
    };
    let mode = Mode::of(protocol);
    let backend = ctx.shared.backend.clone();
    let conn = ctx.conn.clone();
    spawn_upgraded(&ctx, req, move |ws| serve(ws, mode, cmd, backend, conn));
    resp
}

async fn serve(
    ws: Ws,
    mode: Mode,
    cmd: Command,
    backend: Arc<dyn Backend>,
    conn: CancellationToken,
) {
    let session = conn.child_token();
    let (sink, stream) = ws.split();
    let (out, out_rx) = mpsc::channel(OUT_QUEUE);
    let writer = tokio::spawn(write_loop(sink, out_rx, mode.enc, session.clone()));

    let (stdin, stdin_feed) = if cmd.stdin() {
        let (backend_end, feed) = tokio::io::duplex(PIPE);
        (Some(Box::new(backend_end) as BoxRead), Some(feed))
    } else {
        (None, None)
    };
    let mut pumps = Vec::new();
    let mut output = |wanted: bool, ch: u8| {
        wanted.then(|| {
            let (backend_end, drain) = tokio::io::duplex(PIPE);
            pumps.push(tokio::spawn(pump(drain, ch, out.clone(), session.clone())));
            Box::new(backend_end) as BoxWrite
        })
    };
    let stdout = output(cmd.stdout(), STDOUT);
    let stderr = output(cmd.stderr(), STDERR);
    let (resize_tx, resize) = if cmd.tty() {
        let (tx, rx) = mpsc::channel(16);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let reader = tokio::spawn(read_loop(
        stream,
        mode,
        stdin_feed,
        resize_tx,
        session.clone(),
    ));

    let io = Io {
        stdin,
        stdout,
        stderr,
        resize,
        gone: session.clone(),
    };
    let outcome = cmd.run(&*backend, io).await;

    // Output the backend wrote must reach the client before the status that ends the session.
    for p in pumps {
        finish(p, FLUSH_TIMEOUT).await;
    }
    let status = if mode.json_status {
        Some(v4_status(&outcome))
    } else {
        text_status(&outcome)
    };
    if let Some(status) = status {
        send_last(&out, Out::Data(ERROR, status.into()), &session).await;
    }
    send_last(&out, Out::Close, &session).await;
    drop(out);
    finish(writer, FLUSH_TIMEOUT).await;
    session.cancel();
    finish(reader, FLUSH_TIMEOUT).await;
}

async fn read_loop(
    mut stream: SplitStream<Ws>,
    mode: Mode,
    mut stdin: Option<DuplexStream>,
    resize: Option<mpsc::Sender<TermSize>>,
    session: CancellationToken,
) {
    let mut pending_resize = Vec::new();
    'messages: loop {
        let msg = tokio::select! {
            _ = session.cancelled() => break,
            m = stream.next() => m,
        };
        let msg = match msg {
            Some(Ok(m)) if !m.is_close() => m,
            Some(Err(e)) => {
                tracing::debug!("streaming: WebSocket read failed: {e}");
                break;
            }
            _ => break,
        };
        let Some((ch, data)) = frame::decode(mode.enc, msg) else {
            continue;
        };
        match ch {
            STDIN => {
                if let Some(w) = stdin.as_mut() {
                    let r = tokio::select! {
                        _ = session.cancelled() => break,
                        r = w.write_all(&data) => r,
                    };
                    if r.is_err() {
                        // The backend stopped reading stdin; later input has nowhere to go.
                        stdin = None;
                    }
                }
            }
            RESIZE => {
                let Some(tx) = &resize else { continue };
                pending_resize.extend_from_slice(&data);
                match drain_sizes(&mut pending_resize) {
                    Ok(sizes) => {
                        for size in sizes {
                            tokio::select! {
                                _ = session.cancelled() => break 'messages,
                                _ = tx.send(size) => {}
                            }
                        }
                    }
                    Err(e) => tracing::debug!("streaming: {e}"),
                }
            }
            CLOSE if mode.close_signal && data.first() == Some(&STDIN) => {
                if let Some(mut w) = stdin.take() {
                    let _ = w.shutdown().await;
                }
            }
            _ => {}
        }
    }
    // The client left (or the session ended): stdin sees EOF and the rest of the session stops.
    drop(stdin);
    session.cancel();
}
