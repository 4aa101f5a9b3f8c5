//! The crate's error type. Every failure carries a coarse [`ErrorKind`] so berthd can map it to a
//! gRPC code in one place (NotFound, Unauthenticated, ...), as containerd does.

use std::fmt;

/// Coarse classification of a registry failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    Unauthenticated,
    PermissionDenied,
    InvalidArgument,
    TooLarge,
    Timeout,
    Unavailable,
    DigestMismatch,
    Internal,
}

/// One host's failure inside an [`Error::Unavailable`].
#[derive(Debug, Clone)]
pub struct HostError {
    pub host: String,
    pub message: String,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.host, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(String),
    #[error("registry {registry}: {reason}")]
    Unauthenticated { registry: String, reason: String },
    #[error("registry {registry}: permission denied for {what}")]
    PermissionDenied { registry: String, what: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("invalid registry configuration {file}: {reason}")]
    Config { file: String, reason: String },
    #[error("{what} is {size} bytes, over the {limit} byte limit")]
    TooLarge { what: String, size: u64, limit: u64 },
    #[error("{what}: no data for {secs} s")]
    Timeout { what: String, secs: u64 },
    /// A single host could not be reached or broke the connection.
    #[error("{host}: {message}")]
    Transport { host: String, message: String },
    /// The registry answered with a status we cannot use (5xx after retries, 429, ...).
    #[error("{host}: {what}: HTTP {status}: {message}")]
    Status {
        host: String,
        what: String,
        status: u16,
        message: String,
    },
    #[error("{what}: all registry hosts failed: {}", list(.errors))]
    Unavailable {
        what: String,
        errors: Vec<HostError>,
    },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

fn list(errors: &[HostError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Unauthenticated { .. } => ErrorKind::Unauthenticated,
            Error::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            Error::InvalidArgument(_) | Error::Config { .. } => ErrorKind::InvalidArgument,
            Error::TooLarge { .. } => ErrorKind::TooLarge,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Transport { .. } | Error::Status { .. } | Error::Unavailable { .. } => {
                ErrorKind::Unavailable
            }
            Error::DigestMismatch { .. } => ErrorKind::DigestMismatch,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// True when the host never gave a usable answer (unreachable, broken connection, stall,
    /// server error): the next host may do better. A definite answer (404, 401, digest
    /// mismatch, ...) is not retried elsewhere.
    pub(crate) fn is_host_failure(&self) -> bool {
        matches!(
            self,
            Error::Transport { .. }
                | Error::Status { .. }
                | Error::Timeout { .. }
                | Error::Unavailable { .. }
        )
    }
}

impl From<berth_image::Error> for Error {
    fn from(e: berth_image::Error) -> Self {
        match e.kind() {
            berth_image::ErrorKind::InvalidArgument => Error::InvalidArgument(e.to_string()),
            berth_image::ErrorKind::NotFound => Error::NotFound(e.to_string()),
            _ => Error::Internal(e.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
