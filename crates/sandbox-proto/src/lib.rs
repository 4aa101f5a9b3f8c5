//! The protocol between `containerd-shim-berth-sandbox-v2` (the host) and `berth-sandbox-agent`
//! (init inside the sandbox's guest kernel).
//!
//! The channel is a byte stream the guest kernel maps to a host file descriptor (a UML console
//! line in raw mode), never a network. It carries frames:
//!
//! ```text
//! magic "BRTH" (4) | kind (1) | id (4, BE) | length (4, BE) | payload (length bytes)
//! ```
//!
//! The magic on every frame lets a reader notice a channel that lost sync (a kernel message on
//! the line, a torn write) instead of misreading lengths; [`read_frame`] fails on a bad magic.
//!
//! - `Request` (host → guest): `id` is chosen by the host, payload is a JSON [`Request`].
//! - `Response` (guest → host): same `id`, payload is a JSON [`Response`]. Exactly one per request.
//! - `Event` (guest → host): `id` 0, payload is a JSON [`Event`].
//! - `Data`: `id` is a stream id, payload raw bytes. Host → guest for stdin; guest → host for
//!   stdout/stderr (or the terminal).
//! - `Close`: `id` is a stream id, no payload: end of that stream in the sender's direction
//!   (stdin EOF from the host; the process closed stdout/stderr, from the guest).
//!
//! Stream ids are chosen by the host when it creates a process ([`Stdio`]); 0 means "none".
//! The agent sends [`Event::Ready`] once, first, when it has set the line to raw mode; the host
//! sends nothing before it sees it.
//!
//! Flow control, host → guest: UML's console driver stops reading its host descriptor for good
//! once the guest's tty holds about 4 KiB unread (it is throttled and never polls again). So
//! the host keeps at most [`LINE_WINDOW`] bytes written but not yet read by the agent, writing
//! in pieces of at most [`LINE_PIECE`] bytes (a frame may span pieces), and the agent reports
//! with [`Event::Consumed`] the running count of bytes it has read from the line (counted from
//! the first byte after Ready), whenever [`ACK_EVERY`] or more bytes are unreported.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 4] = b"BRTH";
/// Largest payload either side sends or accepts.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Data frames are split at this size so that one process's output cannot hold the line.
pub const DATA_CHUNK: usize = 32 * 1024;
pub const PROTOCOL_VERSION: u32 = 2;
/// Most bytes the host may have written to the line that the agent has not reported read.
/// Below the 3968 bytes at which the guest's tty throttles the console driver.
pub const LINE_WINDOW: u64 = 3072;
/// Largest single write the host makes to the line.
pub const LINE_PIECE: usize = 1024;
/// The agent reports consumption once this many bytes are unreported. With
/// `LINE_PIECE + ACK_EVERY <= LINE_WINDOW` a host waiting for room always gets it.
pub const ACK_EVERY: u64 = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Request = 1,
    Response = 2,
    Event = 3,
    Data = 4,
    Close = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Request,
            2 => Kind::Response,
            3 => Kind::Event,
            4 => Kind::Data,
            5 => Kind::Close,
            _ => return None,
        })
    }
}

/// One frame as it travels on the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub id: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn request(id: u32, req: &Request) -> Frame {
        Frame::json(Kind::Request, id, req)
    }
    pub fn response(id: u32, resp: &Response) -> Frame {
        Frame::json(Kind::Response, id, resp)
    }
    pub fn event(ev: &Event) -> Frame {
        Frame::json(Kind::Event, 0, ev)
    }
    pub fn data(stream: u32, bytes: &[u8]) -> Frame {
        Frame {
            kind: Kind::Data,
            id: stream,
            payload: bytes.to_vec(),
        }
    }
    pub fn close(stream: u32) -> Frame {
        Frame {
            kind: Kind::Close,
            id: stream,
            payload: Vec::new(),
        }
    }

    fn json<T: Serialize>(kind: Kind, id: u32, v: &T) -> Frame {
        // Serialising these plain data types cannot fail (no maps with non-string keys).
        let payload = serde_json::to_vec(v).unwrap_or_default();
        Frame { kind, id, payload }
    }

    /// The payload parsed as JSON (`Request`, `Response` or `Event`).
    pub fn parse<T: for<'de> Deserialize<'de>>(&self) -> io::Result<T> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad {:?} frame payload: {e}", self.kind),
            )
        })
    }

    /// The bytes on the wire: header and payload in one buffer, so a single `write_all` keeps
    /// frames from different writers from interleaving when the caller holds one lock.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + self.payload.len());
        out.extend_from_slice(MAGIC);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }
}

/// Writes one frame (a single `write_all` of the encoded frame, then a flush).
pub fn write_frame<W: Write>(w: &mut W, frame: &Frame) -> io::Result<()> {
    if frame.payload.len() > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "frame payload of {} bytes exceeds {MAX_PAYLOAD}",
                frame.payload.len()
            ),
        ));
    }
    w.write_all(&frame.encode())?;
    w.flush()
}

