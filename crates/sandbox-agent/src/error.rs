//! The agent's error type: every failure a request can meet, mapped onto the protocol's codes.

use std::io;

use berth_sandbox_proto::{ErrorCode, Response};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A system call failed; `what` names the call and its object.
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A system call failed because of what the request asked for (a missing binary or
    /// directory in the container's root), not because the guest is broken.
    #[error("{what}: {source}")]
    SysInvalid {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl AgentError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AgentError::NotFound(_) => ErrorCode::NotFound,
            AgentError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            AgentError::InvalidArgument(_) | AgentError::SysInvalid { .. } => {
                ErrorCode::InvalidArgument
            }
            AgentError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            AgentError::Sys { .. } => ErrorCode::Internal,
        }
    }

    pub fn to_response(&self) -> Response {
        Response::Error {
            code: self.code(),
            message: self.to_string(),
        }
    }

    /// Prefixes the message with context (`container "c1": ...`), keeping the code.
    pub fn context(self, ctx: &str) -> AgentError {
        match self {
            AgentError::NotFound(m) => AgentError::NotFound(format!("{ctx}: {m}")),
            AgentError::AlreadyExists(m) => AgentError::AlreadyExists(format!("{ctx}: {m}")),
            AgentError::InvalidArgument(m) => AgentError::InvalidArgument(format!("{ctx}: {m}")),
            AgentError::FailedPrecondition(m) => {
                AgentError::FailedPrecondition(format!("{ctx}: {m}"))
            }
            AgentError::Sys { what, source } => AgentError::Sys {
                what: format!("{ctx}: {what}"),
                source,
            },
            AgentError::SysInvalid { what, source } => AgentError::SysInvalid {
                what: format!("{ctx}: {what}"),
                source,
            },
        }
    }
}

/// `map_err` helper: `.map_err(sys("mount proc on /proc"))`.
pub fn sys(what: impl Into<String>) -> impl FnOnce(io::Error) -> AgentError {
    let what = what.into();
    move |source| AgentError::Sys { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_context() {
        let e = AgentError::Sys {
            what: "mount proc".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        }
        .context("container \"c1\"");
        assert_eq!(e.code(), ErrorCode::Internal);
        assert!(e
            .to_string()
            .starts_with("container \"c1\": mount proc: No such file or directory"));
        let e = AgentError::NotFound("no container \"x\"".into()).context("signal");
        assert_eq!(e.code(), ErrorCode::NotFound);
        assert_eq!(e.to_string(), "signal: no container \"x\"");
    }
}
