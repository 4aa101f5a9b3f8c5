//! Container logs in the CRI format the kubelet reads: one entry per line,
//! `<RFC3339Nano time> <stdout|stderr> <F|P> <message>`, where a line longer than
//! [`MAX_LINE`] is cut into `P` (partial) entries ended by an `F` (full) one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::sync::Mutex;

use super::io::UntilExit;

/// The kubelet's (and containerd's) longest log entry payload.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One container's log file, shared by its stdout and stderr copiers so that entries never
/// interleave mid-line, and reopened in place when the kubelet rotates it.
pub struct LogFile {
    path: PathBuf,
    file: Mutex<tokio::fs::File>,
}

async fn open_append(path: &Path) -> std::io::Result<tokio::fs::File> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}

impl LogFile {
    pub async fn open(path: &Path) -> std::io::Result<Arc<LogFile>> {
        let file = open_append(path).await?;
        Ok(Arc::new(LogFile {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        }))
    }

    /// Starts writing to a fresh file at the same path (the old one was renamed away).
    pub async fn reopen(&self) -> std::io::Result<()> {
        let fresh = open_append(&self.path).await?;
        let mut file = self.file.lock().await;
        let _ = file.flush().await;
        *file = fresh;
        Ok(())
    }

    async fn write_entry(&self, stream: Stream, full: bool, msg: &[u8]) {
        let mut entry = Vec::with_capacity(msg.len() + 48);
        entry.extend_from_slice(timestamp().as_bytes());
        entry.push(b' ');
        entry.extend_from_slice(stream.name().as_bytes());
        entry.extend_from_slice(if full { b" F " } else { b" P " });
        entry.extend_from_slice(msg);
        entry.push(b'\n');
        let mut file = self.file.lock().await;
        if let Err(e) = file.write_all(&entry).await {
            tracing::warn!(path = %self.path.display(), error = %e, "write container log");
        }
    }
}

fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Cuts a byte stream into log entries: complete lines as `F`, runs of [`MAX_LINE`] bytes
/// without a newline as `P`.
#[derive(Default)]
struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Entries (full?, payload) completed by `data`.
    fn feed(&mut self, data: &[u8]) -> Vec<(bool, Vec<u8>)> {
        let mut out = Vec::new();
        for &b in data {
            if b == b'\n' {
                out.push((true, std::mem::take(&mut self.pending)));
            } else {
                self.pending.push(b);
                if self.pending.len() == MAX_LINE {
                    out.push((false, std::mem::take(&mut self.pending)));
                }
            }
        }
        out
    }

    /// What is left when the stream ends: the last line, unterminated.
    fn finish(&mut self) -> Option<(bool, Vec<u8>)> {
        (!self.pending.is_empty()).then(|| (true, std::mem::take(&mut self.pending)))
    }
}

/// What attach sessions receive: each chunk of the container's output, by stream.
pub type Tap = tokio::sync::broadcast::Sender<(Stream, Vec<u8>)>;

/// Copies `reader` into `log` until it ends; chunks also go to `tap` while anyone listens.
pub async fn copy<R: AsyncRead + Unpin>(
    mut reader: UntilExit<R>,
    stream: Stream,
    log: Arc<LogFile>,
    tap: Option<Tap>,
) {
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = reader.read(&mut buf).await;
        if n == 0 {
            break;
        }
        if let Some(t) = tap.as_ref().filter(|t| t.receiver_count() > 0) {
            let _ = t.send((stream, buf[..n].to_vec()));
        }
        for (full, msg) in splitter.feed(&buf[..n]) {
            log.write_entry(stream, full, &msg).await;
        }
    }
    if let Some((full, msg)) = splitter.finish() {
        log.write_entry(stream, full, &msg).await;
    }
    let _ = log.file.lock().await.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_full_and_long_lines_are_cut_into_partials() {
        let mut s = LineSplitter::default();
        let out = s.feed(b"a\nbb\nccc");
        assert_eq!(out, vec![(true, b"a".to_vec()), (true, b"bb".to_vec())]);
        let long = vec![b'x'; 40 * 1024];
        let out = s.feed(&long);
        assert_eq!(out.len(), 2, "two full 16 KiB partials");
        assert!(out.iter().all(|(full, m)| !full && m.len() == MAX_LINE));
        assert_eq!(&out[0].1[..3], b"ccc");
        let out = s.feed(b"\n");
        assert_eq!(out.len(), 1);
        assert!(out[0].0);
        assert_eq!(out[0].1.len(), 40 * 1024 + 3 - 2 * MAX_LINE);
        assert_eq!(s.finish(), None);
        s.feed(b"tail");
        assert_eq!(s.finish(), Some((true, b"tail".to_vec())));
    }

    #[tokio::test]
    async fn copy_writes_cri_entries_and_reopen_switches_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c/0.log");
        let log = LogFile::open(&path).await.expect("open");
        let (tx, rx) = tokio::sync::watch::channel(false);
        let reader = UntilExit::new(&b"hello\nwor"[..], rx.clone());
        copy(reader, Stream::Stdout, log.clone(), None).await;
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let re = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z stdout F hello$")
            .expect("regex");
        assert!(re.is_match(lines[0]), "{}", lines[0]);
        assert!(lines[1].ends_with(" stdout F wor"), "{}", lines[1]);

        std::fs::rename(&path, dir.path().join("c/0.log.1")).expect("rotate");
        log.reopen().await.expect("reopen");
        tx.send(true).expect("exit");
        copy(
            UntilExit::new(&b"after\n"[..], rx),
            Stream::Stderr,
            log.clone(),
            None,
        )
        .await;
        let text = std::fs::read_to_string(&path).expect("read new");
        assert!(text.ends_with(" stderr F after\n"), "{text}");
        assert_eq!(text.lines().count(), 1);
    }
}
