//! Every way a CRI request cannot become an OCI spec, grouped by [`ErrorKind`] so the daemon can
//! answer with the right gRPC code without matching on variants.

use std::path::PathBuf;

/// What kind of failure an [`Error`] is, in gRPC terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong (bad value, conflicting fields).
    InvalidArgument,
    /// Something the request names does not exist on the host or in the image.
    NotFound,
    /// The request is valid but the host is not set up for it (e.g. mount propagation).
    FailedPrecondition,
    /// A valid request berth does not support.
    Unimplemented,
    /// Reading the host failed, or a bug.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} is missing from the request")]
    Missing { what: &'static str },
    #[error("invalid {field} {value:?}: {why}")]
    InvalidValue {
        field: &'static str,
        value: String,
        why: &'static str,
    },
    #[error(
        "no command to run: neither the request nor the image {image:?} gives a command or args"
    )]
    NoCommand { image: String },
    #[error("{0} is not supported")]
    Unsupported(String),
    #[error("container {container:?} is privileged but its pod sandbox is not")]
    PrivilegedInUnprivilegedPod { container: String },
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("host path {path} of the mount at {container_path} does not exist")]
    HostPathNotFound {
        path: PathBuf,
        container_path: String,
    },
    #[error("cannot inspect host path {path}: {source}")]
    HostPath {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount of {path} asks for {propagation} propagation but {mount_point} is {why}")]
    Propagation {
        path: PathBuf,
        propagation: &'static str,
        mount_point: PathBuf,
        why: &'static str,
    },
    #[error("device {0} does not exist on the host")]
    DeviceNotFound(PathBuf),
    #[error("{0} is not a character or block device")]
    NotADevice(PathBuf),
    #[error("invalid seccomp profile {0:?} (want runtime/default, docker/default, unconfined or localhost/<absolute path>)")]
    SeccompProfileName(String),
    #[error("seccomp localhost_ref {0:?} is only allowed with the Localhost profile type")]
    SeccompLocalhostRef(String),
    #[error("seccomp profile file {path} does not exist")]
    SeccompProfileNotFound { path: PathBuf },
    #[error("seccomp profile {path}: {why}")]
    SeccompProfile { path: PathBuf, why: String },
    #[error("reading the host's hostname: {0}")]
    Hostname(#[source] std::io::Error),
    #[error(transparent)]
    Spec(#[from] berth_spec::Error),
    #[error("building the spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        use berth_spec::Error as S;
        match self {
            Error::Missing { .. }
            | Error::InvalidValue { .. }
            | Error::NoCommand { .. }
            | Error::PrivilegedInUnprivilegedPod { .. }
            | Error::UnknownCapability(_)
            | Error::NotADevice(_)
            | Error::SeccompProfileName(_)
            | Error::SeccompLocalhostRef(_)
            | Error::SeccompProfile { .. } => ErrorKind::InvalidArgument,
            Error::HostPathNotFound { .. }
            | Error::DeviceNotFound(_)
            | Error::SeccompProfileNotFound { .. } => ErrorKind::NotFound,
            Error::Propagation { .. } => ErrorKind::FailedPrecondition,
            Error::Unsupported(_) => ErrorKind::Unimplemented,
            Error::Spec(S::UserNotFound(_) | S::GroupNotFound(_)) => ErrorKind::NotFound,
            Error::Spec(S::RootfsRead { .. } | S::RootfsFileTooLarge { .. } | S::Build(_)) => {
                ErrorKind::Internal
            }
            Error::Spec(_) => ErrorKind::InvalidArgument,
            Error::HostPath { .. } | Error::Hostname(_) | Error::Build(_) => ErrorKind::Internal,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
