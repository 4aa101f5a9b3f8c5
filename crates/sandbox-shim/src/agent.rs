//! The host end of the line to the guest agent: requests with answers, process output into
//! the shim's FIFOs, stdin out to the guest, and the agent's events.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_sandbox_proto::{self as proto, Event, Frame, Kind, Request, Response};

use crate::error::{Error, Result};

type EventHandler = Box<dyn Fn(Event) + Send + Sync>;

/// How long a writer waits for the agent to read what is in flight before the line is
/// declared stuck.
const LINE_STALL: Duration = Duration::from_secs(30);

/// The host → guest line with the protocol's flow control: at most `LINE_WINDOW` bytes
/// written and not yet reported read by the agent, in pieces of at most `LINE_PIECE`.
struct LineWriter {
    file: File,
    sent: u64,
}

/// What the agent reported read (`Event::Consumed`), and whether the line still lives.
#[derive(Default)]
struct Credit {
    state: Mutex<(u64, bool)>,
    cv: std::sync::Condvar,
}

impl Credit {
    fn consumed(&self, bytes: u64) {
        if let Ok(mut g) = self.state.lock() {
            g.0 = g.0.max(bytes);
        }
        self.cv.notify_all();
    }

    fn close(&self) {
        if let Ok(mut g) = self.state.lock() {
            g.1 = true;
        }
        self.cv.notify_all();
    }

    /// Waits until `need` more bytes fit in the window after `sent`.
    fn wait_room(&self, sent: u64, need: u64) -> Result<()> {
        let deadline = std::time::Instant::now() + LINE_STALL;
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if g.1 {
                return Err(gone());
            }
            if sent + need - g.0.min(sent) <= proto::LINE_WINDOW {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Error::Other(format!(
                    "the sandbox agent stopped reading its line ({} bytes in flight for {}s)",
                    sent - g.0.min(sent),
                    LINE_STALL.as_secs()
                )));
            }
            g = self
                .cv
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

pub struct Agent {
    writer: Mutex<LineWriter>,
    credit: Credit,
    next_id: AtomicU32,
    next_stream: AtomicU32,
    pending: Mutex<HashMap<u32, Sender<Response>>>,
    outputs: Mutex<HashMap<u32, File>>,
    alive: AtomicBool,
    on_event: EventHandler,
    pub kernel_release: String,
}

fn gone() -> Error {
    Error::FailedPrecondition("the sandbox guest is gone".into())
}

impl Agent {
    /// Waits for the agent's `Ready` (within `timeout`), then serves the line from a thread.
    /// `on_event` hears the agent's events, and `Event::Log` with an empty message when the
    /// line ends (the guest is gone).
    pub fn connect(
        mut from_guest: File,
        to_guest: File,
        timeout: Duration,
        on_event: EventHandler,
    ) -> Result<Arc<Agent>> {
        let (tx, rx) = channel();
        let mut reader = from_guest
            .try_clone()
            .map_err(Error::io("dup guest line"))?;
        std::thread::spawn(move || {
            let first = proto::sync_to_magic(&mut reader)
                .and_then(|_| proto::read_frame_after_magic(&mut reader));
            let _ = tx.send((first, reader));
        });
        let (first, _) = match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(_) => {
                return Err(Error::Other(format!(
                    "the sandbox guest did not start its agent within {}s",
                    timeout.as_secs()
                )))
            }
        };
        let first = first.map_err(|e| {
            Error::Other(format!(
                "the sandbox guest stopped before its agent was ready: {e}"
            ))
        })?;
        let release = match first.parse::<Event>() {
            Ok(Event::Ready { kernel_release }) if first.kind == Kind::Event => kernel_release,
            other => {
                return Err(Error::Other(format!(
                    "the sandbox agent's first frame was not Ready: {other:?}"
                )))
            }
        };
        let agent = Arc::new(Agent {
            writer: Mutex::new(LineWriter {
                file: to_guest,
                sent: 0,
            }),
            credit: Credit::default(),
            next_id: AtomicU32::new(1),
            next_stream: AtomicU32::new(1),
            pending: Mutex::new(HashMap::new()),
            outputs: Mutex::new(HashMap::new()),
            alive: AtomicBool::new(true),
            on_event,
            kernel_release: release,
        });
        let a = agent.clone();
        std::thread::spawn(move || a.serve(&mut from_guest));
        Ok(agent)
    }

