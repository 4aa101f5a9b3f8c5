//! The SPDY/3.1 transports: every Kubernetes stream is one SPDY stream, named by its
//! `streamType` header.

pub(crate) mod portforward;
pub(crate) mod remote;

use std::future::Future;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, UPGRADE};
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::server::{negotiate, text, Body, Ctx};

pub(crate) type Io = TokioIo<Upgraded>;

/// RST_STREAM status for streams a session has no use for.
pub(crate) const REFUSED_STREAM: u32 = 3;

/// Picks the first `X-Stream-Protocol-Version` the client offers that `supported` lists; a
/// client offering none gets `default`.
pub(crate) fn handshake(
    req: &Request<Incoming>,
    supported: &[&'static str],
    default: &'static str,
) -> Result<(Response<Body>, &'static str), Box<Response<Body>>> {
    let (chosen, offered) = negotiate(
        req.headers(),
        "x-stream-protocol-version",
        supported,
        default,
    )
    .map_err(|offered| {
        Box::new(text(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports \
                     {offered:?}, server accepts {supported:?}"
            ),
        ))
    })?;
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    if offered {
        h.insert(
            "x-stream-protocol-version",
            HeaderValue::from_static(chosen),
        );
    }
    Ok((resp, chosen))
}

/// Runs `session` on the upgraded connection in its own task, counted as a live session.
pub(crate) fn spawn_upgraded<F, Fut>(ctx: &Ctx, req: Request<Incoming>, session: F)
where
    F: FnOnce(Io) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let guard = ctx.session();
    tokio::spawn(async move {
        let _guard = guard;
        match hyper::upgrade::on(req).await {
            Ok(u) => session(TokioIo::new(u)).await,
            Err(e) => tracing::debug!("streaming: SPDY upgrade failed: {e}"),
        }
    });
}

pub(crate) fn spdy_config(max_streams: usize) -> berth_spdy::Config {
    berth_spdy::Config {
        max_streams,
        ..berth_spdy::Config::default()
    }
}
