//! The crate's error type. The daemon maps `ErrorKind` to gRPC codes in one place.

use std::io;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors returned by snapshotters and mount helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("snapshot {0} not found")]
    NotFound(String),
    #[error("snapshot {0} already exists")]
    AlreadyExists(String),
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("metadata store: {0}")]
    Metadata(String),
}

/// Coarse classification of [`Error`], stable for mapping to wire codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    Internal,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Error::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::Io { .. } | Error::Metadata(_) => ErrorKind::Internal,
        }
    }

    /// Wraps an I/O error with what we were doing, so logs say which path failed.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Extension to attach context to `io::Result`s tersely.
pub(crate) trait IoContext<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::io(f(), e))
    }
}

impl<T> IoContext<T> for std::result::Result<T, rustix::io::Errno> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::io(f(), e.into()))
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self { Error::Metadata(e.to_string()) }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
