//! Accepting connections, routing `/exec|attach|portforward/<token>` and choosing the transport.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::backend::Backend;
use crate::error::Error;
use crate::idle::{self, Activity, IdleIo};
use crate::remote::Command;
use crate::token::{Pending, Tokens};
use crate::types::{AttachRequest, Config, ExecRequest, PortForwardRequest};
use crate::{spdy, ws};

pub(crate) type Body = Full<Bytes>;

pub(crate) struct Shared {
    pub(crate) cfg: Config,
    pub(crate) backend: Arc<dyn Backend>,
    tokens: Tokens,
    sessions: AtomicUsize,
}

/// Counts a running upgraded session for as long as it lives.
pub(crate) struct SessionGuard {
    shared: Arc<Shared>,
    _conn: Arc<DropGuard>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.shared.sessions.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The streaming server; serving stops when it is dropped.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    /// The serving certificate (PEM) when TLS is on.
    cert_pem: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Server {
    /// Binds `cfg.address:cfg.port` and serves in a background task.
    pub async fn start(cfg: Config, backend: Arc<dyn Backend>) -> Result<Server, Error> {
        let want = SocketAddr::new(cfg.address, cfg.port);
        let listener = TcpListener::bind(want)
            .await
            .map_err(|source| Error::Bind { addr: want, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr: want, source })?;
        let shared = Arc::new(Shared {
            tokens: Tokens::new(cfg.token_ttl),
            cfg,
            backend,
            sessions: AtomicUsize::new(0),
        });
        let tls = match &shared.cfg.tls {
            Some(t) => Some(crate::tls::build(t, addr.ip())?),
            None => None,
        };
        let cert_pem = tls.as_ref().map(|t| t.cert_pem.clone());
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            stop.clone(),
            tls.map(|t| t.acceptor),
        ));
        Ok(Server {
            addr,
            shared,
            stop,
            cert_pem,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The PEM of the certificate served when TLS is on (self-signed ones can be pinned).
    pub fn certificate_pem(&self) -> Option<&str> {
        self.cert_pem.as_deref()
    }

    /// Upgraded exec/attach/port-forward sessions still running (for tests and metrics).
    pub fn active_sessions(&self) -> usize {
        self.shared.sessions.load(Ordering::SeqCst)
    }

    /// Stops accepting and closes every connection; the same happens on drop.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    pub fn exec_url(&self, req: ExecRequest) -> Result<String, Error> {
        let invalid = |reason| Error::InvalidRequest {
            kind: "exec",
            id: req.container_id.clone(),
            reason,
        };
        if req.container_id.is_empty() {
            return Err(invalid("container id is empty"));
        }
        if req.cmd.is_empty() {
            return Err(invalid("cmd is empty"));
        }
        check_streams(req.stdin, req.stdout, req.stderr, req.tty).map_err(invalid)?;
        self.url(Pending::Exec(req))
    }

    pub fn attach_url(&self, req: AttachRequest) -> Result<String, Error> {
        let invalid = |reason| Error::InvalidRequest {
            kind: "attach",
            id: req.container_id.clone(),
            reason,
        };
        if req.container_id.is_empty() {
            return Err(invalid("container id is empty"));
        }
        check_streams(req.stdin, req.stdout, req.stderr, req.tty).map_err(invalid)?;
        self.url(Pending::Attach(req))
    }

    pub fn port_forward_url(&self, req: PortForwardRequest) -> Result<String, Error> {
        if req.pod_sandbox_id.is_empty() {
            return Err(Error::InvalidRequest {
                kind: "port-forward",
                id: String::new(),
                reason: "pod sandbox id is empty",
            });
        }
        if req.ports.contains(&0) {
            return Err(Error::InvalidRequest {
                kind: "port-forward",
                id: req.pod_sandbox_id,
                reason: "port 0 cannot be forwarded",
            });
        }
        self.url(Pending::PortForward(req))
    }

    fn url(&self, req: Pending) -> Result<String, Error> {
        let kind = req.path_kind();
        let token = self.shared.tokens.insert(req)?;
        let scheme = if self.cert_pem.is_some() {
            "https"
        } else {
            "http"
        };
        let mut host = self.addr;
        if host.ip().is_unspecified() {
            if let Some(ip) = self.shared.cfg.advertise {
                host.set_ip(ip);
            }
        }
        Ok(format!("{scheme}://{host}/{kind}/{token}"))
    }
}

fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), &'static str> {
    if !(stdin || stdout || stderr) {
        return Err("one of stdin, stdout or stderr must be requested");
    }
    if tty && stderr {
        return Err("tty and stderr cannot both be requested (a terminal has one output)");
    }
    Ok(())
}

