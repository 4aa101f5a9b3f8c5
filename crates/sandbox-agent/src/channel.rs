//! The line to the host: a UML console (`/dev/tty1`) in raw mode carrying protocol frames.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use berth_sandbox_proto::{write_frame, Event, Frame, Response, DATA_CHUNK};
use nix::sys::termios::{self, SetArg, SpecialCharacterIndices};

use crate::sys;

/// Opens the console line and makes it raw (no echo, no line editing, no CR/LF mapping, no
/// flow control), so every byte passes unchanged in both directions. Returns a reader and
/// the writer (two descriptors of the same line).
pub fn open_line(path: &str) -> io::Result<(File, File)> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)?;
    let mut t = termios::tcgetattr(&f).map_err(io::Error::from)?;
    termios::cfmakeraw(&mut t);
    t.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
    t.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
    termios::tcsetattr(&f, SetArg::TCSANOW, &t).map_err(io::Error::from)?;
    let reader = f.try_clone()?;
    Ok((reader, f))
}

/// Bytes waiting in the guest's tty at which its line discipline throttles the console
/// driver (N_TTY_BUF_SIZE 4096 less the 128-byte threshold).
pub const THROTTLE_MARK: usize = 4096 - 128;

/// Reads the line in large reads (so that one read takes everything the tty holds) and
/// calls `on_throttle` once the first time a read shows the tty held enough to throttle.
///
/// Why it matters: UML's console driver stops polling its host descriptor when throttled and
/// does not resume when unthrottled; it only drains what the host had already written. After
/// that, bytes the host writes later are never read. The host must keep less than
/// THROTTLE_MARK bytes unread in flight; this reader can only tell it that it did not.
///
/// It also counts what it reads and calls `on_consumed(total)` whenever `ACK_EVERY` or more
/// bytes are unreported: the host's flow control waits for these reports.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    on_throttle: Option<Box<dyn FnOnce(usize) + Send>>,
    on_consumed: Box<dyn FnMut(u64) + Send>,
    total: u64,
    reported: u64,
}

impl<R: Read> LineReader<R> {
    pub fn new(
        inner: R,
        on_throttle: Box<dyn FnOnce(usize) + Send>,
        on_consumed: Box<dyn FnMut(u64) + Send>,
    ) -> LineReader<R> {
        LineReader {
            inner,
            buf: vec![0u8; 64 * 1024],
            pos: 0,
            len: 0,
            on_throttle: Some(on_throttle),
            on_consumed,
            total: 0,
            reported: 0,
        }
    }
}

impl<R: Read> Read for LineReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.len {
            let n = self.inner.read(&mut self.buf)?;
            if n >= THROTTLE_MARK {
                if let Some(f) = self.on_throttle.take() {
                    f(n);
                }
            }
            self.total += n as u64;
            if self.total - self.reported >= berth_sandbox_proto::ACK_EVERY {
                self.reported = self.total;
                (self.on_consumed)(self.total);
            }
            self.pos = 0;
            self.len = n;
        }
        let n = out.len().min(self.len - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The writing side, shared by every thread: one frame per `write_all`, under one lock.
pub struct Channel {
    line: Mutex<Box<dyn Write + Send>>,
}

impl Channel {
    pub fn new(line: Box<dyn Write + Send>) -> Channel {
        Channel {
            line: Mutex::new(line),
        }
    }

    /// Sends one frame. A line that cannot be written to is a host that is gone: power off.
    pub fn send(&self, frame: &Frame) {
        let mut line = self.line.lock().unwrap_or_else(|e| e.into_inner());
        if write_frame(&mut *line, frame).is_err() {
            sys::power_off();
        }
    }

    /// A last word that must not wait for the line (from a panic hook: the panicking thread
    /// may hold the lock itself).
    pub fn try_log(&self, message: String) {
        if let Ok(mut line) = self.line.try_lock() {
            let _ = write_frame(&mut *line, &Frame::event(&Event::Log { message }));
        }
    }

    pub fn respond(&self, id: u32, resp: &Response) {
        self.send(&Frame::response(id, resp));
    }

    pub fn event(&self, ev: &Event) {
        self.send(&Frame::event(ev));
    }

    pub fn log(&self, message: impl Into<String>) {
        self.event(&Event::Log {
            message: message.into(),
        });
    }

    /// Output of a process, split so that one stream cannot hold the line.
    pub fn data(&self, stream: u32, bytes: &[u8]) {
        for chunk in bytes.chunks(DATA_CHUNK) {
            self.send(&Frame::data(stream, chunk));
        }
    }

    pub fn close(&self, stream: u32) {
        self.send(&Frame::close(stream));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use berth_sandbox_proto::{read_frame, Kind};
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Hands out its data in the given read sizes.
    struct Reads(Vec<Vec<u8>>);
    impl Read for Reads {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let r = self.0.remove(0);
            out[..r.len()].copy_from_slice(&r);
            Ok(r.len())
        }
    }

    #[test]
    fn line_reader_passes_bytes_and_notices_a_full_tty() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = Arc::clone(&seen);
        let reads = Reads(vec![
            vec![1; 10],
            vec![2; THROTTLE_MARK],
            vec![3; THROTTLE_MARK + 1],
        ]);
        let mut r = LineReader::new(
            reads,
            Box::new(move |n| s2.lock().unwrap().push(n)),
            Box::new(|_| {}),
        );
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 10 + THROTTLE_MARK * 2 + 1);
        assert_eq!(&all[..10], &[1; 10]);
        assert_eq!(all[10], 2);
        assert_eq!(*all.last().unwrap(), 3);
        assert_eq!(*seen.lock().unwrap(), vec![THROTTLE_MARK], "told once");
    }

    #[test]
    fn line_reader_reports_what_it_read_every_ack_every_bytes() {
        let acks = Arc::new(Mutex::new(Vec::new()));
        let a2 = Arc::clone(&acks);
        let reads = Reads(vec![
            vec![0; 600],
            vec![0; 600],
            vec![0; 100],
            vec![0; 2000],
        ]);
        let mut r = LineReader::new(
            reads,
            Box::new(|_| {}),
            Box::new(move |n| a2.lock().unwrap().push(n)),
        );
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        // 600 is below ACK_EVERY; 1200 and 3300 are reported; 1300 is only 100 past 1200.
        assert_eq!(*acks.lock().unwrap(), vec![1200, 3300]);
    }

    #[test]
    fn data_is_chunked_into_frames() {
        let buf = Shared::default();
        let ch = Channel::new(Box::new(buf.clone()));
        ch.data(9, &vec![7u8; DATA_CHUNK * 2 + 5]);
        ch.close(9);
        let wire = buf.0.lock().unwrap().clone();
        let mut r = io::Cursor::new(wire);
        let sizes: Vec<usize> = (0..3)
            .map(|_| {
                let f = read_frame(&mut r).unwrap();
                assert_eq!((f.kind, f.id), (Kind::Data, 9));
                f.payload.len()
            })
            .collect();
        assert_eq!(sizes, vec![DATA_CHUNK, DATA_CHUNK, 5]);
        assert_eq!(read_frame(&mut r).unwrap().kind, Kind::Close);
    }
}
