//! The crate's error type. Kinds mirror containerd's errdefs so the daemon can map them to gRPC
//! codes in one place.

use containerd_shim_protos::ttrpc;

/// A coarse classification of an [`Error`], one per gRPC code the daemon needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    Unimplemented,
    Unavailable,
    /// The shim or OCI runtime failed without a more precise code (containerd's "unknown").
    Unknown,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("{0}: failed precondition")]
    FailedPrecondition(String),
    #[error("{0}: invalid argument")]
    InvalidArgument(String),
    #[error("{0}: not implemented")]
    Unimplemented(String),
    #[error("{0}: unavailable")]
    Unavailable(String),
    #[error("{0}")]
    Unknown(String),
    #[error("{0}")]
    Internal(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Error::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::Unimplemented(_) => ErrorKind::Unimplemented,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Unknown(_) => ErrorKind::Unknown,
            Error::Internal(_) | Error::Io { .. } => ErrorKind::Internal,
        }
    }

    /// The message without the kind suffix, for callers that add their own code.
    pub fn message(&self) -> String {
        match self {
            Error::NotFound(m)
            | Error::AlreadyExists(m)
            | Error::FailedPrecondition(m)
            | Error::InvalidArgument(m)
            | Error::Unimplemented(m)
            | Error::Unavailable(m)
            | Error::Unknown(m)
            | Error::Internal(m) => m.clone(),
            Error::Io { .. } => self.to_string(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Maps a ttrpc failure of a shim call. Status codes come from the shim's errdefs mapping;
    /// anything else means the connection is gone.
    pub(crate) fn from_ttrpc(what: &str, err: ttrpc::Error) -> Error {
        match err {
            ttrpc::Error::RpcStatus(status) => {
                let msg = format!("{what}: {}", status.message);
                match status.code.enum_value_or(ttrpc::Code::UNKNOWN) {
                    ttrpc::Code::NOT_FOUND => Error::NotFound(msg),
                    ttrpc::Code::ALREADY_EXISTS => Error::AlreadyExists(msg),
                    ttrpc::Code::FAILED_PRECONDITION => Error::FailedPrecondition(msg),
                    ttrpc::Code::INVALID_ARGUMENT => Error::InvalidArgument(msg),
                    ttrpc::Code::UNIMPLEMENTED => Error::Unimplemented(msg),
                    ttrpc::Code::UNAVAILABLE | ttrpc::Code::DEADLINE_EXCEEDED => {
                        Error::Unavailable(msg)
                    }
                    ttrpc::Code::INTERNAL => Error::Internal(msg),
                    _ => Error::Unknown(msg),
                }
            }
            other => Error::Unavailable(format!("{what}: shim connection: {other}")),
        }
    }
}
