//! Talking to a shim: the `start`/`delete` bootstrap commands and the ttrpc task client.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::ttrpc;
use containerd_shim_protos::ttrpc::asynchronous::Client;
use containerd_shim_protos::ttrpc::proto::{KeyValue, Request, RequestInit};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::types::RuntimeConfig;

/// Bootstrap commands must not hang berthd.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Ordinary task calls; Wait and Create run without / with a longer deadline.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const CREATE_TIMEOUT: Duration = Duration::from_secs(120);

/// A task-API client. Task API v2 and v3 carry the same messages; only the service name differs.
#[derive(Clone)]
pub(crate) struct ShimClient {
    client: Client,
    service: &'static str,
    namespace: String,
}

impl ShimClient {
    pub async fn connect(address: &str, task_api: u32, namespace: &str) -> Result<ShimClient> {
        let addr = if address.contains("://") {
            address.to_string()
        } else {
            format!("unix://{address}")
        };
        let client = tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(&addr))
            .await
            .map_err(|_| Error::Unavailable(format!("connect to shim {addr}: timed out")))?
            .map_err(|e| Error::Unavailable(format!("connect to shim {addr}: {e}")))?;
        Ok(ShimClient {
            client,
            service: if task_api >= 3 {
                "containerd.task.v3.Task"
            } else {
                "containerd.task.v2.Task"
            },
            namespace: namespace.to_string(),
        })
    }

    /// One unary call. `timeout` None waits forever (Wait).
    pub async fn call<Q: Message, R: Message>(
        &self,
        method: &str,
        req: &Q,
        timeout: Option<Duration>,
    ) -> std::result::Result<R, ttrpc::Error> {
        let payload = req
            .write_to_bytes()
            .map_err(|e| ttrpc::Error::Others(format!("encode {method}: {e}")))?;
        let timeout_nano = timeout
            .map(|t| i64::try_from(t.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        // containerd sends the namespace as ttrpc metadata; shims that serve several
        // namespaces rely on it.
        let md = vec![KeyValue {
            key: "containerd-namespace-ttrpc".into(),
            value: self.namespace.clone(),
            ..Default::default()
        }];
        let mut creq = Request::init_request(self.service.into(), method.into(), timeout_nano, md);
        creq.set_payload(payload);
        let res = self.client.request(creq).await?;
        R::parse_from_bytes(&res.payload)
            .map_err(|e| ttrpc::Error::Others(format!("decode {method} response: {e}")))
    }
}

/// The fixed part of every bootstrap command line.
pub(crate) struct Bootstrap<'a> {
    pub cfg: &'a RuntimeConfig,
    pub binary: &'a Path,
    pub namespace: &'a str,
    pub id: &'a str,
    pub bundle: &'a Path,
}

