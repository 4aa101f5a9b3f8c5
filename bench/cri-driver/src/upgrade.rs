//! The HTTP/1.1 upgrade every SPDY streaming session starts with: POST to the URL the RPC
//! returned, `Connection: Upgrade`, `Upgrade: SPDY/3.1` and the subprotocol offered in
//! `X-Stream-Protocol-Version`; a 101 answer hands over the raw connection.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{CONNECTION, HOST, UPGRADE};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::run_error::RunError;

pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// Where a streaming URL points: `authority` to dial and send as Host, `path` with its query.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub authority: String,
    pub path: String,
}

/// Splits `http://host:port/path?query`. Both daemons here serve plain HTTP on loopback; an
/// https URL means the daemon was configured with TLS, which this client does not speak.
pub fn parse(rpc: &'static str, url: &str) -> Result<Target, RunError> {
    let bad = |why: &str| RunError::BadUrl {
        rpc,
        url: url.to_string(),
        why: why.to_string(),
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// URLs are supported (is TLS on?)"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    // An authority without a port would dial port 80, never a streaming server: refuse it.
    let port = authority.rsplit_once(':').map(|(_, p)| p).unwrap_or("");
    if authority.is_empty() || port.is_empty() || authority.ends_with(']') {
        return Err(bad("no host:port"));
    }
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad("port is 0 or not a number"));
    }
    Ok(Target {
        authority: authority.to_string(),
        path: path.to_string(),
    })
}

/// Dials `url` and upgrades the connection to SPDY/3.1 offering `protocol`; fails unless the
/// server switches protocols and agrees on `protocol`.
pub async fn spdy(rpc: &'static str, url: &str, protocol: &str) -> Result<Upgraded, RunError> {
    let target = parse(rpc, url)?;
    let fail = |why: String| RunError::Upgrade {
        url: url.to_string(),
        why,
    };
    let tcp = TcpStream::connect(&target.authority)
        .await
        .map_err(|source| RunError::StreamConnect {
            addr: target.authority.clone(),
            source,
        })?;
    // Go's net package (kubectl, both servers' clients) turns Nagle off on every TCP socket.
    tcp.set_nodelay(true)
        .map_err(|e| fail(format!("set TCP_NODELAY: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| fail(format!("HTTP/1.1 handshake: {e}")))?;
    // Ends on its own once the upgrade has taken the connection.
    tokio::spawn(conn.with_upgrades());
    let req = Request::post(&target.path)
        .header(HOST, &target.authority)
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", protocol)
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(format!("build request: {e}")))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| fail(format!("send request: {e}")))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        // The server's own reason (bad token, container not running) is in the body.
        let body = match Limited::new(resp.into_body(), 4096).collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).trim().to_string(),
            Err(e) => format!("(body unreadable: {e})"),
        };
        return Err(fail(format!("answered {status}, not 101: {body:?}")));
    }
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let upgrade = header("upgrade");
    if !upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        return Err(fail(format!("101 with Upgrade {upgrade:?}, not SPDY/3.1")));
    }
    let agreed = header("x-stream-protocol-version");
    if agreed != protocol {
        return Err(fail(format!(
            "server agreed on protocol {agreed:?}, not the offered {protocol:?}"
        )));
    }
    let upgraded = hyper::upgrade::on(resp)
        .await
        .map_err(|e| fail(format!("take over the upgraded connection: {e}")))?;
    Ok(TokioIo::new(upgraded))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn splits_authority_and_path() {
        let t = parse("Exec", "http://127.0.0.1:40123/exec/AbC-d_e").unwrap();
        assert_eq!(t.authority, "127.0.0.1:40123");
        assert_eq!(t.path, "/exec/AbC-d_e");
        let t = parse("PortForward", "http://[::1]:8080/portforward/x?a=b").unwrap();
        assert_eq!(t.authority, "[::1]:8080");
        assert_eq!(t.path, "/portforward/x?a=b");
        assert_eq!(parse("Exec", "http://h:1").unwrap().path, "/");
    }

    #[test]
    fn refuses_what_it_cannot_dial() {
        for url in [
            "https://127.0.0.1:1/exec/t",
            "127.0.0.1:1/exec/t",
            "http://127.0.0.1/exec/t",
            "http://127.0.0.1:0/exec/t",
            "http://[::1]/exec/t",
            "http:///exec/t",
            "http://h:port/exec/t",
        ] {
            let e = parse("Exec", url).unwrap_err();
            assert!(matches!(e, RunError::BadUrl { .. }), "{url}: {e}");
        }
    }
}
