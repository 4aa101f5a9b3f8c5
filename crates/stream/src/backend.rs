use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::types::{AttachRequest, ExecRequest, TermSize};

pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// A two-way byte stream (a TCP connection inside a pod, typically).
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> AsyncStream for T {}
pub type BoxStream = Box<dyn AsyncStream>;

/// What a session hands the backend: present only for the streams the client asked for.
///
/// When the client goes away, `stdin` reads end (EOF), writes to `stdout`/`stderr` fail and
/// `resize` closes; a backend must then stop and clean up.
pub struct Io {
    pub stdin: Option<BoxRead>,
    pub stdout: Option<BoxWrite>,
    pub stderr: Option<BoxWrite>,
    /// Present for TTY sessions only.
    pub resize: Option<mpsc::Receiver<TermSize>>,
    /// Cancelled when the client's connection ends: a backend whose process is quiet (no
    /// output to fail on, no stdin) learns here that nobody is listening any more.
    pub gone: tokio_util::sync::CancellationToken,
}

/// Why the backend could not serve a session; its text reaches the client.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Runs the command; returns its exit code. Must end (and clean up) when `Io`'s streams close.
    async fn exec(&self, req: &ExecRequest, io: Io) -> Result<i32, BackendError>;
    /// Joins the container's own stdio until the container exits or `Io`'s streams close.
    async fn attach(&self, req: &AttachRequest, io: Io) -> Result<(), BackendError>;
    /// A connection to localhost:port inside the pod's network namespace.
    async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
    ) -> Result<BoxStream, BackendError>;
}
