//! The crate's error type. Fetcher failures (auth, timeouts, unreachable registries) pass
//! through unchanged so the daemon maps them to the same gRPC codes containerd would send.

/// Coarse classification of [`Error`], one per gRPC code the daemon sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    InvalidArgument,
    DigestMismatch,
    TooLarge,
    Unauthenticated,
    Timeout,
    Unavailable,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A reference, blob or platform that does not exist; the message names it.
    #[error("{0}: not found")]
    NotFound(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{0}: too large")]
    TooLarge(String),
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("timeout: {0}")]
    Timeout(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::DigestMismatch { .. } => ErrorKind::DigestMismatch,
            Error::TooLarge(_) => ErrorKind::TooLarge,
            Error::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Failures worth retrying from the current offset: the data source hiccuped.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self.kind(), ErrorKind::Timeout | ErrorKind::Unavailable)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<berth_store::Error> for Error {
    fn from(e: berth_store::Error) -> Self {
        use berth_store::ErrorKind as K;
        match e.kind() {
            K::NotFound => Error::NotFound(e.to_string()),
            K::InvalidArgument => Error::InvalidArgument(e.to_string()),
            K::Unavailable => Error::Unavailable(e.to_string()),
            _ => Error::Internal(format!("content store: {e}")),
        }
    }
}

impl From<berth_snapshot::Error> for Error {
    fn from(e: berth_snapshot::Error) -> Self {
        use berth_snapshot::ErrorKind as K;
        match e.kind() {
            K::NotFound => Error::NotFound(e.to_string()),
            K::InvalidArgument => Error::InvalidArgument(e.to_string()),
            _ => Error::Internal(format!("snapshotter: {e}")),
        }
    }
}

impl From<berth_diff::Error> for Error {
    fn from(e: berth_diff::Error) -> Self {
        use berth_diff::ErrorKind as K;
        match e.kind() {
            K::InvalidArgument | K::Escape => Error::InvalidArgument(format!("layer: {e}")),
            K::Internal => Error::Internal(format!("apply layer: {e}")),
        }
    }
}

impl From<berth_image::Error> for Error {
    fn from(e: berth_image::Error) -> Self {
        use berth_image::ErrorKind as K;
        match e {
            berth_image::Error::DigestMismatch {
                what,
                expected,
                actual,
            } => Error::DigestMismatch {
                what,
                expected,
                actual,
            },
            e => match e.kind() {
                K::NotFound => Error::NotFound(e.to_string()),
                K::ResourceExhausted => Error::TooLarge(e.to_string()),
                K::InvalidArgument | K::FailedPrecondition => Error::InvalidArgument(e.to_string()),
                K::Internal => Error::Internal(e.to_string()),
            },
        }
    }
}

/// A blocking task that panicked or was cancelled.
impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("blocking task: {e}"))
    }
}
