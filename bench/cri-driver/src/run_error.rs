//! Everything a scenario can fail with: the CRI scenarios' [`Error`], or a streaming session
//! (exec over SPDY, port forward) that went wrong after its RPC answered.

use crate::error::Error;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Cri(#[from] Error),
    /// The URL an Exec/PortForward RPC returned is not one this client can dial.
    #[error("streaming URL {url:?} from {rpc}: {why}")]
    BadUrl {
        rpc: &'static str,
        url: String,
        why: String,
    },
    #[error("connect to streaming server {addr}: {source}")]
    StreamConnect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP/1.1 upgrade to SPDY/3.1 failed (transport error or the server said no).
    #[error("SPDY upgrade POST {url}: {why}")]
    Upgrade { url: String, why: String },
    #[error("SPDY session to {url}: {what}: {source}")]
    Spdy {
        url: String,
        what: String,
        #[source]
        source: berth_spdy::Error,
    },
    /// I/O on one SPDY stream (read, write, reset by the server).
    #[error("SPDY {stream} stream of {url}: {source}")]
    StreamIo {
        url: String,
        stream: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The session ran but did not end the way `true` or a full download should.
    #[error("{scenario} ({target}): {why}")]
    Outcome {
        scenario: &'static str,
        target: String,
        why: String,
    },
    #[error("{what} took longer than {secs} s")]
    Timeout { what: String, secs: u64 },
}
