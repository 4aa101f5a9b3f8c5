//! Scenario `exec-stream`: what `kubectl exec` / `crictl exec` do for `true` without a TTY.
//! Exec RPC, the SPDY upgrade offering `v4.channel.k8s.io`, then the error, stdout and stderr
//! streams opened one after the other (each waits for its SYN_REPLY, as client-go does); the
//! round trip ends when stdout and stderr have ended and the v4 status has been read.

use std::time::{Duration, Instant};

use berth_spdy::{Config, Session, Stream};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::ExecRequest;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;

use crate::error::Error;
use crate::run_error::RunError;
use crate::upgrade;

pub const PROTOCOL: &str = "v4.channel.k8s.io";

/// One session of `true` may not take longer than this.
const SESSION_TIMEOUT: Duration = Duration::from_secs(30);

/// `calls` timed sessions after one untimed warm-up.
pub async fn measure(
    mut client: RuntimeServiceClient<Channel>,
    container: &str,
    calls: usize,
) -> Result<Vec<Duration>, RunError> {
    once(&mut client, container).await?;
    let mut out = Vec::with_capacity(calls);
    for _ in 0..calls {
        out.push(once(&mut client, container).await?);
    }
    Ok(out)
}

async fn once(
    client: &mut RuntimeServiceClient<Channel>,
    container: &str,
) -> Result<Duration, RunError> {
    tokio::time::timeout(SESSION_TIMEOUT, session(client, container))
        .await
        .map_err(|_| RunError::Timeout {
            what: format!("streaming exec of `true` in container {container}"),
            secs: SESSION_TIMEOUT.as_secs(),
        })?
}

async fn session(
    client: &mut RuntimeServiceClient<Channel>,
    container: &str,
) -> Result<Duration, RunError> {
    let t0 = Instant::now();
    let url = client
        .exec(ExecRequest {
            container_id: container.to_string(),
            cmd: vec!["true".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
        })
        .await
        .map_err(Error::rpc("Exec", format!("container {container}")))?
        .into_inner()
        .url;
    let io = upgrade::spdy("Exec", &url, PROTOCOL).await?;
    let (session, _incoming) = Session::client(io, Config::default());
    let error = open(&session, &url, "error").await?;
    let stdout = open(&session, &url, "stdout").await?;
    let stderr = open(&session, &url, "stderr").await?;
    let (out, err, status) = tokio::try_join!(
        read_all(stdout, &url, "stdout"),
        read_all(stderr, &url, "stderr"),
        read_all(error, &url, "error"),
    )?;
    let took = t0.elapsed();
    check(&url, &out, &err, &status)?;
    Ok(took)
}

/// Opens a stream of `kind`; half-closed by nobody: client-go leaves its output streams open.
pub async fn open(session: &Session, url: &str, kind: &'static str) -> Result<Stream, RunError> {
    session
        .open(vec![("streamtype".into(), kind.into())], false)
        .await
        .map_err(|source| RunError::Spdy {
            url: url.to_string(),
            what: format!("open the {kind} stream"),
            source,
        })
}

/// Everything the server sent on `s` until it ended the stream. The kubelet's streaming
/// library (containerd's server) ends a session by resetting every stream with CANCEL and
/// closing the connection rather than sending FIN; client-go reads both as the end of the
/// stream, and so does this (data received before the reset is kept).
async fn read_all(mut s: Stream, url: &str, kind: &'static str) -> Result<Vec<u8>, RunError> {
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf).await {
        Ok(_) => Ok(buf),
        Err(e) if ends_stream(&e) => Ok(buf),
        Err(source) => Err(RunError::StreamIo {
            url: url.to_string(),
            stream: kind,
            source,
        }),
    }
}

fn ends_stream(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
    )
}

/// `true` prints nothing and succeeds: a v4 Status whose `status` is `Success`. client-go would
/// also take an empty error stream for success, but both servers here always send the Status,
/// so an empty one means the session was cut short.
fn check(url: &str, out: &[u8], err: &[u8], status: &[u8]) -> Result<(), RunError> {
    let fail = |why: String| RunError::Outcome {
        scenario: "streaming exec of `true`",
        target: url.to_string(),
        why,
    };
    if !out.is_empty() || !err.is_empty() {
        return Err(fail(format!(
            "expected no output, got stdout {:?} stderr {:?}",
            String::from_utf8_lossy(out),
            String::from_utf8_lossy(err)
        )));
    }
    if status.is_empty() {
        return Err(fail("the error stream ended without a v4 status".into()));
    }
    let v: Value = serde_json::from_slice(status).map_err(|e| {
        fail(format!(
            "v4 status is not JSON ({e}): {:?}",
            String::from_utf8_lossy(status)
        ))
    })?;
    match v.get("status").and_then(Value::as_str) {
        Some("Success") => Ok(()),
        _ => Err(fail(format!("v4 status is not Success: {v}"))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn success_needs_silence_and_a_success_status() {
        let ok = br#"{"metadata":{},"status":"Success"}"#;
        assert!(check("u", b"", b"", ok).is_ok());
        assert!(check("u", b"", b"", b"").is_err());
        assert!(check("u", b"x", b"", ok).is_err());
        assert!(check("u", b"", b"e", ok).is_err());
        let exit7 = br#"{"metadata":{},"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}}"#;
        let e = check("u", b"", b"", exit7).unwrap_err().to_string();
        assert!(e.contains("NonZeroExitCode"), "{e}");
        assert!(check("u", b"", b"", b"command not found").is_err());
    }
}
