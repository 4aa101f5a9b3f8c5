use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::{Error, Stream};

/// Session limits.
#[derive(Debug, Clone)]
pub struct Config {
    /// Streams the peer may have open at once; more are refused with RST_STREAM REFUSED_STREAM.
    pub max_streams: usize,
    /// Receive window per stream (bytes the peer may send before we have read them).
    pub initial_window: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_streams: 64,
            initial_window: 64 * 1024,
        }
    }
}

/// Handle on a SPDY session; clones share the session.
#[derive(Clone)]
pub struct Session {}

/// Streams opened by the peer.
pub struct Incoming {}

impl Session {
    pub fn server<IO>(_io: IO, _cfg: Config) -> (Session, Incoming)
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        (Session {}, Incoming {})
    }

    pub fn client<IO>(_io: IO, _cfg: Config) -> (Session, Incoming)
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        (Session {}, Incoming {})
    }

    pub async fn open(&self, _headers: Vec<(String, String)>, _fin: bool) -> Result<Stream, Error> {
        Err(Error::Closed)
    }

    pub async fn ping(&self) -> Result<Duration, Error> {
        Err(Error::Closed)
    }

    pub async fn goaway(&self) {}

    pub async fn closed(&self) {}
}

impl Incoming {
    pub async fn accept(&mut self) -> Option<Stream> {
        None
    }
}
