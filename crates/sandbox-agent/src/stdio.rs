//! A process's stdio: pipes or a pseudo-terminal for the child, threads that forward its
//! output to the host and the host's stdin to it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use berth_sandbox_proto::{Stdio, DATA_CHUNK};

use crate::agent::Agent;
use crate::error::{sys, AgentError};
use crate::state::Key;

/// What the host sent for a process's stdin.
pub enum StdinMsg {
    Data(Vec<u8>),
    Close,
}

pub struct ProcIo {
    /// The child's stdin, stdout and stderr.
    pub child: [OwnedFd; 3],
    /// The agent's end of stdin (a pipe's write end, or the terminal's master).
    pub stdin: Option<OwnedFd>,
    /// The agent's ends of the output: stream id (0: read and drop) and descriptor.
    pub outputs: Vec<(u32, OwnedFd)>,
    pub master: Option<Arc<OwnedFd>>,
}

impl ProcIo {
    pub fn child_fds(&self) -> (RawFd, RawFd, RawFd) {
        (
            self.child[0].as_raw_fd(),
            self.child[1].as_raw_fd(),
            self.child[2].as_raw_fd(),
        )
    }
}

fn dev_null(write: bool) -> Result<OwnedFd, AgentError> {
    let f = OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")
        .map_err(sys("open /dev/null"))?;
    Ok(f.into())
}

/// Pipes for the connected streams (`/dev/null` for the others), or with `terminal` a
/// pseudo-terminal whose master carries stdin and the output (on the stdout stream).
pub fn prepare(
    stdio: &Stdio,
    terminal: bool,
    size: Option<(u16, u16)>,
) -> Result<ProcIo, AgentError> {
    if terminal {
        let ws = size.map(|(w, h)| nix::pty::Winsize {
            ws_row: h,
            ws_col: w,
            ws_xpixel: 0,
            ws_ypixel: 0,
        });
        let pty =
            nix::pty::openpty(ws.as_ref(), None).map_err(|e| sys("openpty")(io::Error::from(e)))?;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(sys("dup terminal descriptor"));
        let child = [dup(&pty.slave)?, dup(&pty.slave)?, pty.slave];
        let stdin = if stdio.stdin != 0 {
            Some(dup(&pty.master)?)
        } else {
            None
        };
        // Without a reader a terminal that fills up would stop the process.
        let outputs = vec![(stdio.stdout, dup(&pty.master)?)];
        return Ok(ProcIo {
            child,
            stdin,
            outputs,
            master: Some(Arc::new(pty.master)),
        });
    }
    let mut outputs = Vec::new();
    let (child_in, stdin) = if stdio.stdin != 0 {
        let (r, w) = crate::sys::pipe().map_err(sys("pipe for stdin"))?;
        (r, Some(w))
    } else {
        (dev_null(false)?, None)
    };
    let mut out = |stream: u32, what: &str| -> Result<OwnedFd, AgentError> {
        if stream == 0 {
            return dev_null(true);
        }
        let (r, w) = crate::sys::pipe().map_err(sys(format!("pipe for {what}")))?;
        outputs.push((stream, r));
        Ok(w)
    };
    let child_out = out(stdio.stdout, "stdout")?;
    let child_err = out(stdio.stderr, "stderr")?;
    Ok(ProcIo {
        child: [child_in, child_out, child_err],
        stdin,
        outputs,
        master: None,
    })
}

pub fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(256 * 1024)
        .spawn(f)
        .map(drop)
}

/// One thread per output stream: `Data` frames, then `Close` at end of file (a terminal's
/// master reads EIO once the last slave is closed: that is its end of file).
pub fn spawn_readers(agent: &Arc<Agent>, key: &Key, pid: i32, outputs: Vec<(u32, OwnedFd)>) {
    for (stream, fd) in outputs {
        let agent2 = Arc::clone(agent);
        let key2 = key.clone();
        let r = spawn_thread("output", move || {
            let mut f = File::from(fd);
            let mut buf = vec![0u8; DATA_CHUNK];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) if stream != 0 => agent2.chan.data(stream, &buf[..n]),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            if stream != 0 {
                agent2.chan.close(stream);
            }
            agent2.output_closed(&key2, pid);
        });
        if let Err(e) = r {
            agent.chan.log(format!(
                "{}: no thread for output stream {stream}: {e}",
                key.describe()
            ));
            agent.output_closed(key, pid);
        }
    }
}

/// The thread writing what the host sends to the process's stdin, so that a process that
/// does not read never holds up the frame reader.
pub fn spawn_writer(agent: &Arc<Agent>, key: &Key, fd: OwnedFd, rx: Receiver<StdinMsg>) {
    let r = spawn_thread("stdin", move || {
        let mut f = Some(File::from(fd));
        for msg in rx {
            match msg {
                StdinMsg::Data(d) => {
                    // A process that closed its stdin (EPIPE) loses the rest, as on a host.
                    if let Some(w) = f.as_mut() {
                        if w.write_all(&d).is_err() {
                            f = None;
                        }
                    }
                }
                StdinMsg::Close => {
                    f = None;
                }
            }
        }
    });
    if let Err(e) = r {
        agent
            .chan
            .log(format!("{}: no thread for stdin: {e}", key.describe()));
    }
}
