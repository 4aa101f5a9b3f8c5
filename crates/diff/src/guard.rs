//! Bounds on the tar stream, enforced before the `tar` crate buffers anything.
//!
//! The `tar` crate reads PAX headers and GNU long names wholly into memory, with no limit.
//! This reader sits under it, follows the stream's header/body structure exactly as the
//! crate does, and fails the read as soon as an extension header declares more than
//! [`MAX_EXTENSION`] bytes. It also refuses GNU sparse entries, which layers never use.

use std::io::{self, Read};

use crate::error::GuardViolation;

/// Largest PAX header or GNU long name/link we accept.
pub(crate) const MAX_EXTENSION: u64 = 1 << 20;

const BLOCK: u64 = 512;

enum State {
    /// Collecting a 512-byte header; `fill` bytes so far.
    Header { fill: usize },
    /// Inside an entry's data (including padding). `capture` collects a PAX body.
    Body {
        remaining: u64,
        capture: Option<(Vec<u8>, u64)>,
    },
    /// The end-of-archive block was seen (or the stream is already malformed and the tar
    /// crate will report it); the rest passes through untouched.
    Done,
}

pub(crate) struct TarGuard<R> {
    inner: R,
    state: State,
    header: [u8; 512],
    /// PAX `size` waiting for the next file entry, as the tar crate applies it.
    pending_size: Option<u64>,
}

fn violation(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, GuardViolation(msg))
}

impl<R: Read> TarGuard<R> {
    pub fn new(inner: R) -> Self {
        TarGuard {
            inner,
            state: State::Header { fill: 0 },
            header: [0; 512],
            pending_size: None,
        }
    }

    fn feed(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Header { fill } => {
                    let take = (512 - *fill).min(data.len());
                    self.header[*fill..*fill + take].copy_from_slice(&data[..take]);
                    *fill += take;
                    data = &data[take..];
                    if *fill == 512 {
                        self.state = self.on_header()?;
                    }
                }
                State::Body { remaining, capture } => {
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(data.len());
                    if let Some((buf, want)) = capture {
                        let room = usize::try_from(*want)
                            .unwrap_or(0)
                            .saturating_sub(buf.len());
                        buf.extend_from_slice(&data[..take.min(room)]);
                    }
                    *remaining -= take as u64;
                    data = &data[take..];
                    if *remaining == 0 {
                        if let Some((buf, _)) = capture.take() {
                            self.pending_size = pax_size(&buf);
                        }
                        self.state = State::Header { fill: 0 };
                    }
                }
            }
        }
        Ok(())
    }

    /// Decides what follows the header just collected.
    fn on_header(&mut self) -> io::Result<State> {
        if self.header.iter().all(|b| *b == 0) {
            return Ok(State::Done);
        }
        let header = tar::Header::from_byte_slice(&self.header);
        let ty = header.entry_type();
        let Ok(declared) = header.entry_size() else {
            return Ok(State::Done);
        };
        let recognized = header.as_ustar().is_some() || header.as_gnu().is_some();
        let is_extension = ty.is_gnu_longname()
            || ty.is_gnu_longlink()
            || ty.is_pax_local_extensions()
            || ty.is_pax_global_extensions();
        if is_extension && declared > MAX_EXTENSION {
            return Err(violation(format!(
                "tar extension header of {declared} bytes exceeds the {MAX_EXTENSION}-byte limit"
            )));
        }
        if ty.is_gnu_sparse() {
            return Err(violation("GNU sparse tar entries are not supported".into()));
        }
        let mut capture = None;
        let size = if is_extension {
            if recognized && ty.is_pax_local_extensions() {
                capture = Some((Vec::new(), declared));
            } else if !recognized || ty.is_pax_global_extensions() {
                // Returned to the caller as an ordinary entry: ends the pending PAX scope.
                self.pending_size = None;
            }
            declared
        } else {
            self.pending_size.take().unwrap_or(declared)
        };
        let Some(padded) = size.checked_add(BLOCK - 1).map(|s| s & !(BLOCK - 1)) else {
            return Ok(State::Done);
        };
        if padded == 0 {
            if let Some((buf, _)) = capture {
                self.pending_size = pax_size(&buf);
            }
            return Ok(State::Header { fill: 0 });
        }
        Ok(State::Body {
            remaining: padded,
            capture,
        })
    }
}

/// The PAX `size` record, parsed the way the tar crate parses it (first match wins,
/// anything malformed means "no size").
fn pax_size(data: &[u8]) -> Option<u64> {
    for ext in tar::PaxExtensions::new(data) {
        let ext = ext.ok()?;
        if ext.key() != Ok("size") {
            continue;
        }
        return ext.value().ok()?.parse().ok();
    }
    None
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.feed(&buf[..n])?;
        Ok(n)
    }
}
