//! The CRI streaming server: `Exec`, `Attach` and `PortForward` hand out a URL carrying a
//! single-use token; clients (kubectl, crictl, the kubelet) then speak Kubernetes'
//! remote-command or port-forward protocol to it over WebSocket or SPDY/3.1.
//!
//! The server only speaks the protocols: running processes and dialing ports is the
//! [`Backend`]'s job, so that this crate knows nothing of tasks or network namespaces.

mod backend;
mod error;
mod idle;
mod remote;
mod server;
mod spdy;
mod status;
mod tls;
mod token;
mod types;
mod ws;

pub use backend::{AsyncStream, Backend, BackendError, BoxRead, BoxStream, BoxWrite, Io};
pub use error::Error;
pub use server::Server;
pub use tls::TlsConfig;
pub use types::{AttachRequest, Config, ExecRequest, PortForwardRequest, TermSize};
