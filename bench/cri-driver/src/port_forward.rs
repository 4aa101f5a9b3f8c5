//! Scenario `port-forward`: what `kubectl port-forward` does for one connection, timed over a
//! download. PortForward RPC, the SPDY upgrade offering `portforward.k8s.io`, an `error` stream
//! (half-closed at once: the client never writes on it) and a `data` stream, both carrying the
//! `port` and `requestID` headers; then `GET /<path>` through the data stream, reading the
//! whole body.

use std::time::{Duration, Instant};

use berth_spdy::{Config, Session, Stream};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::PortForwardRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

use crate::error::Error;
use crate::run_error::RunError;
use crate::upgrade;

pub const PROTOCOL: &str = "portforward.k8s.io";

/// The largest HTTP response head accepted before the body.
const MAX_HEAD: usize = 16 * 1024;
/// How long to wait for the error stream's message once the data stream ended early.
const ERROR_WAIT: Duration = Duration::from_secs(5);

pub struct Plan {
    pub pod: String,
    pub port: u16,
    /// Path of the file on the pod's HTTP server (with its leading slash).
    pub path: String,
    /// Size of that file: anything else is a failure.
    pub bytes: u64,
    /// Receive window per SPDY stream announced to the server.
    pub window: u32,
    /// No single transfer may take longer.
    pub timeout: Duration,
}

/// One download.
pub struct Transfer {
    /// PortForward RPC to the last body byte.
    pub total: Duration,
    /// First request byte written to the last body byte.
    pub body: Duration,
}

impl Transfer {
    pub fn mb_per_s(bytes: u64, d: Duration) -> f64 {
        bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
    }
}

/// Median of `rates` (the upper one of an even count); `None` when empty.
pub fn median(rates: &[f64]) -> Option<f64> {
    let mut v = rates.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

pub async fn measure(
    mut client: RuntimeServiceClient<Channel>,
    plan: &Plan,
    transfers: usize,
) -> Result<Vec<Transfer>, RunError> {
    let mut out = Vec::with_capacity(transfers);
    for request_id in 0..transfers {
        let one = tokio::time::timeout(plan.timeout, once(&mut client, plan, request_id));
        out.push(one.await.map_err(|_| RunError::Timeout {
            what: format!(
                "port-forward download of {} bytes from pod {} port {}",
                plan.bytes, plan.pod, plan.port
            ),
            secs: plan.timeout.as_secs(),
        })??);
    }
    Ok(out)
}

async fn once(
    client: &mut RuntimeServiceClient<Channel>,
    plan: &Plan,
    request_id: usize,
) -> Result<Transfer, RunError> {
    let t0 = Instant::now();
    let url = client
        .port_forward(PortForwardRequest {
            pod_sandbox_id: plan.pod.clone(),
            port: vec![i32::from(plan.port)],
        })
        .await
        .map_err(Error::rpc(
            "PortForward",
            format!("pod {} port {}", plan.pod, plan.port),
        ))?
        .into_inner()
        .url;
    let io = upgrade::spdy("PortForward", &url, PROTOCOL).await?;
    let cfg = Config {
        initial_window: plan.window,
        ..Config::default()
    };
    let (session, _incoming) = Session::client(io, cfg);
    let headers = |kind: &str| {
        vec![
            ("streamtype".to_string(), kind.to_string()),
            ("port".to_string(), plan.port.to_string()),
            ("requestid".to_string(), request_id.to_string()),
        ]
    };
    let spdy_err = |what: &str| {
        let url = url.clone();
        let what = what.to_string();
        move |source| RunError::Spdy { url, what, source }
    };
    let mut error = session
        .open(headers("error"), true)
        .await
        .map_err(spdy_err("open the error stream"))?;
    let error_text = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = error.read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    });
    let mut data = session
        .open(headers("data"), false)
        .await
        .map_err(spdy_err("open the data stream"))?;
    let t1 = Instant::now();
    let got = download(&mut data, &url, plan).await;
    let done = Instant::now();
    match got {
        Ok(()) => {
            // A message on the error stream means the server saw a failure we did not.
            if error_text.is_finished() {
                let msg = error_text.await.unwrap_or_default();
                if !msg.is_empty() {
                    return Err(outcome(&url, format!("error stream says {msg:?}")));
                }
            }
            Ok(Transfer {
                total: done - t0,
                body: done - t1,
            })
        }
        // The server's reason (nothing listening, port not allowed) is on the error stream.
        Err(e) => match tokio::time::timeout(ERROR_WAIT, error_text).await {
            Ok(Ok(msg)) if !msg.is_empty() => {
                Err(outcome(&url, format!("{e}; error stream says {msg:?}")))
            }
            _ => Err(e),
        },
    }
}