/// A TLS handshake that takes longer than this is dropped.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    tracing::warn!("streaming server: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (shared, conn) = (shared.clone(), stop.child_token());
        match &tls {
            None => {
                tokio::spawn(serve_connection(tcp, peer, shared, conn));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => serve_connection(stream, peer, shared, conn).await,
                        Ok(Err(e)) => tracing::debug!("streaming TLS handshake from {peer}: {e}"),
                        Err(_) => tracing::debug!("streaming TLS handshake from {peer} timed out"),
                    }
                });
            }
        }
    }
}

async fn serve_connection<S>(tcp: S, peer: SocketAddr, shared: Arc<Shared>, conn: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let activity = Activity::new();
    tokio::spawn(idle::watchdog(
        activity.clone(),
        shared.cfg.idle_timeout,
        conn.clone(),
    ));
    // The connection's token is cancelled once the HTTP connection and every session it
    // upgraded into are gone, which also ends the watchdog.
    let alive = Arc::new(conn.clone().drop_guard());
    let io = TokioIo::new(IdleIo::new(tcp, activity));
    let svc_shared = shared.clone();
    let svc_conn = conn.clone();
    let svc = hyper::service::service_fn(move |req| {
        let ctx = Ctx {
            shared: svc_shared.clone(),
            conn: svc_conn.clone(),
            alive: alive.clone(),
        };
        async move { Ok::<_, Infallible>(route(ctx, req)) }
    });
    let http = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, svc)
        .with_upgrades();
    tokio::select! {
        r = http => if let Err(e) = r {
            tracing::debug!("streaming connection from {peer}: {e}");
        },
        _ = conn.cancelled() => {}
    }
}

#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conn: CancellationToken,
    alive: Arc<DropGuard>,
}

impl Ctx {
    pub(crate) fn session(&self) -> SessionGuard {
        self.shared.sessions.fetch_add(1, Ordering::SeqCst);
        SessionGuard {
            shared: self.shared.clone(),
            _conn: self.alive.clone(),
        }
    }
}

pub(crate) fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut msg = msg.into();
    msg.push('\n');
    let mut resp = Response::new(Full::new(Bytes::from(msg)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn has_token(headers: &HeaderMap, name: impl hyper::header::AsHeaderName, want: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
            .unwrap_or(false)
    })
}

/// Comma-separated and repeated header values, in the client's order of preference.
/// The first protocol the client offers (in `header`) that `supported` lists, and whether it
/// offered any (then the answer must name the choice); a client offering none gets `default`;
/// Err(what was offered) when nothing matches.
pub(crate) fn negotiate(
    headers: &HeaderMap,
    header: &str,
    supported: &[&'static str],
    default: &'static str,
) -> Result<(&'static str, bool), Vec<String>> {
    let offered = header_list(headers, header);
    if offered.is_empty() {
        return Ok((default, false));
    }
    offered
        .iter()
        .find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied())
        .map(|p| (p, true))
        .ok_or(offered)
}

pub(crate) fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn route(ctx: Ctx, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (Some(kind), Some(token)) = (parts.next(), parts.next()) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no streaming endpoint at {path}"),
        );
    };
    if !matches!(kind, "exec" | "attach" | "portforward") {
        return text(
            StatusCode::NOT_FOUND,
            format!("no streaming endpoint at {path}"),
        );
    }
    let Some(pending) = ctx.shared.tokens.take(token) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("unknown, expired or already used streaming token at {path}"),
        );
    };
    if pending.path_kind() != kind {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "the token at {path} is for /{}, not /{kind}",
                pending.path_kind()
            ),
        );
    }
    let headers = req.headers();
    let connection_upgrade = has_token(headers, CONNECTION, "upgrade");
    if connection_upgrade && has_token(headers, UPGRADE, "websocket") {
        return match pending {
            Pending::Exec(r) => ws::remote::upgrade(ctx, req, Command::Exec(r)),
            Pending::Attach(r) => ws::remote::upgrade(ctx, req, Command::Attach(r)),
            Pending::PortForward(r) => ws::portforward::upgrade(ctx, req, r),
        };
    }
    if connection_upgrade && has_token(headers, UPGRADE, "SPDY/3.1") {
        return match pending {
            Pending::Exec(r) => spdy::remote::upgrade(ctx, req, Command::Exec(r)),
            Pending::Attach(r) => spdy::remote::upgrade(ctx, req, Command::Attach(r)),
            Pending::PortForward(r) => spdy::portforward::upgrade(ctx, req, r),
        };
    }
    text(
        StatusCode::BAD_REQUEST,
        "expected an upgrade to websocket or SPDY/3.1 (Connection: Upgrade)",
    )
}