/// Reads one frame. `UnexpectedEof` at a frame boundary means the peer is gone.
pub fn read_frame<R: Read>(r: &mut R) -> io::Result<Frame> {
    let mut header = [0u8; 13];
    r.read_exact(&mut header)?;
    if &header[..4] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("channel out of sync: header {:02x?}", &header[..4]),
        ));
    }
    let kind = Kind::from_u8(header[4]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown frame kind {}", header[4]),
        )
    })?;
    let id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
    let len = u32::from_be_bytes([header[9], header[10], header[11], header[12]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame payload of {len} bytes exceeds {MAX_PAYLOAD}"),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Frame { kind, id, payload })
}

/// Skips bytes until the next frame magic (used once, at start-up: the line may carry noise
/// written before the agent put it in raw mode). Returns how many bytes were skipped.
pub fn sync_to_magic<R: Read>(r: &mut R) -> io::Result<usize> {
    let mut window = [0u8; 4];
    let mut skipped = 0usize;
    let mut filled = 0usize;
    let mut byte = [0u8; 1];
    loop {
        r.read_exact(&mut byte)?;
        if filled < 4 {
            window[filled] = byte[0];
            filled += 1;
        } else {
            window.rotate_left(1);
            window[3] = byte[0];
            skipped += 1;
        }
        if filled == 4 && &window == MAGIC {
            return Ok(skipped);
        }
    }
}

/// Reads the rest of a frame whose magic [`sync_to_magic`] consumed.
pub fn read_frame_after_magic<R: Read>(r: &mut R) -> io::Result<Frame> {
    let mut chained = io::Cursor::new(MAGIC.to_vec()).chain(r);
    read_frame(&mut chained)
}

/// The stdio of one process: stream ids (0 = not connected) and whether it has a terminal.
/// With `terminal`, the guest's output comes on `stdout` only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stdio {
    #[serde(default)]
    pub stdin: u32,
    #[serde(default)]
    pub stdout: u32,
    #[serde(default)]
    pub stderr: u32,
    #[serde(default)]
    pub terminal: bool,
}

/// A mount for a container, already translated by the host into what the guest can do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Mount {
    /// A host directory the host prepared under the sandbox's directory, reached with `hostfs`.
    /// `path` is relative to the hostfs root the guest kernel was confined to. With `file`, the
    /// mount's source is the file of that name inside the directory (hostfs mounts directories
    /// only), bound onto `destination`.
    Hostfs {
        destination: String,
        path: String,
        #[serde(default)]
        file: Option<String>,
        #[serde(default)]
        readonly: bool,
    },
    /// A filesystem of the guest kernel (`proc`, `sysfs`, `tmpfs`, `devpts`, `mqueue`, ...),
    /// with OCI-style options (`nosuid`, `ro`, `mode=755`, ...).
    Guest {
        destination: String,
        fstype: String,
        source: String,
        #[serde(default)]
        options: Vec<String>,
    },
}

