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
    /// The child's stdin, stdout and stderr (`/dev/null` until a terminal replaces them);
    /// closed in the agent once the child has them.
    child: Option<[OwnedFd; 3]>,
    /// The agent's end of stdin (a pipe's write end, or the terminal's master).
    pub stdin: Option<OwnedFd>,
    /// The agent's ends of the output: stream id (0: read and drop) and descriptor.
    pub outputs: Vec<(u32, OwnedFd)>,
    pub master: Option<Arc<OwnedFd>>,
    /// With a terminal: the agent's and the child's ends of the socket its master comes on.
    console: Option<OwnedFd>,
    console_child: Option<OwnedFd>,
    streams: Stdio,
}

impl ProcIo {
    pub fn child_fds(&self) -> (RawFd, RawFd, RawFd) {
        match &self.child {
            Some([i, o, e]) => (i.as_raw_fd(), o.as_raw_fd(), e.as_raw_fd()),
            None => (-1, -1, -1),
        }
    }

    pub fn console_fd(&self) -> RawFd {
        self.console_child.as_ref().map_or(-1, |c| c.as_raw_fd())
    }

    /// After the fork: the child has its copies; the agent's would keep pipes open.
    pub fn close_child_ends(&mut self) {
        self.child = None;
        self.console_child = None;
    }

    /// How many output readers the process will have.
    pub fn output_count(&self) -> u32 {
        if self.console.is_some() {
            1
        } else {
            self.outputs.len() as u32
        }
    }

    /// Takes the terminal's master the child sent and wires stdin and output to it.
    pub fn receive_terminal(&mut self) -> Result<(), AgentError> {
        let Some(sock) = &self.console else {
            return Ok(());
        };
        let master = crate::sys::recv_fd(sock).map_err(sys("receive the terminal's master"))?;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(sys("dup terminal descriptor"));
        if self.streams.stdin != 0 {
            self.stdin = Some(dup(&master)?);
        }
        // Without a reader a terminal that fills up would stop the process.
        self.outputs = vec![(self.streams.stdout, dup(&master)?)];
        self.master = Some(Arc::new(master));
        Ok(())
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

/// Pipes for the connected streams (`/dev/null` for the others), or with `terminal` the
/// socket on which the child sends the terminal it opens (its output comes on the stdout
/// stream).
pub fn prepare(stdio: &Stdio, terminal: bool) -> Result<ProcIo, AgentError> {
    if terminal {
        let (ours, theirs) =
            crate::sys::socketpair().map_err(sys("socketpair for the terminal"))?;
        return Ok(ProcIo {
            child: Some([dev_null(false)?, dev_null(true)?, dev_null(true)?]),
            stdin: None,
            outputs: Vec::new(),
            master: None,
            console: Some(ours),
            console_child: Some(theirs),
            streams: stdio.clone(),
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
        child: Some([child_in, child_out, child_err]),
        stdin,
        outputs,
        master: None,
        console: None,
        console_child: None,
        streams: stdio.clone(),
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
