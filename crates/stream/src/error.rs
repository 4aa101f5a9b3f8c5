use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding the streaming server to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid {kind} request for {id:?}: {reason}")]
    InvalidRequest {
        kind: &'static str,
        id: String,
        reason: &'static str,
    },
    #[error("too many streaming requests waiting for their client ({0}); try again later")]
    TooManyPending(usize),
    #[error("drawing a random streaming token: {0}")]
    Random(String),
    #[error("streaming server TLS: {0}")]
    Tls(String),
}