fn outcome(url: &str, why: String) -> RunError {
    RunError::Outcome {
        scenario: "port-forward download",
        target: url.to_string(),
        why,
    }
}

/// `GET plan.path` on the data stream; reads the head, then exactly `plan.bytes` of body.
async fn download(data: &mut Stream, url: &str, plan: &Plan) -> Result<(), RunError> {
    let io_err = |source| RunError::StreamIo {
        url: url.to_string(),
        stream: "data",
        source,
    };
    let req = format!("GET {} HTTP/1.0\r\nHost: localhost\r\n\r\n", plan.path);
    data.write_all(req.as_bytes()).await.map_err(io_err)?;
    data.flush().await.map_err(io_err)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let end = loop {
        let n = data.read(&mut buf).await.map_err(io_err)?;
        if n == 0 {
            return Err(outcome(
                url,
                format!(
                    "data stream ended before an HTTP response head ({} bytes: {:?})",
                    head.len(),
                    String::from_utf8_lossy(&head)
                ),
            ));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > MAX_HEAD {
            return Err(outcome(
                url,
                format!("no end of HTTP head in {MAX_HEAD} bytes"),
            ));
        }
    };
    let length = content_length(&head[..end]).map_err(|why| outcome(url, why))?;
    if length != plan.bytes {
        return Err(outcome(
            url,
            format!("{} is {length} bytes, expected {}", plan.path, plan.bytes),
        ));
    }
    let mut got = (head.len() - end) as u64;
    while got < length {
        let n = data.read(&mut buf).await.map_err(|e| {
            outcome(
                url,
                format!("data stream failed after {got} of {length} body bytes: {e}"),
            )
        })?;
        if n == 0 {
            return Err(outcome(
                url,
                format!("data stream ended after {got} of {length} body bytes"),
            ));
        }
        got += n as u64;
    }
    if got > length {
        return Err(outcome(
            url,
            format!("{got} body bytes, more than the {length} announced"),
        ));
    }
    Ok(())
}

/// Content-Length of a `200` response head; an error naming the status line otherwise.
fn content_length(head: &[u8]) -> Result<u64, String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("HTTP answer {status:?}, not 200"));
    }
    lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .ok_or_else(|| "200 without Content-Length".to_string())?
        .1
        .trim()
        .parse()
        .map_err(|e| format!("bad Content-Length: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_length_of_a_200_only() {
        let h = b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\ncontent-length: 100000000\r\n\r\n";
        assert_eq!(content_length(h).unwrap(), 100_000_000);
        let e = content_length(b"HTTP/1.0 404 Not Found\r\n\r\n").unwrap_err();
        assert!(e.contains("404"), "{e}");
        assert!(content_length(b"HTTP/1.0 200 OK\r\n\r\n").is_err());
        assert!(content_length(b"HTTP/1.0 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    }

    #[test]
    fn median_of_rates() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(4.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn throughput_is_decimal_megabytes_per_second() {
        let r = Transfer::mb_per_s(100_000_000, Duration::from_millis(500));
        assert!((r - 200.0).abs() < 1e-9);
    }
}
