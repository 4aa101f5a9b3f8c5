//! The one place where library errors become gRPC statuses, with containerd's codes.

use tonic::{Code, Status};

pub fn from_store(e: berth_store::Error) -> Status {
    use berth_store::ErrorKind as K;
    let code = match e.kind() {
        K::NotFound => Code::NotFound,
        K::AlreadyExists => Code::AlreadyExists,
        K::FailedPrecondition => Code::FailedPrecondition,
        K::InvalidArgument => Code::InvalidArgument,
        K::Unavailable => Code::Unavailable,
        _ => Code::Internal,
    };
    Status::new(code, e.to_string())
}

pub fn from_snapshot(e: berth_snapshot::Error) -> Status {
    use berth_snapshot::ErrorKind as K;
    let code = match e.kind() {
        K::NotFound => Code::NotFound,
        K::AlreadyExists => Code::AlreadyExists,
        K::FailedPrecondition => Code::FailedPrecondition,
        K::InvalidArgument => Code::InvalidArgument,
        _ => Code::Internal,
    };
    Status::new(code, e.to_string())
}

pub fn from_diff(e: berth_diff::Error) -> Status {
    use berth_diff::ErrorKind as K;
    let code = match e.kind() {
        K::InvalidArgument | K::Escape => Code::InvalidArgument,
        _ => Code::Internal,
    };
    Status::new(code, e.to_string())
}

pub fn from_runtime(e: berth_runtime::Error) -> Status {
    use berth_runtime::ErrorKind as K;
    let code = match e.kind() {
        K::NotFound => Code::NotFound,
        K::AlreadyExists => Code::AlreadyExists,
        K::FailedPrecondition => Code::FailedPrecondition,
        K::InvalidArgument => Code::InvalidArgument,
        K::Unimplemented => Code::Unimplemented,
        K::Unavailable => Code::Unavailable,
        K::Unknown => Code::Unknown,
        K::Internal => Code::Internal,
    };
    Status::new(code, e.message())
}

/// A blocking task that panicked or was cancelled.
pub fn from_join(e: tokio::task::JoinError) -> Status {
    Status::internal(format!("worker failed: {e}"))
}

pub trait IntoStatus<T> {
    fn status(self) -> Result<T, Status>;
}

impl<T> IntoStatus<T> for Result<T, berth_store::Error> {
    fn status(self) -> Result<T, Status> {
        self.map_err(from_store)
    }
}

impl<T> IntoStatus<T> for Result<T, berth_snapshot::Error> {
    fn status(self) -> Result<T, Status> {
        self.map_err(from_snapshot)
    }
}

impl<T> IntoStatus<T> for Result<T, berth_diff::Error> {
    fn status(self) -> Result<T, Status> {
        self.map_err(from_diff)
    }
}

impl<T> IntoStatus<T> for Result<T, berth_runtime::Error> {
    fn status(self) -> Result<T, Status> {
        self.map_err(from_runtime)
    }
}
