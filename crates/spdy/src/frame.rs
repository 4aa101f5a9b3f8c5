//! SPDY/3.1 frame layout (section 2.2): control frames carry version 3 and a type; data
//! frames carry a stream id. Both have 8 flag bits and a 24-bit length, which bounds every
//! frame to 16 MiB.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::headers::{HeaderDecoder, HeaderEncoder};
use crate::Error;

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
pub const FLAG_CLEAR_SETTINGS: u8 = 0x01;
/// Largest payload the 24-bit length can express.
pub const MAX_FRAME_PAYLOAD: usize = (1 << 24) - 1;

pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const SETTINGS: u16 = 4;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const HEADERS: u16 = 8;
pub const WINDOW_UPDATE: u16 = 9;

pub const SETTINGS_MAX_CONCURRENT_STREAMS: u32 = 4;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// RST_STREAM status codes.
pub mod status {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
}

/// GOAWAY status codes.
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
}

pub type Headers = Vec<(String, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream_id: u32,
        associated: u32,
        priority: u8,
        slot: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        clear: bool,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A control frame type we do not know (NOOP, CREDENTIAL...): ignored, as the spec asks.
    Unknown {
        kind: u16,
    },
}

const ID_MASK: u32 = 0x7fff_ffff;

fn protocol(msg: String) -> Error {
    Error::Protocol(msg)
}

/// Encodes frames; owns the compression context of our direction.
pub struct FrameWriter {
    headers: HeaderEncoder,
    scratch: Vec<u8>,
}

impl FrameWriter {
    pub fn new() -> Result<Self, Error> {
        Ok(FrameWriter {
            headers: HeaderEncoder::new()?,
            scratch: Vec::new(),
        })
    }

    fn control(dst: &mut BytesMut, kind: u16, flags: u8, payload: &[u8]) -> Result<(), Error> {
        if payload.len() > MAX_FRAME_PAYLOAD {
            return Err(protocol(format!(
                "control frame of {} bytes exceeds 16 MiB",
                payload.len()
            )));
        }
        dst.reserve(8 + payload.len());
        dst.put_u16(0x8000 | VERSION);
        dst.put_u16(kind);
        dst.put_u32(((flags as u32) << 24) | payload.len() as u32);
        dst.put_slice(payload);
        Ok(())
    }

    fn header_frame(
        &mut self,
        dst: &mut BytesMut,
        kind: u16,
        flags: u8,
        prefix: &[u8],
        headers: &Headers,
    ) -> Result<(), Error> {
        let mut p = std::mem::take(&mut self.scratch);
        p.clear();
        p.extend_from_slice(prefix);
        let r = self
            .headers
            .encode(headers, &mut p)
            .and_then(|()| Self::control(dst, kind, flags, &p));
        self.scratch = p;
        r
    }

    pub fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
        let fin = |f: bool| if f { FLAG_FIN } else { 0 };
        match frame {
            Frame::Data {
                stream_id,
                fin: f,
                data,
            } => {
                if data.len() > MAX_FRAME_PAYLOAD {
                    return Err(protocol(format!(
                        "data frame of {} bytes exceeds 16 MiB",
                        data.len()
                    )));
                }
                dst.reserve(8 + data.len());
                dst.put_u32(stream_id & ID_MASK);
                dst.put_u32(((fin(*f) as u32) << 24) | data.len() as u32);
                dst.put_slice(data);
                Ok(())
            }
            Frame::SynStream {
                stream_id,
                associated,
                priority,
                slot,
                fin: f,
                unidirectional,
                headers,
            } => {
                let mut prefix = [0u8; 10];
                prefix[..4].copy_from_slice(&(stream_id & ID_MASK).to_be_bytes());
                prefix[4..8].copy_from_slice(&(associated & ID_MASK).to_be_bytes());
                prefix[8] = (priority & 0x7) << 5;
                prefix[9] = *slot;
                let flags = fin(*f)
                    | if *unidirectional {
                        FLAG_UNIDIRECTIONAL
                    } else {
                        0
                    };
                self.header_frame(dst, SYN_STREAM, flags, &prefix, headers)
            }
            Frame::SynReply {
                stream_id,
                fin: f,
                headers,
            } => self.header_frame(
                dst,
                SYN_REPLY,
                fin(*f),
                &(stream_id & ID_MASK).to_be_bytes(),
                headers,
            ),
            Frame::Headers {
                stream_id,
                fin: f,
                headers,
            } => self.header_frame(
                dst,
                HEADERS,
                fin(*f),
                &(stream_id & ID_MASK).to_be_bytes(),
                headers,
            ),
            Frame::RstStream { stream_id, status } => {
                Self::control(dst, RST_STREAM, 0, &pair(stream_id & ID_MASK, *status))
            }
            Frame::Settings { clear, entries } => {
                let mut p = Vec::with_capacity(4 + 8 * entries.len());
                p.extend_from_slice(&(entries.len() as u32).to_be_bytes());
                for e in entries {
                    p.extend_from_slice(
                        &(((e.flags as u32) << 24) | (e.id & 0x00ff_ffff)).to_be_bytes(),
                    );
                    p.extend_from_slice(&e.value.to_be_bytes());
                }
                Self::control(
                    dst,
                    SETTINGS,
                    if *clear { FLAG_CLEAR_SETTINGS } else { 0 },
                    &p,
                )
            }
            Frame::Ping { id } => Self::control(dst, PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good, status } => {
                Self::control(dst, GOAWAY, 0, &pair(last_good & ID_MASK, *status))
            }
            Frame::WindowUpdate { stream_id, delta } => Self::control(
                dst,
                WINDOW_UPDATE,
                0,
                &pair(stream_id & ID_MASK, delta & ID_MASK),
            ),
            Frame::Unknown { kind } => Self::control(dst, *kind, 0, &[]),
        }
    }
}

