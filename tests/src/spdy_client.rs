//! A small client of Kubernetes' SPDY streaming protocols, as kubectl speaks them to a CRI
//! streaming server: the HTTP/1.1 upgrade to SPDY/3.1, then remote command (exec, attach) with
//! one SPDY stream per `streamType`, and port forward (`portforward.k8s.io`) with an
//! `error` + `data` stream pair per forwarded connection.
//!
//! Written from the protocol descriptions, on berth-spdy's client side, so that berth-stream's
//! server is checked by a peer that did not share its code paths for the handshake and streams.

use std::time::Duration;

use berth_spdy::{Config, Incoming, Session, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The remote-command subprotocols kubectl offers, newest first.
pub const REMOTE_COMMAND_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// A response head bigger than this is not an upgrade answer.
const MAX_HEAD: usize = 16 * 1024;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("streaming URL {0:?} is not http://host:port/path")]
    Url(String),
    #[error("connecting to the streaming server {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("HTTP exchange with {url}: {source}")]
    Http { url: String, source: std::io::Error },
    #[error("{url} did not answer within {ANSWER_TIMEOUT:?}")]
    Timeout { url: String },
    #[error("malformed HTTP answer from {url}: {head:?}")]
    BadAnswer { url: String, head: String },
    #[error("{url} refused the SPDY upgrade with {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} switched protocols but not to SPDY/3.1 (Upgrade: {upgrade:?})")]
    NotSpdy {
        url: String,
        upgrade: Option<String>,
    },
    #[error("opening the {kind} stream: {source}")]
    Open {
        kind: String,
        source: berth_spdy::Error,
    },
    #[error("stream {kind}: {source}")]
    Stream {
        kind: &'static str,
        source: std::io::Error,
    },
    #[error("forwarded connection: {source} after {received} bytes of answer ({text:?}); error stream: {error:?}")]
    Exchange {
        received: usize,
        text: String,
        error: String,
        source: std::io::Error,
    },
    #[error("the error stream held no Kubernetes status: {text:?} ({source})")]
    Status {
        text: String,
        source: serde_json::Error,
    },
}

/// The 101 answer's head and the SPDY session over the upgraded socket.
pub struct Upgraded {
    pub session: Session,
    pub incoming: Incoming,
    /// The `X-Stream-Protocol-Version` the server picked (absent when none was offered).
    pub protocol: Option<String>,
}

/// A parsed HTTP answer head.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn split_url(url: &str) -> Result<(&str, &str), ClientError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ClientError::Url(url.to_string()))?;
    let slash = rest
        .find('/')
        .ok_or_else(|| ClientError::Url(url.to_string()))?;
    Ok((&rest[..slash], &rest[slash..]))
}

/// Sends the upgrade request and reads the answer head. The head is read one byte at a time:
/// whatever follows it is already SPDY and belongs to the session.
async fn request_upgrade(
    url: &str,
    method: &str,
    protocols: &[&str],
) -> Result<(TcpStream, Head), ClientError> {
    let (host, path) = split_url(url)?;
    let mut sock = TcpStream::connect(host)
        .await
        .map_err(|source| ClientError::Connect {
            addr: host.to_string(),
            source,
        })?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n\
         Upgrade: SPDY/3.1\r\nContent-Length: 0\r\n"
    );
    // kubectl sends one header line per offered version.
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("\r\n");
    let http = |source| ClientError::Http {
        url: url.to_string(),
        source,
    };
    sock.write_all(req.as_bytes()).await.map_err(http)?;

    let read_head = async {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > MAX_HEAD {
                break;
            }
            let b = sock.read_u8().await.map_err(http)?;
            head.push(b);
        }
        Ok::<_, ClientError>(head)
    };
    let head = tokio::time::timeout(ANSWER_TIMEOUT, read_head)
        .await
        .map_err(|_| ClientError::Timeout {
            url: url.to_string(),
        })??;
    let text = String::from_utf8_lossy(&head).into_owned();
    let bad = || ClientError::BadAnswer {
        url: url.to_string(),
        head: text.clone(),
    };
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .ok_or_else(bad)
        })
        .collect::<Result<_, _>>()?;
    Ok((sock, Head { status, headers }))
}