    fn serve(&self, line: &mut File) {
        loop {
            let frame = match proto::read_frame(line) {
                Ok(f) => f,
                Err(e) => {
                    if e.kind() != std::io::ErrorKind::UnexpectedEof {
                        log::warn!("sandbox line: {e}");
                    }
                    break;
                }
            };
            match frame.kind {
                Kind::Response => {
                    let tx = self
                        .pending
                        .lock()
                        .ok()
                        .and_then(|mut p| p.remove(&frame.id));
                    match (tx, frame.parse::<Response>()) {
                        (Some(tx), Ok(r)) => {
                            let _ = tx.send(r);
                        }
                        (_, Err(e)) => log::warn!("sandbox agent answer: {e}"),
                        (None, _) => {
                            log::warn!("sandbox agent answered unknown request {}", frame.id)
                        }
                    }
                }
                Kind::Event => match frame.parse::<Event>() {
                    Ok(Event::Consumed { bytes }) => self.credit.consumed(bytes),
                    Ok(Event::Log { message }) => log::info!("sandbox agent: {message}"),
                    Ok(ev) => (self.on_event)(ev),
                    Err(e) => log::warn!("sandbox agent event: {e}"),
                },
                Kind::Data => {
                    let mut outs = self.outputs.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(f) = outs.get_mut(&frame.id) {
                        if let Err(e) = f.write_all(&frame.payload) {
                            log::warn!("stream {}: {e}", frame.id);
                            outs.remove(&frame.id);
                        }
                    }
                }
                Kind::Close => {
                    if let Ok(mut outs) = self.outputs.lock() {
                        outs.remove(&frame.id);
                    }
                }
                Kind::Request => log::warn!("sandbox agent sent a request; ignored"),
            }
        }
        self.alive.store(false, Ordering::SeqCst);
        self.credit.close();
        if let Ok(mut p) = self.pending.lock() {
            p.clear();
        }
        if let Ok(mut o) = self.outputs.lock() {
            o.clear();
        }
        (self.on_event)(Event::Log {
            message: String::new(),
        });
    }

    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Writes one frame, piece by piece as the agent makes room (frames never interleave:
    /// the writer lock is held for the whole frame).
    fn send(&self, frame: &Frame) -> Result<()> {
        let bytes = frame.encode();
        if frame.payload.len() > proto::MAX_PAYLOAD {
            return Err(Error::InvalidArgument(format!(
                "a {} byte message exceeds the sandbox line's limit",
                frame.payload.len()
            )));
        }
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        for piece in bytes.chunks(proto::LINE_PIECE) {
            self.credit.wait_room(w.sent, piece.len() as u64)?;
            w.file.write_all(piece).map_err(|_| gone())?;
            w.sent += piece.len() as u64;
        }
        Ok(())
    }

    /// Sends a request and waits for its answer; agent errors become shim errors with the
    /// matching code.
    pub fn call(&self, req: &Request, timeout: Duration) -> Result<Response> {
        if !self.alive() {
            return Err(gone());
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id, tx);
        }
        self.send(&Frame::request(id, req))?;
        let resp = rx.recv_timeout(timeout).map_err(|e| {
            if let Ok(mut p) = self.pending.lock() {
                p.remove(&id);
            }
            match e {
                std::sync::mpsc::RecvTimeoutError::Timeout => Error::Other(format!(
                    "the sandbox agent did not answer within {}s",
                    timeout.as_secs()
                )),
                std::sync::mpsc::RecvTimeoutError::Disconnected => gone(),
            }
        })?;
        match resp {
            Response::Error { code, message } => Err(match code {
                proto::ErrorCode::NotFound => Error::NotFound(message),
                proto::ErrorCode::AlreadyExists => Error::AlreadyExists(message),
                proto::ErrorCode::InvalidArgument => Error::InvalidArgument(message),
                proto::ErrorCode::FailedPrecondition => Error::FailedPrecondition(message),
                proto::ErrorCode::Internal => Error::Other(message),
            }),
            r => Ok(r),
        }
    }

    /// A new stream id for a process's stdio.
    pub fn stream_id(&self) -> u32 {
        self.next_stream.fetch_add(1, Ordering::SeqCst)
    }

    /// Output the guest sends on `stream` goes to `sink` until the guest closes the stream.
    pub fn attach_output(&self, stream: u32, sink: File) {
        if let Ok(mut o) = self.outputs.lock() {
            o.insert(stream, sink);
        }
    }

    pub fn detach_output(&self, stream: u32) {
        if let Ok(mut o) = self.outputs.lock() {
            o.remove(&stream);
        }
    }

    /// Copies `src` (the process's stdin pipe) to the guest, then closes the stream.
    pub fn pump_input(self: &Arc<Agent>, stream: u32, mut src: File) {
        let agent = self.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; proto::DATA_CHUNK];
            loop {
                match src.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if agent.send(&Frame::data(stream, &buf[..n])).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = agent.send(&Frame::close(stream));
        });
    }
}
