//! Everything that can stop a scenario, each naming the RPC, pod or socket involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect to CRI socket {socket}: {source}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    /// The daemon answered an RPC with an error: the code and message are the daemon's own, so a
    /// failing run says exactly which call on which object went wrong.
    #[error("{rpc} ({target}) failed: code {code:?}: {message}")]
    Rpc {
        rpc: &'static str,
        target: String,
        code: tonic::Code,
        message: String,
    },
    #[error("image {image} is not on the daemon, but --pause-already-pulled said it was: run `berth-cri-bench pull` first")]
    ImageMissing { image: String },
    #[error("expected at least {expected} running containers, ListContainers shows {found}")]
    TooFewContainers { expected: usize, found: usize },
    #[error("{left} pod sandboxes labelled berth-bench={tag} are still listed after teardown")]
    PodsLeft { tag: String, left: usize },
    #[error("create pod log directory {path}: {source}")]
    LogDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pod {pod} is not reachable: {why}")]
    Probe { pod: String, why: String },
    #[error("a pod worker task did not finish: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("invalid argument {what}: {why}")]
    InvalidArgument { what: &'static str, why: String },
}

impl Error {
    /// Maps a failed RPC to [`Error::Rpc`]; `target` names the pod, container or image.
    pub fn rpc(
        rpc: &'static str,
        target: impl Into<String>,
    ) -> impl FnOnce(tonic::Status) -> Error {
        let target = target.into();
        move |status| Error::Rpc {
            rpc,
            target,
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}
