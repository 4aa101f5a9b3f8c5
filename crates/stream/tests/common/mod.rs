//! A fake backend and WebSocket client helpers shared by the stream tests.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use berth_stream::{
    AttachRequest, Backend, BackendError, BoxStream, Config, ExecRequest, Io, Server,
};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What the fake backend saw, for the tests to assert on.
#[derive(Default)]
pub struct Seen {
    pub started: AtomicUsize,
    pub finished: AtomicUsize,
    /// Set when an exec ended because its `Io` closed (stdin EOF or a failed write).
    pub io_closed: AtomicUsize,
    pub last_cmd: Mutex<Vec<String>>,
}

/// exec commands:
/// - `out-err <code>`: "out\n" on stdout, "err\n" on stderr, exits with <code>
/// - `echo`: copies stdin to stdout until EOF, exits 0
/// - `sizes <n>`: writes "<w>x<h>\n" for each of n resize events, exits 0
/// - `hang`: reads stdin until EOF/error, exits 0 (counts io_closed)
/// - `spam`: writes to stdout every 10 ms until a write fails (counts io_closed)
pub struct Fake {
    pub seen: Arc<Seen>,
}

#[async_trait]
impl Backend for Fake {
    async fn exec(&self, req: &ExecRequest, mut io: Io) -> Result<i32, BackendError> {
        self.seen.started.fetch_add(1, Ordering::SeqCst);
        *self.seen.last_cmd.lock().unwrap() = req.cmd.clone();
        let r = self.run(req, &mut io).await;
        self.seen.finished.fetch_add(1, Ordering::SeqCst);
        r
    }

    async fn attach(&self, _req: &AttachRequest, mut io: Io) -> Result<(), BackendError> {
        if let Some(out) = io.stdout.as_mut() {
            out.write_all(b"attached\n").await?;
        }
        Ok(())
    }

    async fn port_forward(&self, _pod: &str, port: u16) -> Result<BoxStream, BackendError> {
        let s = TcpStream::connect(("127.0.0.1", port)).await?;
        Ok(Box::new(s))
    }
}

impl Fake {
    async fn run(&self, req: &ExecRequest, io: &mut Io) -> Result<i32, BackendError> {
        match req.cmd[0].as_str() {
            "out-err" => {
                io.stdout.as_mut().unwrap().write_all(b"out\n").await?;
                io.stderr.as_mut().unwrap().write_all(b"err\n").await?;
                Ok(req.cmd[1].parse().unwrap())
            }
            "echo" => {
                let mut stdin = io.stdin.take().unwrap();
                let mut stdout = io.stdout.take().unwrap();
                tokio::io::copy(&mut stdin, &mut stdout).await?;
                Ok(0)
            }
            "sizes" => {
                let n: usize = req.cmd[1].parse().unwrap();
                let mut rx = io.resize.take().unwrap();
                let out = io.stdout.as_mut().unwrap();
                for _ in 0..n {
                    let Some(s) = rx.recv().await else { break };
                    out.write_all(format!("{}x{}\n", s.width, s.height).as_bytes())
                        .await?;
                }
                Ok(0)
            }
            "hang" => {
                let mut stdin = io.stdin.take().unwrap();
                let mut buf = [0u8; 64];
                loop {
                    match stdin.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                self.seen.io_closed.fetch_add(1, Ordering::SeqCst);
                Ok(0)
            }
            "spam" => {
                let out = io.stdout.as_mut().unwrap();
                loop {
                    if out.write_all(b"tick\n").await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                self.seen.io_closed.fetch_add(1, Ordering::SeqCst);
                Ok(0)
            }
            other => Err(BackendError::NotFound(format!("command {other}"))),
        }
    }
}

pub async fn start(cfg: Config) -> (Server, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let server = Server::start(cfg, Arc::new(Fake { seen: seen.clone() }))
        .await
        .unwrap();
    (server, seen)
}

pub fn exec(cmd: &[&str], stdin: bool, stdout: bool, stderr: bool, tty: bool) -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout,
        stderr,
    }
}

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn connect(url: &str, protocol: &str) -> Client {
    try_connect(url, protocol).await.unwrap()
}

pub async fn try_connect(
    url: &str,
    protocol: &str,
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let url = url.replacen("http://", "ws://", 1);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
    assert_eq!(
        resp.headers()["sec-websocket-protocol"].to_str().unwrap(),
        protocol
    );
    Ok(ws)
}

/// Reads until the server closes, collecting each channel's bytes (binary framing).
pub async fn collect(ws: &mut Client) -> BTreeMap<u8, Vec<u8>> {
    let mut got: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    let read = async {
        while let Some(msg) = ws.next().await {
            match msg.unwrap() {
                Message::Binary(b) if !b.is_empty() => {
                    got.entry(b[0]).or_default().extend_from_slice(&b[1..]);
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the server did not end the session within 10 s");
    got
}

pub async fn send(ws: &mut Client, ch: u8, data: &[u8]) {
    let mut v = vec![ch];
    v.extend_from_slice(data);
    ws.send(Message::Binary(v.into())).await.unwrap();
}

/// Polls `cond` for up to 5 s.
pub async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}