fn pair(a: u32, b: u32) -> [u8; 8] {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&a.to_be_bytes());
    p[4..].copy_from_slice(&b.to_be_bytes());
    p
}

/// Decodes frames; owns the decompression context of the peer's direction.
#[derive(Default)]
pub struct FrameReader {
    headers: HeaderDecoder,
}

impl FrameReader {
    /// Takes one whole frame off `src`, or returns `None` when more bytes are needed.
    /// Errors are fatal to the session: after a bad header block the zlib context is lost.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if src.len() < 8 {
            return Ok(None);
        }
        let word = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        let flags = src[4];
        let len = u32::from_be_bytes([0, src[5], src[6], src[7]]) as usize;
        if src.len() < 8 + len {
            src.reserve(8 + len - src.len());
            return Ok(None);
        }
        src.advance(8);
        let mut p = src.split_to(len).freeze();
        if word & 0x8000_0000 == 0 {
            let stream_id = word & ID_MASK;
            if stream_id == 0 {
                return Err(protocol("data frame on stream 0".into()));
            }
            return Ok(Some(Frame::Data {
                stream_id,
                fin: flags & FLAG_FIN != 0,
                data: p,
            }));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        let kind = (word & 0xffff) as u16;
        if version != VERSION {
            return Err(protocol(format!(
                "control frame version {version}, only 3 is spoken"
            )));
        }
        let need = |n: usize, what: &str| -> Result<(), Error> {
            if len < n {
                Err(protocol(format!(
                    "{what} frame of {len} bytes, needs at least {n}"
                )))
            } else {
                Ok(())
            }
        };
        let exact = |n: usize, what: &str| -> Result<(), Error> {
            if len != n {
                Err(protocol(format!(
                    "{what} frame of {len} bytes, must be {n}"
                )))
            } else {
                Ok(())
            }
        };
        let fin = flags & FLAG_FIN != 0;
        let frame = match kind {
            SYN_STREAM => {
                need(10, "SYN_STREAM")?;
                let stream_id = p.get_u32() & ID_MASK;
                let associated = p.get_u32() & ID_MASK;
                let priority = p.get_u8() >> 5;
                let slot = p.get_u8();
                let headers = self.headers.decode(&p)?;
                Frame::SynStream {
                    stream_id,
                    associated,
                    priority,
                    slot,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers,
                }
            }
            SYN_REPLY | HEADERS => {
                need(
                    4,
                    if kind == SYN_REPLY {
                        "SYN_REPLY"
                    } else {
                        "HEADERS"
                    },
                )?;
                let stream_id = p.get_u32() & ID_MASK;
                let headers = self.headers.decode(&p)?;
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                exact(8, "RST_STREAM")?;
                Frame::RstStream {
                    stream_id: p.get_u32() & ID_MASK,
                    status: p.get_u32(),
                }
            }
            SETTINGS => {
                need(4, "SETTINGS")?;
                let n = p.get_u32() as usize;
                if n.checked_mul(8) != Some(len - 4) {
                    return Err(protocol(format!(
                        "SETTINGS frame of {len} bytes announces {n} entries"
                    )));
                }
                let entries = (0..n)
                    .map(|_| {
                        let w = p.get_u32();
                        Setting {
                            flags: (w >> 24) as u8,
                            id: w & 0x00ff_ffff,
                            value: p.get_u32(),
                        }
                    })
                    .collect();
                Frame::Settings {
                    clear: flags & FLAG_CLEAR_SETTINGS != 0,
                    entries,
                }
            }
            PING => {
                exact(4, "PING")?;
                Frame::Ping { id: p.get_u32() }
            }
            GOAWAY => {
                // SPDY/2 GOAWAY had no status; accept both lengths.
                if len != 8 && len != 4 {
                    return Err(protocol(format!("GOAWAY frame of {len} bytes, must be 8")));
                }
                let last_good = p.get_u32() & ID_MASK;
                let status = if len == 8 { p.get_u32() } else { goaway::OK };
                Frame::GoAway { last_good, status }
            }
            WINDOW_UPDATE => {
                exact(8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate {
                    stream_id: p.get_u32() & ID_MASK,
                    delta: p.get_u32() & ID_MASK,
                }
            }
            other => Frame::Unknown { kind: other },
        };
        Ok(Some(frame))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn h(n: &str, v: &str) -> (String, String) {
        (n.to_string(), v.to_string())
    }

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::Data {
                stream_id: 1,
                fin: false,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 0x7fff_ffff,
                fin: true,
                data: Bytes::new(),
            },
            Frame::SynStream {
                stream_id: 3,
                associated: 0,
                priority: 7,
                slot: 0,
                fin: false,
                unidirectional: false,
                headers: vec![h("streamtype", "stdin")],
            },
            Frame::SynStream {
                stream_id: 5,
                associated: 3,
                priority: 0,
                slot: 2,
                fin: true,
                unidirectional: true,
                headers: vec![h("port", "80"), h("requestid", "1")],
            },
            Frame::SynReply {
                stream_id: 3,
                fin: false,
                headers: vec![],
            },
            Frame::SynReply {
                stream_id: 2,
                fin: true,
                headers: vec![h("status", "200")],
            },
            Frame::RstStream {
                stream_id: 9,
                status: status::CANCEL,
            },
            Frame::Settings {
                clear: true,
                entries: vec![
                    Setting {
                        flags: 0,
                        id: SETTINGS_INITIAL_WINDOW_SIZE,
                        value: 1 << 20,
                    },
                    Setting {
                        flags: 1,
                        id: SETTINGS_MAX_CONCURRENT_STREAMS,
                        value: 64,
                    },
                ],
            },
            Frame::Settings {
                clear: false,
                entries: vec![],
            },
            Frame::Ping { id: 0xffff_fffe },
            Frame::GoAway {
                last_good: 41,
                status: goaway::PROTOCOL_ERROR,
            },
            Frame::Headers {
                stream_id: 7,
                fin: true,
                headers: vec![h("a", "1")],
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 0x7fff_ffff,
            },
            Frame::WindowUpdate {
                stream_id: 11,
                delta: 1,
            },
            Frame::Unknown { kind: 5 },
        ]
    }

    #[test]
    fn every_frame_type_round_trips_even_split_byte_by_byte() {
        let mut w = FrameWriter::new().unwrap();
        let mut wire = BytesMut::new();
        let frames = all_frames();
        for f in &frames {
            w.encode(f, &mut wire).unwrap();
        }
        let mut r = FrameReader::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(f) = r.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(got, frames);
    }

    #[test]
    fn wire_layout_matches_spec() {
        let mut w = FrameWriter::new().unwrap();
        let mut wire = BytesMut::new();
        w.encode(&Frame::Ping { id: 1 }, &mut wire).unwrap();
        assert_eq!(
            &wire[..],
            &[0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1]
        );
        wire.clear();
        w.encode(
            &Frame::Data {
                stream_id: 2,
                fin: true,
                data: Bytes::from_static(b"x"),
            },
            &mut wire,
        )
        .unwrap();
        assert_eq!(&wire[..], &[0, 0, 0, 2, 0x01, 0, 0, 1, b'x']);
        wire.clear();
        w.encode(
            &Frame::RstStream {
                stream_id: 3,
                status: status::REFUSED_STREAM,
            },
            &mut wire,
        )
        .unwrap();
        assert_eq!(
            &wire[..],
            &[0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 3]
        );
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let cases: Vec<Vec<u8>> = vec![
            vec![0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1], // version 2
            vec![0x80, 0x03, 0x00, 0x06, 0, 0, 0, 3, 0, 0, 1],    // short PING
            vec![0x80, 0x03, 0x00, 0x03, 0, 0, 0, 4, 0, 0, 0, 1], // short RST
            vec![0x80, 0x03, 0x00, 0x04, 0, 0, 0, 4, 0, 0, 0, 9], // SETTINGS count lies
            vec![0x80, 0x03, 0x00, 0x01, 0, 0, 0, 2, 0, 1],       // short SYN_STREAM
            vec![
                0x80, 0x03, 0x00, 0x01, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4,
            ], // bad zlib
            vec![0, 0, 0, 0, 0, 0, 0, 1, 9],                      // data on stream 0
            vec![0x80, 0x03, 0x00, 0x09, 0, 0, 0, 4, 0, 0, 0, 1], // short WINDOW_UPDATE
        ];
        for c in cases {
            let mut r = FrameReader::default();
            let mut buf = BytesMut::from(&c[..]);
            assert!(r.decode(&mut buf).is_err(), "{c:?} accepted");
        }
    }

    #[test]
    fn oversized_data_is_refused_when_encoding() {
        let mut w = FrameWriter::new().unwrap();
        let big = Bytes::from(vec![0u8; MAX_FRAME_PAYLOAD + 1]);
        let mut wire = BytesMut::new();
        assert!(w
            .encode(
                &Frame::Data {
                    stream_id: 1,
                    fin: false,
                    data: big
                },
                &mut wire
            )
            .is_err());
    }
}
