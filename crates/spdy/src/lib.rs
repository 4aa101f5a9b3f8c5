//! SPDY/3.1 sessions over any byte stream, as Kubernetes' remote-command and port-forward
//! protocols use them (kubectl and the kubelet speak SPDY/3.1 through `moby/spdystream`).
//!
//! A [`Session`] is driven by one spawned task; [`Stream`]s are `AsyncRead + AsyncWrite`.
//! Streams the peer opens arrive through [`Incoming`], already answered with an empty
//! SYN_REPLY (Kubernetes servers reply with no headers; the stream's headers say what it is for).

mod driver;
mod error;
/// Frame codec (public for test clients that speak raw SPDY).
pub mod frame;
mod headers;
mod session;
mod state;
mod stream;

pub use error::Error;
pub use session::{Config, Incoming, Session};
pub use stream::Stream;

/// RST_STREAM status codes, for [`Stream::reset`].
pub use frame::status;