impl Bootstrap<'_> {
    fn command(&self) -> tokio::process::Command {
        let publish = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "berthd".into());
        let mut cmd = tokio::process::Command::new(self.binary);
        cmd.arg("-namespace")
            .arg(self.namespace)
            .arg("-address")
            .arg(&self.cfg.address)
            .arg("-publish-binary")
            .arg(publish)
            .arg("-id")
            .arg(self.id)
            .current_dir(self.bundle)
            .env("TTRPC_ADDRESS", &self.cfg.ttrpc_address)
            .env("GRPC_ADDRESS", &self.cfg.address)
            .env("NAMESPACE", self.namespace)
            // We speak task API v2 and v3.
            .env("MAX_SHIM_VERSION", "3")
            .envs(self.cfg.shim_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    async fn run(
        &self,
        mut cmd: tokio::process::Command,
        stdin: Vec<u8>,
        what: &str,
    ) -> Result<Vec<u8>> {
        let bin = self.binary.display().to_string();
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("{what}: spawn {bin}"), e))?;
        let mut input = child.stdin.take();
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let io = async {
            if let Some(mut i) = input.take() {
                // A shim that ignores stdin may close it early; that is fine.
                let _ = i.write_all(&stdin).await;
                drop(i);
            }
            let mut o = Vec::new();
            let mut e = Vec::new();
            let read_out = async {
                if let Some(out) = out.as_mut() {
                    let _ = out.read_to_end(&mut o).await;
                }
            };
            let read_err = async {
                if let Some(err) = err.as_mut() {
                    let _ = err.read_to_end(&mut e).await;
                }
            };
            tokio::join!(read_out, read_err);
            let status = child.wait().await;
            (o, e, status)
        };
        let (o, e, status) = tokio::time::timeout(BOOTSTRAP_TIMEOUT, io)
            .await
            .map_err(|_| Error::Unavailable(format!("{what}: {bin} timed out")))?;
        let status = status.map_err(|er| Error::io(format!("{what}: wait {bin}"), er))?;
        if !status.success() {
            let mut msg = String::from_utf8_lossy(&e).trim().to_string();
            let o = String::from_utf8_lossy(&o).trim().to_string();
            if !o.is_empty() && msg.is_empty() {
                msg = o;
            }
            return Err(Error::Unknown(format!("{what}: {bin}: {msg}: {status}")));
        }
        Ok(o)
    }

    /// `<shim> ... start`: returns the shim's ttrpc address and task API version.
    pub async fn start(&self, options: Option<&prost_types::Any>) -> Result<(String, u32)> {
        let mut cmd = self.command();
        cmd.arg("start");
        let stdin = options.map(|o| o.encode_to_vec()).unwrap_or_default();
        let out = self.run(cmd, stdin, "start shim").await?;
        parse_start_output(&String::from_utf8_lossy(&out))
    }

    /// `<shim> ... -bundle <bundle> delete`: the shim's own cleanup after the shim is gone
    /// (kills the container, runs the OCI runtime's delete, unmounts the rootfs).
    pub async fn delete(&self) -> Result<api::DeleteResponse> {
        let mut cmd = self.command();
        cmd.arg("-bundle").arg(self.bundle).arg("delete");
        let out = self.run(cmd, Vec::new(), "shim delete").await?;
        api::DeleteResponse::parse_from_bytes(&out)
            .map_err(|e| Error::Internal(format!("shim delete: bad response: {e}")))
    }
}

/// containerd 1.6 shims print a bare `unix://` address (task API v2); newer ones print JSON
/// `{"version":3,"address":"...","protocol":"ttrpc"}`.
pub(crate) fn parse_start_output(out: &str) -> Result<(String, u32)> {
    let out = out.trim();
    if out.starts_with('{') {
        #[derive(serde::Deserialize)]
        struct Params {
            #[serde(default)]
            version: u32,
            address: String,
            #[serde(default)]
            protocol: String,
        }
        let p: Params = serde_json::from_str(out).map_err(|e| {
            Error::Unknown(format!("shim start: bad bootstrap output {out:?}: {e}"))
        })?;
        if !p.protocol.is_empty() && p.protocol != "ttrpc" {
            return Err(Error::Unimplemented(format!(
                "shim protocol {:?} (only ttrpc)",
                p.protocol
            )));
        }
        let version = if p.version == 0 { 2 } else { p.version };
        if !(2..=3).contains(&version) {
            return Err(Error::Unimplemented(format!(
                "shim task API version {version}"
            )));
        }
        return Ok((p.address, version));
    }
    if out.is_empty() || out.contains(char::is_whitespace) {
        return Err(Error::Unknown(format!("shim start: bad address {out:?}")));
    }
    Ok((out.to_string(), 2))
}

/// Copies the shim's log FIFO into tracing. Opened read-write so that the read side never sees
/// EOF between shim restarts and the open never blocks.
pub fn spawn_log_reader(
    path: &Path,
    namespace: &str,
    id: &str,
) -> Option<tokio::task::JoinHandle<()>> {
    use tokio::io::AsyncBufReadExt;
    let rx = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .ok()?;
    let (ns, id) = (namespace.to_string(), id.to_string());
    Some(tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(rx).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(target: "berth_runtime::shim_log", namespace = %ns, id = %id, "{line}");
        }
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn start_output() {
        assert_eq!(
            parse_start_output("unix:///run/containerd/s/abc\n").unwrap(),
            ("unix:///run/containerd/s/abc".to_string(), 2)
        );
        assert_eq!(
            parse_start_output(r#"{"version":3,"address":"unix:///x","protocol":"ttrpc"}"#)
                .unwrap(),
            ("unix:///x".to_string(), 3)
        );
        assert!(parse_start_output("").is_err());
        assert!(parse_start_output(r#"{"version":3,"address":"x","protocol":"grpc"}"#).is_err());
        assert!(parse_start_output(r#"{"version":9,"address":"x"}"#).is_err());
    }
}