/// Upgrades `url` to SPDY/3.1 offering `protocols`; any answer but 101 is
/// [`ClientError::Refused`] with the answer's body.
pub async fn upgrade(url: &str, method: &str, protocols: &[&str]) -> Result<Upgraded, ClientError> {
    let (mut sock, head) = request_upgrade(url, method, protocols).await?;
    if head.status != 101 {
        let len: usize = head
            .header("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0)
            .min(MAX_HEAD);
        let mut body = vec![0u8; len];
        let _ = tokio::time::timeout(ANSWER_TIMEOUT, sock.read_exact(&mut body)).await;
        return Err(ClientError::Refused {
            url: url.to_string(),
            status: head.status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    let upgrade = head.header("upgrade").map(str::to_string);
    if !upgrade
        .as_deref()
        .is_some_and(|u| u.eq_ignore_ascii_case("SPDY/3.1"))
    {
        return Err(ClientError::NotSpdy {
            url: url.to_string(),
            upgrade,
        });
    }
    let protocol = head.header("x-stream-protocol-version").map(str::to_string);
    let (session, incoming) = Session::client(sock, Config::default());
    Ok(Upgraded {
        session,
        incoming,
        protocol,
    })
}

async fn open(
    session: &Session,
    kind: &str,
    extra: &[(&str, String)],
    fin: bool,
) -> Result<Stream, ClientError> {
    let mut headers = vec![("streamtype".to_string(), kind.to_string())];
    headers.extend(extra.iter().map(|(n, v)| (n.to_string(), v.clone())));
    session
        .open(headers, fin)
        .await
        .map_err(|source| ClientError::Open {
            kind: kind.to_string(),
            source,
        })
}

async fn open_if(session: &Session, on: bool, kind: &str) -> Result<Option<Stream>, ClientError> {
    if on {
        open(session, kind, &[], false).await.map(Some)
    } else {
        Ok(None)
    }
}

/// Which streams of a remote command to open (they must match the Exec/Attach request).
#[derive(Debug, Clone, Copy, Default)]
pub struct Wanted {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub resize: bool,
}

/// An exec or attach session's streams.
pub struct RemoteCommand {
    pub session: Session,
    pub protocol: Option<String>,
    pub error: Stream,
    pub stdin: Option<Stream>,
    pub stdout: Option<Stream>,
    pub stderr: Option<Stream>,
    pub resize: Option<Stream>,
    _incoming: Incoming,
}

/// How a remote command ended, from the error stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    /// A failure status that carries no exit code, or the text of an older protocol.
    Failed(String),
}

impl RemoteCommand {
    /// Upgrades with kubectl's method (POST) and protocol list, then opens the error stream
    /// first and the others in kubectl's order.
    pub async fn start(url: &str, wanted: Wanted) -> Result<RemoteCommand, ClientError> {
        Self::start_with(url, "POST", REMOTE_COMMAND_PROTOCOLS, wanted).await
    }

    pub async fn start_with(
        url: &str,
        method: &str,
        protocols: &[&str],
        wanted: Wanted,
    ) -> Result<RemoteCommand, ClientError> {
        let up = upgrade(url, method, protocols).await?;
        let s = &up.session;
        let error = open(s, "error", &[], false).await?;
        let stdin = open_if(s, wanted.stdin, "stdin").await?;
        let stdout = open_if(s, wanted.stdout, "stdout").await?;
        let stderr = open_if(s, wanted.stderr, "stderr").await?;
        let resize = open_if(s, wanted.resize, "resize").await?;
        Ok(RemoteCommand {
            session: up.session.clone(),
            protocol: up.protocol,
            error,
            stdin,
            stdout,
            stderr,
            resize,
            _incoming: up.incoming,
        })
    }

    /// Sends a terminal size on the resize stream, as kubectl's JSON encoder writes it.
    pub async fn resize(&mut self, width: u16, height: u16) -> Result<(), ClientError> {
        let msg = format!("{{\"Width\":{width},\"Height\":{height}}}\n");
        let io = |source| ClientError::Stream {
            kind: "resize",
            source,
        };
        let s = self.resize.as_mut().ok_or_else(|| ClientError::Stream {
            kind: "resize",
            source: std::io::Error::other("no resize stream was opened"),
        })?;
        s.write_all(msg.as_bytes()).await.map_err(io)?;
        s.flush().await.map_err(io)
    }

    /// Reads the error stream to its end and decodes how the command ended.
    pub async fn ended(&mut self) -> Result<Ended, ClientError> {
        let text = read_to_end(&mut self.error, "error").await?;
        decode_status(self.protocol.as_deref(), &text)
    }
}

/// Everything the peer sends on `s` until its FIN, as text.
pub async fn read_to_end(s: &mut Stream, kind: &'static str) -> Result<String, ClientError> {
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .await
        .map_err(|source| ClientError::Stream { kind, source })?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The v4 error stream carries a metav1.Status (exit code in `details.causes[]` with reason
/// `ExitCode`); older protocols carry text only on failure.
pub fn decode_status(protocol: Option<&str>, text: &str) -> Result<Ended, ClientError> {
    if protocol != Some("v4.channel.k8s.io") {
        return Ok(if text.is_empty() {
            Ended::Exited(0)
        } else {
            Ended::Failed(text.to_string())
        });
    }
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|source| ClientError::Status {
            text: text.to_string(),
            source,
        })?;
    if v["status"] == "Success" {
        return Ok(Ended::Exited(0));
    }
    let code = v["details"]["causes"].as_array().and_then(|causes| {
        causes
            .iter()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.parse().ok())
    });
    Ok(match code {
        Some(c) if v["reason"] == "NonZeroExitCode" => Ended::Exited(c),
        _ => Ended::Failed(text.to_string()),
    })
}

/// A port-forward connection: one SPDY session, many forwarded connections.
pub struct PortForward {
    pub session: Session,
    pub protocol: Option<String>,
    _incoming: Incoming,
}

/// One forwarded connection: the server reports failures on `error`, bytes flow on `data`.
pub struct Forwarded {
    pub error: Stream,
    pub data: Stream,
}

impl PortForward {
    pub async fn connect(url: &str) -> Result<PortForward, ClientError> {
        let up = upgrade(url, "POST", &[PORT_FORWARD_PROTOCOL]).await?;
        Ok(PortForward {
            session: up.session,
            protocol: up.protocol,
            _incoming: up.incoming,
        })
    }

    /// Opens the `error` stream (half-closed at once: the client never writes on it) and then
    /// the `data` stream of connection `request_id` to `port`.
    pub async fn forward(&self, port: u16, request_id: u32) -> Result<Forwarded, ClientError> {
        let extra = [
            ("port", port.to_string()),
            ("requestid", request_id.to_string()),
        ];
        let error = open(&self.session, "error", &extra, true).await?;
        let data = open(&self.session, "data", &extra, false).await?;
        Ok(Forwarded { error, data })
    }
}

impl Forwarded {
    /// Sends `request` and reads the answer until the server's FIN on `data`, then the error
    /// stream's text (empty when the forward worked). As kubectl does, a broken `data` stream
    /// is only an error when the error stream does not say why: a server that refuses a
    /// connection may reset `data` while the request is still being written.
    pub async fn exchange(mut self, request: &[u8]) -> Result<(Vec<u8>, String), ClientError> {
        let mut answer = Vec::new();
        let mut broken = self.data.write_all(request).await.err();
        if broken.is_none() {
            broken = self.data.flush().await.err();
        }
        if broken.is_none() {
            broken = self.data.read_to_end(&mut answer).await.err();
        }
        let _ = self.data.shutdown().await;
        let error = tokio::time::timeout(ANSWER_TIMEOUT, read_to_end(&mut self.error, "error"))
            .await
            .map_err(|_| ClientError::Stream {
                kind: "error",
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no FIN on the error stream within {ANSWER_TIMEOUT:?}"),
                ),
            })??;
        match broken {
            Some(source) if error.is_empty() => Err(ClientError::Exchange {
                received: answer.len(),
                text: String::from_utf8_lossy(&answer).into_owned(),
                error,
                source,
            }),
            _ => Ok((answer, error)),
        }
    }
}
