use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong between berth and the CNI plugins.
///
/// The variants are shaped so the CRI layer can pick a gRPC code without parsing
/// messages: `NoConfig`/`PluginNotFound` mean the node's network is not ready
/// (FailedPrecondition), `InvalidArgument` is the caller's fault, `Plugin`/`Timeout`
/// are failures of the network itself (Internal/Unavailable).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no CNI network config (*.conflist, *.conf, *.json) in {}", dir.display())]
    NoConfig { dir: PathBuf },

    #[error("invalid CNI config {}: {why}", path.display())]
    InvalidConfig { path: PathBuf, why: String },

    #[error("CNI plugin {plugin:?} not found in {}", join_dirs(dirs))]
    PluginNotFound { plugin: String, dirs: Vec<PathBuf> },

    #[error("CNI plugin {plugin:?} failed on {command}{}: {msg}{}",
        code.map(|c| format!(" (code {c})")).unwrap_or_default(),
        if details.is_empty() { String::new() } else { format!("; {details}") })]
    Plugin {
        plugin: String,
        command: &'static str,
        /// The CNI error code when the plugin printed a CNI error object; `None` when it
        /// died without one (crash, signal, garbage on stdout).
        code: Option<u64>,
        msg: String,
        details: String,
    },

    #[error("CNI plugin {plugin:?} did not finish {command} within {}s and was killed", after.as_secs())]
    Timeout {
        plugin: String,
        command: &'static str,
        after: Duration,
    },

    #[error("invalid {what}: {why}")]
    InvalidArgument { what: &'static str, why: String },

    #[error("network of {container_id:?} is not set up (no cached CNI result)")]
    NotSetUp { container_id: String },

    #[error("network namespace {} already exists", path.display())]
    NetnsExists { path: PathBuf },

    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid_config(path: impl Into<PathBuf>, why: impl Into<String>) -> Self {
        Error::InvalidConfig {
            path: path.into(),
            why: why.into(),
        }
    }
}

fn join_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "(no plugin directories configured)".to_string();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}
