//! One error type for every way a spec cannot be built from the inputs given.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid mount {spec:?}: {reason}")]
    InvalidMount { spec: String, reason: String },
    #[error("invalid memory size {0:?} (want bytes or a number with k, m, g suffix)")]
    InvalidMemory(String),
    #[error("invalid cpus {0} (want a positive number)")]
    InvalidCpus(f64),
    #[error("invalid environment entry {0:?} (want KEY=VALUE)")]
    InvalidEnv(String),
    #[error("invalid working directory {0:?} (must be absolute)")]
    InvalidCwd(String),
    #[error("invalid user {0:?}")]
    InvalidUser(String),
    #[error("no user {0:?} in the container's /etc/passwd")]
    UserNotFound(String),
    #[error("no group {0:?} in the container's /etc/group")]
    GroupNotFound(String),
    #[error("cannot read {path} in the rootfs: {source}")]
    RootfsRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} in the rootfs is larger than {max} bytes")]
    RootfsFileTooLarge { path: String, max: u64 },
    #[error("invalid image config: {0}")]
    ImageConfig(#[from] serde_json::Error),
    #[error("building the spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
}

pub type Result<T> = std::result::Result<T, Error>;
