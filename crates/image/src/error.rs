//! One error type for the crate, with a coarse [`ErrorKind`] so servers and the CLI can map it to
//! a gRPC code in one place.

/// Coarse classification, mirroring the gRPC codes containerd uses for these failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    ResourceExhausted,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
    #[error("invalid platform {platform:?}: {reason}")]
    InvalidPlatform { platform: String, reason: String },
    #[error("malformed {what}: {reason}")]
    Malformed { what: String, reason: String },
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("{what} is larger than the {limit} byte limit")]
    TooLarge { what: String, limit: u64 },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("size mismatch for {what}: expected {expected}, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{0} not found")]
    NotFound(String),
    #[error("no manifest matches platform {0}")]
    NoMatchingPlatform(String),
    #[error("unrecognised archive: {0}")]
    UnknownArchive(String),
    #[error("tar stream: {0}")]
    Tar(std::io::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Failure reported by a [`crate::BlobSink`] / [`crate::BlobSource`] implementation.
    #[error("{message}")]
    Backend { kind: ErrorKind, message: String },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidReference { .. }
            | Error::InvalidDigest(_)
            | Error::InvalidPlatform { .. }
            | Error::Malformed { .. }
            | Error::UnsupportedMediaType(_)
            | Error::DigestMismatch { .. }
            | Error::SizeMismatch { .. }
            | Error::UnknownArchive(_)
            | Error::Tar(_) => ErrorKind::InvalidArgument,
            Error::TooLarge { .. } => ErrorKind::ResourceExhausted,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::NoMatchingPlatform(_) => ErrorKind::NotFound,
            Error::Io(_) => ErrorKind::Internal,
            Error::Backend { kind, .. } => *kind,
        }
    }

    pub(crate) fn malformed(what: impl Into<String>, reason: impl ToString) -> Self {
        Error::Malformed {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
