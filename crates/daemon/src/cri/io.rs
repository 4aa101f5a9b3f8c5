//! The FIFOs between a shim and berthd: container output on its way to the CRI log file, and
//! exec output collected for ExecSync.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe;
use tokio::sync::watch;

/// stdout/stderr FIFO paths of one process; `stderr` is None for a terminal (one stream).
#[derive(Debug, Clone)]
pub struct Fifos {
    pub dir: PathBuf,
    pub stdin: Option<PathBuf>,
    pub stdout: PathBuf,
    pub stderr: Option<PathBuf>,
}

impl Fifos {
    pub fn at(dir: PathBuf, tty: bool) -> Fifos {
        Fifos {
            stdin: None,
            stdout: dir.join("stdout"),
            stderr: (!tty).then(|| dir.join("stderr")),
            dir,
        }
    }

    /// Adds a stdin FIFO (containers created with `stdin`, exec sessions with stdin).
    pub fn with_stdin(mut self) -> Fifos {
        self.stdin = Some(self.dir.join("stdin"));
        self
    }

    pub fn stdin_str(&self) -> String {
        self.stdin
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Makes the FIFOs (kept if they exist: a restarted berthd reopens what its shim writes to).
    pub fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        for p in std::iter::once(&self.stdout)
            .chain(self.stderr.as_ref())
            .chain(self.stdin.as_ref())
        {
            match nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(std::io::Error::from(e)),
            }
        }
        Ok(())
    }

    pub fn stdout_str(&self) -> String {
        self.stdout.to_string_lossy().into_owned()
    }

    pub fn stderr_str(&self) -> String {
        self.stderr
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Opens a FIFO's read side without waiting for a writer, and a write end of our own that keeps
/// the reader from seeing end of file before the process holds its end. Drop the keep-alive once
/// the process has started: the reader then ends exactly when the process (and whatever
/// inherited its output) has closed it, with no waiting for a quiet pipe.
pub fn open_reader(path: &Path) -> std::io::Result<(pipe::Receiver, pipe::Sender)> {
    let rx = pipe::OpenOptions::new().open_receiver(path)?;
    let keepalive = pipe::OpenOptions::new().open_sender(path)?;
    Ok((rx, keepalive))
}

/// Opens a FIFO's write side without waiting for a reader (read-write, as for readers).
pub fn open_writer(path: &Path) -> std::io::Result<pipe::Sender> {
    pipe::OpenOptions::new().read_write(true).open_sender(path)
}

/// A reader that ends when its process has exited and its pipe is drained: a FIFO opened
/// read-write never reports end of file by itself.
pub struct UntilExit<R> {
    reader: R,
    exited: watch::Receiver<bool>,
    draining: bool,
}

impl<R: AsyncRead + Unpin> UntilExit<R> {
    pub fn new(reader: R, exited: watch::Receiver<bool>) -> Self {
        UntilExit {
            reader,
            exited,
            draining: false,
        }
    }

    /// Bytes read into `buf`; 0 at the end.
    pub async fn read(&mut self, buf: &mut [u8]) -> usize {
        loop {
            if self.draining {
                // After the exit, what is still in the pipe arrives at once: a quiet pipe is done.
                return match tokio::time::timeout(
                    std::time::Duration::from_millis(50),
                    self.reader.read(buf),
                )
                .await
                {
                    Ok(Ok(n)) => n,
                    _ => 0,
                };
            }
            tokio::select! {
                r = self.reader.read(buf) => return r.unwrap_or(0),
                _ = self.exited.wait_for(|e| *e) => self.draining = true,
            }
        }
    }
}

/// Reads everything a process writes until it exits, keeping at most `limit` bytes.
pub async fn collect<R: AsyncRead + Unpin>(mut reader: UntilExit<R>, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = reader.read(&mut buf).await;
        if n == 0 {
            return out;
        }
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&buf[..n.min(room)]);
    }
}
