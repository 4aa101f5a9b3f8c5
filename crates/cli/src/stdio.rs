//! A process's stdio the way ctr's `cio` does it: FIFOs in a private directory (mode 0700) that
//! the shim opens, copied to and from the CLI's own stdin/stdout/stderr on plain threads
//! (blocking FIFO opens would otherwise stall the async runtime). With a terminal there is one
//! FIFO each way and the local terminal is put in raw mode for the duration.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use rustix::fs::{FileType, Mode, CWD};
use rustix::termios::{self, OptionalActions, Termios};

/// The FIFO paths handed to Tasks.Create / Tasks.Exec.
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Attached stdio: the FIFO directory (removed on drop) and the copy threads.
pub struct Attached {
    _dir: tempfile::TempDir,
    pub paths: StdioPaths,
    outputs: Vec<mpsc::Receiver<()>>,
}

fn mkfifo(path: &Path) -> Result<()> {
    rustix::fs::mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
        .with_context(|| format!("cannot create fifo {}", path.display()))
}

/// Copies `fifo` to `out` until the shim closes its end; signals completion on the channel.
fn spawn_output(fifo: PathBuf, mut out: impl Write + Send + 'static) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // Blocks until the shim opens the write side; EOF once it closes it after the exit.
        if let Ok(mut f) = File::open(&fifo) {
            let mut buf = [0u8; 32 * 1024];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        let _ = out.flush();
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        let _ = tx.send(());
    });
    rx
}

/// Copies our stdin into `fifo`; closing it (our EOF) gives the process its EOF.
fn spawn_input(fifo: PathBuf) {
    thread::spawn(move || {
        if let Ok(mut f) = OpenOptions::new().write(true).open(&fifo) {
            let mut stdin = io::stdin().lock();
            let mut buf = [0u8; 32 * 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if f.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
    });
}

impl Attached {
    /// Creates the FIFOs and starts copying. `terminal`: stdin+stdout only (the pty merges
    /// stderr into stdout).
    pub fn new(terminal: bool) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("berth-io-")
            .tempdir()
            .context("cannot create the stdio directory")?;
        let p = |n: &str| dir.path().join(n);
        let stdin = p("stdin");
        let stdout = p("stdout");
        mkfifo(&stdin)?;
        mkfifo(&stdout)?;
        let mut outputs = vec![spawn_output(stdout.clone(), io::stdout())];
        let stderr = if terminal {
            None
        } else {
            let e = p("stderr");
            mkfifo(&e)?;
            outputs.push(spawn_output(e.clone(), io::stderr()));
            Some(e)
        };
        spawn_input(stdin.clone());
        let s = |p: &Path| p.to_string_lossy().into_owned();
        Ok(Attached {
            paths: StdioPaths {
                stdin: s(&stdin),
                stdout: s(&stdout),
                stderr: stderr.as_deref().map(s).unwrap_or_default(),
                terminal,
            },
            _dir: dir,
            outputs,
        })
    }

    /// Waits (bounded) for the output copies to drain after the process exited.
    pub fn drain(&mut self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        for rx in self.outputs.drain(..) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let _ = rx.recv_timeout(left);
        }
    }
}

/// The local terminal in raw mode; restored on drop.
pub struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    /// Raw mode on stdin if it is a terminal (else `None`: nothing to restore).
    pub fn enable() -> Option<Self> {
        let stdin = io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(io::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// (columns, rows) of our terminal, if stdout or stdin is one.
pub fn terminal_size() -> Option<(u32, u32)> {
    let ws = termios::tcgetwinsize(io::stdout())
        .or_else(|_| termios::tcgetwinsize(io::stdin()))
        .ok()?;
    (ws.ws_col > 0 && ws.ws_row > 0).then_some((u32::from(ws.ws_col), u32::from(ws.ws_row)))
}
