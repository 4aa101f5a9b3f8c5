//! SPDY/3.1 sessions over any byte stream, as Kubernetes' remote-command and port-forward
//! protocols use them (kubectl and the kubelet speak SPDY/3.1 through `moby/spdystream`).
//!
//! A [`Session`] is driven by one spawned task; [`Stream`]s are `AsyncRead + AsyncWrite`.
//! Streams the peer opens arrive through [`Incoming`], already answered with an empty
//! SYN_REPLY (Kubernetes servers reply with no headers; the stream's headers say what it is for).
//! To turn a stream down, [`Stream::reset`] it (e.g. with [`status::REFUSED_STREAM`]).
//!
//! Flow control: each side announces SETTINGS_INITIAL_WINDOW_SIZE ([`Config::initial_window`])
//! and returns window with WINDOW_UPDATE as the application reads, so a stream nobody reads
//! holds at most one window of data. The session window is widened to `max_streams` windows so
//! that it never binds first. moby/spdystream (kubectl, the kubelet) implements no flow control:
//! it neither sends SETTINGS nor WINDOW_UPDATE and ignores ours. Against such a peer we do not
//! wait for grants that never come (writes are bounded by the socket instead), and when it
//! overruns a stream's window the session stops reading the connection until the application
//! drains that stream: memory stays bounded and TCP pushes back on the peer. A peer counts as
//! flow-controlled once it has sent SETTINGS or WINDOW_UPDATE; then overruns are answered with
//! RST_STREAM FLOW_CONTROL_ERROR.
//!
//! Limits: frames are bounded by their 24-bit length (16 MiB), decompressed header blocks by
//! 1 MiB, DATA queued for the socket by 256 KiB per session (writers wait), peer-opened streams
//! by [`Config::max_streams`] (more are refused with RST_STREAM REFUSED_STREAM).

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
