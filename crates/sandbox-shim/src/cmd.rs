//! Runs helper programs (`ip`, `tc`, `ldd`) from the shim server, whose reaper owns
//! `waitpid`: the exit status comes through it, not through `Child::wait`.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use berth_shim::reaper::Reaper;

use crate::error::{Error, Result};

static REAPER: OnceLock<Arc<Reaper>> = OnceLock::new();

/// Called once by the server before it serves.
pub fn use_reaper(r: Arc<Reaper>) {
    let _ = REAPER.set(r);
}

pub struct Output {
    pub success: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `cmd` with `input` on stdin; its stdout, stderr and whether it exited 0.
pub fn output(mut cmd: Command, input: Option<&[u8]>) -> Result<Output> {
    let program = cmd.get_program().to_string_lossy().to_string();
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(Error::io(format!("run {program}")))?;
    if let (Some(mut w), Some(data)) = (child.stdin.take(), input) {
        let _ = w.write_all(data);
    }
    let mut err_pipe = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_end(&mut v);
        }
        v
    });
    let mut stdout = Vec::new();
    if let Some(mut p) = child.stdout.take() {
        let _ = p.read_to_end(&mut stdout);
    }
    let stderr = err_thread.join().unwrap_or_default();
    let code = match REAPER.get() {
        Some(r) => r.wait_for(child.id() as i32),
        None => child
            .wait()
            .ok()
            .and_then(|s| s.code())
            .map_or(255, |c| c as u32),
    };
    Ok(Output {
        success: code == 0,
        stdout,
        stderr,
    })
}
