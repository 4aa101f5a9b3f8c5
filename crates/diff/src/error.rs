//! The crate's error type; `ErrorKind` is what the daemon maps to gRPC codes.

use std::io;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Unsupported media type, malformed or oversized tar/compression data.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An entry would be written outside the root.
    #[error("path escapes the root: {0}")]
    Escape(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Snapshot(#[from] berth_snapshot::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    /// Also an invalid argument on the wire, kept apart so tests and logs can tell.
    Escape,
    Internal,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::Escape(_) => ErrorKind::Escape,
            Error::Io { .. } => ErrorKind::Internal,
            Error::Snapshot(e) => match e.kind() {
                berth_snapshot::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
                _ => ErrorKind::Internal,
            },
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Classifies an error raised while *reading* the layer: corrupt or truncated data is
    /// the input's fault, anything else is ours.
    pub(crate) fn reading(source: io::Error) -> Self {
        if let Some(inner) = source
            .get_ref()
            .and_then(|e| e.downcast_ref::<GuardViolation>())
        {
            return Error::InvalidArgument(inner.0.clone());
        }
        match source.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::Other => {
                Error::InvalidArgument(format!("malformed layer: {source}"))
            }
            _ => Error::io("read layer", source),
        }
    }
}

/// Raised inside the reader pipeline when the tar stream breaks one of our bounds.
#[derive(Debug)]
pub(crate) struct GuardViolation(pub String);

impl std::fmt::Display for GuardViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GuardViolation {}

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
