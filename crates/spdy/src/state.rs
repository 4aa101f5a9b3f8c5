//! Session state shared by the handles and the driver task, behind one mutex.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::frame::{Frame, Headers};
use crate::session::Config;
use crate::Error;

/// Frame payload we cut writes into.
pub const MAX_DATA_CHUNK: usize = 32 * 1024;
/// DATA bytes queued for the socket across the session before writers wait.
pub const MAX_QUEUED_DATA: usize = 256 * 1024;
/// Control frames queued for the socket before we call the peer abusive (it sends PINGs or
/// SYN_STREAMs but does not read our answers).
pub const MAX_QUEUED_CONTROL: usize = 4096;
/// The window both sides start with (SPDY/3.1 section 2.6.8).
pub const DEFAULT_WINDOW: i64 = 64 * 1024;
pub const MAX_WINDOW: i64 = 0x7fff_ffff;

pub enum Out {
    Frame(Frame),
    /// Flush what is queued, then close the connection.
    Shutdown,
}

pub type ReplyTx = oneshot::Sender<Result<Headers, Error>>;

pub struct StreamState {
    pub recv: VecDeque<Bytes>,
    pub recv_len: usize,
    pub remote_fin: bool,
    pub local_fin: bool,
    /// Set once a RST_STREAM went either way (the status), after which the stream is dead.
    pub reset: Option<u32>,
    pub reset_by_peer: bool,
    pub read_waker: Option<Waker>,
    pub write_waker: Option<Waker>,
    /// Bytes the peer may still send before a WINDOW_UPDATE.
    pub recv_window: i64,
    /// Bytes read by the application and not yet returned to the peer.
    pub recv_credit: i64,
    pub send_window: i64,
    /// Pending open(): the SYN_REPLY (or reset) goes here.
    pub reply: Option<ReplyTx>,
    pub peer_initiated: bool,
}

impl StreamState {
    pub fn new(peer_initiated: bool, recv_window: i64, send_window: i64) -> Self {
        StreamState {
            recv: VecDeque::new(),
            recv_len: 0,
            remote_fin: false,
            local_fin: false,
            reset: None,
            reset_by_peer: false,
            read_waker: None,
            write_waker: None,
            recv_window,
            recv_credit: 0,
            send_window,
            reply: None,
            peer_initiated,
        }
    }

    /// Neither half can carry data any more.
    pub fn finished(&self) -> bool {
        self.reset.is_some() || (self.local_fin && self.remote_fin)
    }

    pub fn wake(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

pub struct State {
    pub streams: HashMap<u32, StreamState>,
    pub next_id: u32,
    pub next_ping: u32,
    pub pings: HashMap<u32, (Instant, oneshot::Sender<Duration>)>,
    /// Window a new stream starts with for sending (the peer's SETTINGS_INITIAL_WINDOW_SIZE).
    pub peer_initial_window: i64,
    pub send_window: i64,
    pub recv_window: i64,
    pub recv_credit: i64,
    /// Session receive window we keep topping up to.
    pub session_window: i64,
    /// Whether the peer does SPDY/3.1 flow control (it sent SETTINGS or WINDOW_UPDATE).
    /// moby/spdystream (kubectl, the kubelet) does neither: it neither grants window nor
    /// honours ours, so we do not wait for grants it will never send.
    pub peer_flow_control: bool,
    pub queued_data: usize,
    pub queued_control: usize,
    pub queue_waiters: Vec<Waker>,
    pub last_peer_id: u32,
    pub going_away: bool,
    pub closed: bool,
    pub handles_gone: bool,
    pub error: Option<String>,
}

pub struct Shared {
    pub state: Mutex<State>,
    pub out: mpsc::UnboundedSender<Out>,
    pub closed_tx: watch::Sender<bool>,
    /// Wakes the driver to re-check whether the session should end.
    pub wake_driver: Notify,
    /// Wakes the reader when a stream's buffer drained (backpressure for peers without flow control).
    pub space: Notify,
    pub cfg: Config,
    pub is_client: bool,
}

impl Shared {
    pub fn new(cfg: Config, is_client: bool, out: mpsc::UnboundedSender<Out>) -> Arc<Self> {
        let session_window = (cfg.initial_window as i64)
            .saturating_mul(cfg.max_streams.max(1) as i64)
            .clamp(DEFAULT_WINDOW, MAX_WINDOW);
        let (closed_tx, _) = watch::channel(false);
        Arc::new(Shared {
            state: Mutex::new(State {
                streams: HashMap::new(),
                next_id: if is_client { 1 } else { 2 },
                next_ping: if is_client { 1 } else { 2 },
                pings: HashMap::new(),
                peer_initial_window: DEFAULT_WINDOW,
                send_window: DEFAULT_WINDOW,
                recv_window: session_window,
                recv_credit: 0,
                session_window,
                peer_flow_control: false,
                queued_data: 0,
                queued_control: 0,
                queue_waiters: Vec::new(),
                last_peer_id: 0,
                going_away: false,
                closed: false,
                handles_gone: false,
                error: None,
            }),
            out,
            closed_tx,
            wake_driver: Notify::new(),
            space: Notify::new(),
            cfg,
            is_client,
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame for the writer, accounting for it so senders can be held back.
    pub fn send(&self, st: &mut State, frame: Frame) {
        if st.closed {
            return;
        }
        match &frame {
            Frame::Data { data, .. } => st.queued_data += data.len(),
            _ => st.queued_control += 1,
        }
        let _ = self.out.send(Out::Frame(frame));
    }

    /// Whether ids of this parity are the peer's to open.
    pub fn is_peer_id(&self, id: u32) -> bool {
        id.is_multiple_of(2) == self.is_client
    }

    /// Returns read bytes to the peer as WINDOW_UPDATEs once half a window has been consumed.
    pub fn credit(&self, st: &mut State, id: Option<u32>, n: usize) {
        let n = n as i64;
        st.recv_credit += n;
        if st.recv_credit >= st.session_window / 2 {
            let delta = st.recv_credit;
            st.recv_credit = 0;
            st.recv_window += delta;
            self.send(
                st,
                Frame::WindowUpdate {
                    stream_id: 0,
                    delta: delta as u32,
                },
            );
        }
        let half = self.cfg.initial_window as i64 / 2;
        let Some(id) = id else { return };
        let delta = match st.streams.get_mut(&id) {
            Some(s) => {
                s.recv_credit += n;
                if s.recv_credit >= half.max(1) && !s.remote_fin && s.reset.is_none() {
                    let delta = s.recv_credit;
                    s.recv_credit = 0;
                    s.recv_window += delta;
                    delta
                } else {
                    0
                }
            }
            None => 0,
        };
        if delta > 0 {
            self.send(
                st,
                Frame::WindowUpdate {
                    stream_id: id,
                    delta: delta as u32,
                },
            );
        }
    }

    /// Streams that still count against limits and keep a going-away session alive.
    pub fn open_streams(st: &State, peer_initiated: bool) -> usize {
        st.streams
            .values()
            .filter(|s| s.peer_initiated == peer_initiated && !s.finished())
            .count()
    }

    pub fn should_close(st: &State) -> bool {
        st.handles_gone || (st.going_away && st.streams.values().all(|s| s.finished()))
    }
}

/// Held by every user-facing handle; when the last one goes, nobody can use the session and
/// the driver ends it.
pub struct HandleGuard {
    pub shared: Arc<Shared>,
}

impl Drop for HandleGuard {
    fn drop(&mut self) {
        self.shared.lock().handles_gone = true;
        self.shared.wake_driver.notify_one();
    }
}
