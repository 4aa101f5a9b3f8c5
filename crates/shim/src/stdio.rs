//! Process stdio as containerd hands it to a shim: FIFO paths, `file://` and
//! `binary://` URIs, or a terminal whose pty master arrives on a console socket.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::error::{Error, Result};
use crate::runc::RuntimeIo;

/// The stdio paths containerd gave for one process.
#[derive(Clone, Debug, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Write side of the pipe feeding the process's stdin; `close` = CloseIO.
#[derive(Clone, Default)]
pub struct StdinCloser {
    writer: Arc<Mutex<Option<File>>>,
    /// The FIFO the copier reads (a dup), to see what the client wrote that is not moved yet.
    fifo: Arc<Mutex<Option<File>>>,
    /// Set while the copier holds bytes it has read but not yet written.
    busy: Arc<std::sync::atomic::AtomicBool>,
}

/// Bytes waiting in a pipe or FIFO.
fn unread(f: &File) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at a live c_int; the
    // fd is owned by `f` and open for the duration of the call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n) };
    if r < 0 {
        0
    } else {
        n.max(0) as usize
    }
}

impl StdinCloser {
    fn new(writer: File) -> StdinCloser {
        StdinCloser {
            writer: Arc::new(Mutex::new(Some(writer))),
            ..Default::default()
        }
    }

    /// CloseIO: the process sees EOF on stdin — after what the client wrote before closing has
    /// reached it (the client writes the FIFO, then asks for the close at once).
    pub fn close(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let idle = || {
            !self.busy.load(std::sync::atomic::Ordering::SeqCst)
                && self
                    .fifo
                    .lock()
                    .map(|f| f.as_ref().map_or(0, unread) == 0)
                    .unwrap_or(true)
        };
        // Idle twice in a row, a few ms apart: the copier has had time to mark a read it just
        // finished as busy.
        while std::time::Instant::now() < deadline {
            if idle() {
                std::thread::sleep(std::time::Duration::from_millis(5));
                if idle() {
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        self.close_now();
    }

    fn close_now(&self) {
        if let Ok(mut g) = self.writer.lock() {
            g.take();
        }
    }
}

/// Copies everything from `src` into the shared writer until either side ends.
fn copy_into_shared(mut src: File, dst: StdinCloser) {
    if let (Ok(dup), Ok(mut g)) = (src.try_clone(), dst.fifo.lock()) {
        *g = Some(dup);
    }
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            dst.busy.store(false, std::sync::atomic::Ordering::SeqCst);
            let n = match src.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            dst.busy.store(true, std::sync::atomic::Ordering::SeqCst);
            let Ok(mut g) = dst.writer.lock() else { break };
            let ok = g.as_mut().is_some_and(|w| w.write_all(&buf[..n]).is_ok());
            if !ok {
                break;
            }
        }
        dst.busy.store(false, std::sync::atomic::Ordering::SeqCst);
        dst.close_now();
    });
}

fn copy_plain(mut src: File, mut dst: File) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut src, &mut dst);
    });
}

/// Opens a FIFO read-write: never blocks waiting for the peer, and a write end
/// held here keeps readers from seeing a premature EOF (and writers from EPIPE).
fn open_fifo_rdwr(path: &str) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(Error::io(format!("open {path}")))
}

fn pipe() -> Result<(File, File)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((File::from(r), File::from(w)))
}

/// What the shim keeps for a process's stdio after handing fds to the runtime.
#[derive(Default)]
pub struct ProcessIo {
    pub stdin: Option<StdinCloser>,
}

/// Builds the fds for a non-terminal process.
pub fn open(paths: &StdioPaths, id: &str, namespace: &str) -> Result<(RuntimeIo, ProcessIo)> {
    let mut rio = RuntimeIo::default();
    let mut pio = ProcessIo::default();
    if !paths.stdin.is_empty() {
        // A pipe (not the FIFO itself) so CloseIO can give the process EOF.
        let fifo = open_fifo_rdwr(&paths.stdin)?;
        let (r, w) = pipe()?;
        let closer = StdinCloser::new(w);
        copy_into_shared(fifo, closer.clone());
        rio.stdin = Some(OwnedFd::from(r));
        pio.stdin = Some(closer);
    }
    if paths.stdout.starts_with("binary://") {
        let (out, err) = binary_logger(&paths.stdout, id, namespace)?;
        rio.stdout = Some(out);
        rio.stderr = Some(err);
        return Ok((rio, pio));
    }
    rio.stdout = output(&paths.stdout)?;
    rio.stderr = if paths.stderr == paths.stdout && !paths.stdout.is_empty() {
        match &rio.stdout {
            Some(fd) => Some(fd.try_clone().map_err(Error::io("dup stdout"))?),
            None => None,
        }
    } else {
        output(&paths.stderr)?
    };
    Ok((rio, pio))
}

fn output(path: &str) -> Result<Option<OwnedFd>> {
    if path.is_empty() {
        return Ok(None);
    }
    if let Some(file) = path.strip_prefix("file://") {
        if let Some(dir) = Path::new(file).parent() {
            std::fs::create_dir_all(dir).map_err(Error::io(format!("mkdir {}", dir.display())))?;
        }
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(file)
            .map_err(Error::io(format!("open {file}")))?;
        return Ok(Some(f.into()));
    }
    let path = path.strip_prefix("fifo://").unwrap_or(path);
    Ok(Some(open_fifo_rdwr(path)?.into()))
}