/// An interface the guest configures (the host attached its other end to the pod's network).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Name of the guest's device (`eth0`).
    pub name: String,
    /// Addresses in CIDR form (`10.88.0.5/16`).
    pub addresses: Vec<String>,
    /// Hardware address to set before bringing the device up (`aa:bb:cc:dd:ee:ff`; empty: keep).
    /// The pod's peers know the pod IP at the MAC of the interface CNI made, so the guest takes
    /// that MAC over.
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub mtu: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// `default` or a CIDR.
    pub destination: String,
    /// Empty for an on-link route.
    #[serde(default)]
    pub gateway: String,
    /// The guest device the route goes out of.
    pub device: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Answered with `Response::Info`.
    Info,
    /// Brings up `lo` and the given interfaces, adds the routes, sets the guest's hostname
    /// (empty: leave it).
    ConfigureNetwork {
        interfaces: Vec<Interface>,
        routes: Vec<Route>,
        #[serde(default)]
        hostname: String,
    },
    /// Prepares a container: mounts its root filesystem (`rootfs`, a hostfs path) and `mounts`,
    /// and creates its init process from `process` (an OCI runtime-spec `process` object: args,
    /// env, cwd, user, rlimits, terminal, consoleSize, noNewPrivileges, capabilities ignored) in
    /// new guest mount, PID, UTS and IPC namespaces, stopped before `execve` until
    /// `StartContainer`. Answered with `Response::Pid`.
    CreateContainer {
        id: String,
        rootfs: String,
        #[serde(default)]
        readonly_rootfs: bool,
        mounts: Vec<Mount>,
        process: serde_json::Value,
        #[serde(default)]
        hostname: String,
        stdio: Stdio,
    },
    /// Lets the container's init `execve`. Answered with `Response::Pid`.
    StartContainer { id: String },
    /// Starts a process inside a running container's namespaces and root (an OCI `process`).
    /// Answered with `Response::Pid`.
    Exec {
        id: String,
        exec_id: String,
        process: serde_json::Value,
        stdio: Stdio,
    },
    /// Signals the container's init (`exec_id` empty) or an exec process; with `all`, every
    /// process of the container.
    Signal {
        id: String,
        #[serde(default)]
        exec_id: String,
        signal: u32,
        #[serde(default)]
        all: bool,
    },
    ResizePty {
        id: String,
        #[serde(default)]
        exec_id: String,
        width: u32,
        height: u32,
    },
    /// Guest PIDs of the container's processes. Answered with `Response::Pids`.
    Pids { id: String },
    /// Forgets an exited exec process.
    DeleteProcess { id: String, exec_id: String },
    /// Kills what is left of the container and unmounts everything it had in the guest.
    RemoveContainer { id: String },
    /// Syncs and powers the guest off; the answer may not arrive.
    Shutdown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    NotFound,
    AlreadyExists,
    InvalidArgument,
    FailedPrecondition,
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Info {
        /// The guest kernel's `uname -r`.
        kernel_release: String,
        agent_version: String,
        protocol: u32,
    },
    Pid {
        pid: u32,
    },
    Pids {
        pids: Vec<u32>,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The agent runs and the line is raw: the host may send requests.
    Ready { kernel_release: String },
    /// A container's init (`exec_id` empty) or an exec process ended. `status` is the exit code,
    /// or 128 + the signal that killed it. Sent after the `Close` of the process's output
    /// streams, or after those stayed open 1 s past the exit (a child kept them).
    Exited {
        id: String,
        #[serde(default)]
        exec_id: String,
        pid: u32,
        status: u32,
    },
    /// Something the host should log (the agent has no other way to report).
    Log { message: String },
    /// Bytes the agent has read from the line so far (flow control, see the module docs).
    Consumed { bytes: u64 },
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let req = Request::Signal {
            id: "c1".into(),
            exec_id: String::new(),
            signal: 15,
            all: false,
        };
        let frames = vec![
            Frame::request(7, &req),
            Frame::response(7, &Response::Pid { pid: 42 }),
            Frame::event(&Event::Ready {
                kernel_release: "6.1.176".into(),
            }),
            Frame::data(3, b"hello\0\xff"),
            Frame::close(3),
        ];
        let mut wire = Vec::new();
        for f in &frames {
            write_frame(&mut wire, f).unwrap();
        }
        let mut r = io::Cursor::new(wire);
        for f in &frames {
            assert_eq!(&read_frame(&mut r).unwrap(), f);
        }
        assert_eq!(
            read_frame(&mut r).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(frames[0].parse::<Request>().unwrap(), req);
    }

    #[test]
    fn bad_magic_kind_and_length_are_refused() {
        let mut f = Frame::data(1, b"x").encode();
        f[0] = b'X';
        assert!(read_frame(&mut io::Cursor::new(f)).is_err());
        let mut f = Frame::data(1, b"x").encode();
        f[4] = 99;
        assert!(read_frame(&mut io::Cursor::new(f)).is_err());
        let mut f = Frame::data(1, b"x").encode();
        f[9..13].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_be_bytes());
        assert!(read_frame(&mut io::Cursor::new(f)).is_err());
        let big = Frame::data(1, &vec![0u8; MAX_PAYLOAD + 1]);
        assert!(write_frame(&mut Vec::new(), &big).is_err());
    }

    #[test]
    fn noise_before_the_first_frame_is_skipped() {
        let noise = b"[    0.1] boot noise BRT\r\n";
        let mut wire = noise.to_vec();
        wire.extend(
            Frame::event(&Event::Log {
                message: "m".into(),
            })
            .encode(),
        );
        let mut r = io::Cursor::new(wire);
        assert_eq!(sync_to_magic(&mut r).unwrap(), noise.len());
        let f = read_frame_after_magic(&mut r).unwrap();
        assert_eq!(
            f.parse::<Event>().unwrap(),
            Event::Log {
                message: "m".into()
            }
        );
    }

    #[test]
    fn a_waiting_host_always_gets_room() {
        // Blocked: more than WINDOW - PIECE in flight. Once the agent has read it all, at most
        // ACK_EVERY - 1 stay unreported, and a full piece fits again.
        const { assert!(LINE_PIECE as u64 + ACK_EVERY <= LINE_WINDOW) };
        const { assert!(LINE_WINDOW < 4096 - 128) };
    }

    #[test]
    fn requests_have_a_stable_json_shape() {
        let j = serde_json::to_value(Request::StartContainer { id: "a".into() }).unwrap();
        assert_eq!(j, serde_json::json!({"op": "start_container", "id": "a"}));
        let m = serde_json::to_value(Mount::Hostfs {
            destination: "/etc/hosts".into(),
            path: "/c/a/m0".into(),
            file: Some("hosts".into()),
            readonly: true,
        })
        .unwrap();
        assert_eq!(m["type"], "hostfs");
    }
}
