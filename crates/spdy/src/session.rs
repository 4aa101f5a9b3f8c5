use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

use crate::driver;
use crate::frame::{goaway, Frame, Headers};
use crate::state::{HandleGuard, Shared, StreamState};
use crate::{Error, Stream};

/// Session limits.
#[derive(Debug, Clone)]
pub struct Config {
    /// Streams the peer may have open at once; more are refused with RST_STREAM REFUSED_STREAM.
    pub max_streams: usize,
    /// Receive window per stream: bytes the peer may send that we have not read yet
    /// (announced with SETTINGS_INITIAL_WINDOW_SIZE).
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

/// Handle on a SPDY session; clones share the session. The connection is driven by a spawned
/// task that ends when the peer goes, on a protocol error, after GOAWAY once no stream is
/// left, or when every handle (sessions, `Incoming`, streams) has been dropped.
#[derive(Clone)]
pub struct Session {
    guard: Arc<HandleGuard>,
}

/// Streams opened by the peer, in the order they arrived.
pub struct Incoming {
    rx: mpsc::Receiver<Stream>,
    _guard: Arc<HandleGuard>,
}

impl Session {
    /// Server side over an upgraded connection: incoming streams come from `Incoming`.
    pub fn server<IO>(io: IO, cfg: Config) -> (Session, Incoming)
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Self::start(io, cfg, false)
    }

    /// Client side.
    pub fn client<IO>(io: IO, cfg: Config) -> (Session, Incoming)
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Self::start(io, cfg, true)
    }

    fn start<IO>(io: IO, mut cfg: Config, is_client: bool) -> (Session, Incoming)
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        cfg.max_streams = cfg.max_streams.max(1);
        cfg.initial_window = cfg.initial_window.clamp(1, 0x7fff_ffff);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let shared = Shared::new(cfg.clone(), is_client, out_tx);
        let guard = Arc::new(HandleGuard {
            shared: shared.clone(),
        });
        // Unanswered streams wait here; every one of them counts against max_streams, so this
        // bound is never the one that refuses.
        let (in_tx, in_rx) = mpsc::channel(cfg.max_streams + 1);
        let weak: Weak<HandleGuard> = Arc::downgrade(&guard);
        tokio::spawn(driver::run(io, shared, weak, in_tx, out_rx));
        (
            Session {
                guard: guard.clone(),
            },
            Incoming {
                rx: in_rx,
                _guard: guard,
            },
        )
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.guard.shared
    }

    /// Opens a stream with these headers (SYN_STREAM); resolves when the SYN_REPLY arrives.
    /// With `fin` the stream is half-closed by us from the start.
    pub async fn open(&self, headers: Headers, fin: bool) -> Result<Stream, Error> {
        let shared = self.shared();
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut st = shared.lock();
            if st.closed {
                return Err(Error::Closed);
            }
            if st.going_away {
                return Err(Error::GoingAway);
            }
            let id = st.next_id;
            if id > 0x7fff_ffff {
                return Err(Error::StreamIdsExhausted);
            }
            st.next_id += 2;
            let mut s = StreamState::new(
                false,
                shared.cfg.initial_window as i64,
                st.peer_initial_window,
            );
            s.local_fin = fin;
            s.reply = Some(tx);
            st.streams.insert(id, s);
            shared.send(
                &mut st,
                Frame::SynStream {
                    stream_id: id,
                    associated: 0,
                    priority: 0,
                    slot: 0,
                    fin,
                    unidirectional: false,
                    headers,
                },
            );
            id
        };
        // Owns the stream from here: if this future is dropped, the stream is reset.
        let mut stream = Stream::new(id, Vec::new(), self.guard.clone());
        match rx.await {
            Ok(Ok(h)) => {
                stream.set_headers(h);
                Ok(stream)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Closed),
        }
    }

    /// Round trip of a PING.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let shared = self.shared();
        let (tx, rx) = oneshot::channel();
        {
            let mut st = shared.lock();
            if st.closed {
                return Err(Error::Closed);
            }
            let id = st.next_ping;
            st.next_ping = st.next_ping.wrapping_add(2);
            st.pings.insert(id, (Instant::now(), tx));
            shared.send(&mut st, Frame::Ping { id });
        }
        rx.await.map_err(|_| Error::Closed)
    }

    /// Sends GOAWAY: no new streams either way; the session closes once the open ones end.
    pub async fn goaway(&self) {
        let shared = self.shared();
        {
            let mut st = shared.lock();
            if !st.going_away && !st.closed {
                st.going_away = true;
                let last_good = st.last_peer_id;
                shared.send(
                    &mut st,
                    Frame::GoAway {
                        last_good,
                        status: goaway::OK,
                    },
                );
            }
        }
        shared.wake_driver.notify_one();
    }

    /// Resolves when the connection is closed (peer gone, GOAWAY, error) and the driver task
    /// has released it.
    pub async fn closed(&self) {
        let mut rx = self.shared().closed_tx.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Why the session ended, if it ended on an error.
    pub fn error(&self) -> Option<String> {
        self.shared().lock().error.clone()
    }
}

impl Incoming {
    /// The next stream the peer opened (already answered with SYN_REPLY), or `None` once the
    /// session is closed.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.rx.recv().await
    }
}