/// Splits `binary:///path?k=v&x` into the program and containerd-style args
/// (`k v x`).
pub fn parse_binary_uri(uri: &str) -> Result<(String, Vec<String>)> {
    let rest = uri
        .strip_prefix("binary://")
        .ok_or_else(|| Error::InvalidArgument(format!("not a binary uri: {uri}")))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "binary uri without path: {uri}"
        )));
    }
    let mut args = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        args.push(unescape(k));
        if !v.is_empty() {
            args.push(unescape(v));
        }
    }
    Ok((unescape(path), args))
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Starts a logging binary as containerd does: fd 3 = stdout, fd 4 = stderr,
/// fd 5 = a pipe it closes once ready. Returns the write ends for the process.
fn binary_logger(uri: &str, id: &str, namespace: &str) -> Result<(OwnedFd, OwnedFd)> {
    let (program, args) = parse_binary_uri(uri)?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (mut ready_r, ready_w) = pipe()?;
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    let mut cmd = Command::new(&program);
    cmd.args(&args)
        .env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: only async-signal-safe dup2 calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for (i, fd) in fds.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| Error::Other(format!("start logging binary {program}: {e}")))?;
    drop(cmd);
    drop(out_r);
    drop(err_r);
    drop(ready_w);
    // The binary closes fd 5 (or exits) when it is ready to receive output.
    let mut b = [0u8; 1];
    let _ = ready_r.read(&mut b);
    Ok((out_w.into(), err_w.into()))
}

/// A listening console socket: the runtime connects and sends the pty master.
pub struct ConsoleSocket {
    listener: UnixListener,
    pub path: PathBuf,
    _dir: PathBuf,
}

impl ConsoleSocket {
    pub fn new() -> Result<ConsoleSocket> {
        // Short path under /tmp: sun_path is limited to 108 bytes.
        let dir =
            std::env::temp_dir().join(format!("berth-pty-{}-{}", std::process::id(), next_seq()));
        std::fs::create_dir_all(&dir).map_err(Error::io("console socket dir"))?;
        let path = dir.join("pty.sock");
        let listener = UnixListener::bind(&path).map_err(Error::io("bind console socket"))?;
        listener
            .set_nonblocking(true)
            .map_err(Error::io("console socket"))?;
        Ok(ConsoleSocket {
            listener,
            path,
            _dir: dir,
        })
    }

    /// Waits for the master fd, giving up when `gave_up` says the runtime is gone.
    pub fn receive(&self, mut gave_up: impl FnMut() -> bool) -> Result<File> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => return recv_fd(&stream),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if gave_up() {
                        return Err(Error::Runtime(
                            "runtime exited before sending the console".into(),
                        ));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => return Err(Error::io("accept console socket")(e)),
            }
        }
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn next_seq() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

fn recv_fd(stream: &UnixStream) -> Result<File> {
    stream
        .set_nonblocking(false)
        .map_err(Error::io("console stream"))?;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just gave us this fd; we own it.
                return Ok(unsafe { File::from_raw_fd(*fd) });
            }
        }
    }
    Err(Error::Runtime(
        "console socket message carried no fd".into(),
    ))
}

/// Wires a pty master to the process's stdio paths. Returns the stdin closer.
pub fn attach_console(master: &File, paths: &StdioPaths) -> Result<ProcessIo> {
    let mut pio = ProcessIo::default();
    if !paths.stdin.is_empty() {
        let fifo = open_fifo_rdwr(&paths.stdin)?;
        let w = master.try_clone().map_err(Error::io("dup console"))?;
        let closer = StdinCloser::new(w);
        copy_into_shared(fifo, closer.clone());
        pio.stdin = Some(closer);
    }
    if !paths.stdout.is_empty() {
        let r = master.try_clone().map_err(Error::io("dup console"))?;
        let out: File = match output(&paths.stdout)? {
            Some(fd) => fd.into(),
            None => return Ok(pio),
        };
        copy_plain(r, out);
    }
    Ok(pio)
}

/// Sets the terminal size (ResizePty).
pub fn resize(master: &File, width: u32, height: u32) -> Result<()> {
    let ws = libc::winsize {
        ws_row: height as u16,
        ws_col: width as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct we own.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        return Err(Error::io("resize pty")(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn binary_uri_args() {
        let (p, a) = parse_binary_uri("binary:///usr/bin/logger?id=abc&flag&x=a%20b").unwrap();
        assert_eq!(p, "/usr/bin/logger");
        assert_eq!(a, vec!["id", "abc", "flag", "x", "a b"]);
        assert!(parse_binary_uri("binary://").is_err());
    }

    #[test]
    fn file_uri_appends() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("sub/out.log");
        let uri = format!("file://{}", f.display());
        let paths = StdioPaths {
            stdout: uri.clone(),
            stderr: uri,
            ..Default::default()
        };
        let (rio, _) = open(&paths, "c", "ns").unwrap();
        let mut out = File::from(rio.stdout.unwrap());
        out.write_all(b"hi\n").unwrap();
        let mut err = File::from(rio.stderr.unwrap());
        err.write_all(b"err\n").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "hi\nerr\n");
    }
}
