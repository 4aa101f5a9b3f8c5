//! berth-pull: the server-side pull pipeline.
//!
//! [`pull`] resolves a reference through a [`Fetcher`], downloads blobs concurrently into the
//! content store (resuming broken streams from the ingest offset), and applies each layer to a
//! snapshot *while it downloads*, in layer order. Everything happens under a lease that
//! expires on its own, and the image record is written last, so a crash or a failure leaves
//! only collectable garbage and never a half-pulled image.
//!
//! For the daemon: run [`pull`] while holding the GC hold (the lease protects what is written,
//! but the final image record and the lease deletion should not interleave with a sweep), and
//! map [`ErrorKind`] once: NotFound → NotFound, InvalidArgument and DigestMismatch →
//! InvalidArgument (containerd: FailedPrecondition for a commit digest mismatch), TooLarge →
//! ResourceExhausted, Unauthenticated → Unauthenticated, Timeout → DeadlineExceeded,
//! Unavailable → Unavailable, Internal → Internal.

mod content;
mod ctx;
mod download;
mod error;
mod fetcher;
mod lease;
mod pull;
mod tee;
mod unpack;

pub use error::{Error, ErrorKind, Result};
pub use fetcher::{Fetcher, Progress, PullOptions};
pub use pull::pull;
