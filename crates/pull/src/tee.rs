//! The pipe between a layer's download and its streaming apply.
//!
//! The download never waits for the apply: chunks are queued up to a byte budget. When the
//! apply cannot keep up (it may still be waiting for the layer below), or when the download
//! cannot provide every byte in order (it resumed a partial ingest from an earlier pull), the
//! pipe is *detached*; the reader then waits for the blob to be committed and continues from
//! the committed file at the position it had reached. Either way the apply sees exactly the
//! blob's bytes, once, in order.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// Bytes all layers of one pull may hold in memory while their applies have not caught up.
/// Small on purpose: a layer whose apply is still waiting for the one below soon detaches and
/// is read back from the committed blob (page cache), so berthd's memory stays flat during a
/// pull instead of growing with what is queued (64 MiB here gave a 96 MB peak RSS).
pub(crate) const BUDGET: usize = 8 << 20;

/// The memory budget shared by every pipe of one pull.
pub(crate) struct Budget {
    limit: usize,
    queued: AtomicUsize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            queued: AtomicUsize::new(0),
        })
    }

    fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }
}

enum Chunk {
    Data(Bytes),
    /// Read the rest from the committed blob.
    Detached,
    /// Every byte has been sent.
    End,
}

pub(crate) struct TeeSender {
    tx: Option<UnboundedSender<Chunk>>,
    budget: Arc<Budget>,
}

/// Opens the committed blob once the download has committed it (blocking).
pub(crate) type OpenCommitted = Box<dyn FnOnce() -> io::Result<File> + Send>;

pub(crate) struct TeeReader {
    rx: UnboundedReceiver<Chunk>,
    budget: Arc<Budget>,
    cur: Bytes,
    pos: u64,
    file: Option<File>,
    open: Option<OpenCommitted>,
    done: bool,
}

pub(crate) fn pipe(budget: &Arc<Budget>, open: OpenCommitted) -> (TeeSender, TeeReader) {
    let (tx, rx) = unbounded_channel();
    (
        TeeSender {
            tx: Some(tx),
            budget: budget.clone(),
        },
        TeeReader {
            rx,
            budget: budget.clone(),
            cur: Bytes::new(),
            pos: 0,
            file: None,
            open: Some(open),
            done: false,
        },
    )
}

impl TeeSender {
    /// Queues a copy of `data` (cheap: `Bytes` is shared), or detaches when over budget.
    pub fn send(&mut self, data: &Bytes) {
        let Some(tx) = &self.tx else { return };
        let b = &self.budget;
        let reserved = b
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q + data.len() <= b.limit).then_some(q + data.len())
            })
            .is_ok();
        if !reserved {
            self.detach();
            return;
        }
        if tx.send(Chunk::Data(data.clone())).is_err() {
            // The apply is gone (failed or not needed): stop copying.
            self.tx = None;
        }
    }

    pub fn detach(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Chunk::Detached);
        }
    }

    pub fn finish(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Chunk::End);
        }
    }
}

impl TeeReader {
    fn switch_to_file(&mut self) -> io::Result<()> {
        let open = self
            .open
            .take()
            .ok_or_else(|| io::Error::other("layer stream detached twice"))?;
        let mut f = open()?;
        f.seek(SeekFrom::Start(self.pos))?;
        self.file = Some(f);
        Ok(())
    }
}

impl Read for TeeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if buf.is_empty() || self.done {
                return Ok(0);
            }
            if let Some(f) = &mut self.file {
                let n = f.read(buf)?;
                self.pos += n as u64;
                return Ok(n);
            }
            if !self.cur.is_empty() {
                let n = self.cur.len().min(buf.len());
                buf[..n].copy_from_slice(&self.cur[..n]);
                self.cur.advance(n);
                self.pos += n as u64;
                return Ok(n);
            }
            match self.rx.blocking_recv() {
                Some(Chunk::Data(b)) => {
                    self.budget.release(b.len());
                    self.cur = b;
                }
                Some(Chunk::Detached) => self.switch_to_file()?,
                Some(Chunk::End) => self.done = true,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "layer download stopped",
                    ))
                }
            }
        }
    }
}

impl Drop for TeeReader {
    /// Returns the budget held by chunks nobody will read (the layer was skipped or failed).
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(c) = self.rx.try_recv() {
            if let Chunk::Data(b) = c {
                self.budget.release(b.len());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn detach_continues_from_file_at_position() {
        let mut tmp = tempfile::NamedTempFile::new().expect("tmp");
        tmp.write_all(b"hello world").expect("write");
        let path = tmp.path().to_path_buf();
        let (mut tx, mut rx) = pipe(&Budget::new(6), Box::new(move || File::open(path)));
        tx.send(&Bytes::from_static(b"hello"));
        // Over budget: detaches; the reader continues from the file at offset 5.
        tx.send(&Bytes::from_static(b" world"));
        let mut out = String::new();
        rx.read_to_string(&mut out).expect("read");
        assert_eq!(out, "hello world");
    }

    #[test]
    fn end_and_abort() {
        let (mut tx, mut rx) = pipe(
            &Budget::new(100),
            Box::new(|| Err(io::Error::other("unused"))),
        );
        tx.send(&Bytes::from_static(b"abc"));
        tx.finish();
        let mut out = Vec::new();
        rx.read_to_end(&mut out).expect("read");
        assert_eq!(out, b"abc");

        let (tx, mut rx) = pipe(
            &Budget::new(100),
            Box::new(|| Err(io::Error::other("unused"))),
        );
        drop(tx);
        assert!(rx.read_to_end(&mut Vec::new()).is_err());
    }

    #[test]
    fn dropped_reader_returns_budget() {
        let budget = Budget::new(10);
        let (mut tx, rx) = pipe(&budget, Box::new(|| Err(io::Error::other("unused"))));
        tx.send(&Bytes::from_static(b"12345678"));
        drop(rx);
        assert_eq!(budget.queued.load(Ordering::Acquire), 0);
        // The other pipes of the pull may use the whole budget again.
        let (mut tx2, mut rx2) = pipe(&budget, Box::new(|| Err(io::Error::other("unused"))));
        tx2.send(&Bytes::from_static(b"0123456789"));
        tx2.finish();
        let mut out = Vec::new();
        rx2.read_to_end(&mut out).expect("read");
        assert_eq!(out.len(), 10);
    }
}
