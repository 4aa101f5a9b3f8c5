//! Client for an OCI runtime CLI (runc, crun). Every invocation writes JSON
//! log lines to `<bundle>/log.json`; on failure the error carries the
//! runtime's OWN message from that log, not just an exit status.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::reaper::Reaper;

/// Default state root, as containerd's runc shim uses (`<root>/<namespace>`).
pub const DEFAULT_ROOT: &str = "/run/containerd/runc";

/// Environment override for the state root (tests keep away from /run/containerd).
pub const ROOT_ENV: &str = "BERTH_SHIM_RUNTIME_ROOT";

#[derive(Clone)]
pub struct Runtime {
    pub binary: String,
    pub root: PathBuf,
    pub systemd_cgroup: bool,
    pub log: PathBuf,
    reaper: Option<Arc<Reaper>>,
}

/// Stdio handed to the runtime process (and inherited by the container process).
#[derive(Default)]
pub struct RuntimeIo {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

fn to_stdio(fd: Option<OwnedFd>) -> Stdio {
    fd.map(Stdio::from).unwrap_or_else(Stdio::null)
}

impl Runtime {
    pub fn new(
        binary: &str,
        root: &str,
        namespace: &str,
        systemd_cgroup: bool,
        bundle: &Path,
        reaper: Option<Arc<Reaper>>,
    ) -> Runtime {
        let binary = if binary.is_empty() { "runc" } else { binary };
        let root = if !root.is_empty() {
            PathBuf::from(root)
        } else if let Ok(r) = std::env::var(ROOT_ENV) {
            PathBuf::from(r)
        } else {
            PathBuf::from(DEFAULT_ROOT)
        };
        Runtime {
            binary: binary.to_string(),
            root: root.join(namespace),
            systemd_cgroup,
            log: bundle.join("log.json"),
            reaper,
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json");
        if self.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        cmd
    }

    /// Waits through the shim's reaper when it runs one (it owns `waitpid`).
    fn wait_child(&self, mut child: Child) -> u32 {
        match &self.reaper {
            Some(r) => r.wait_for(child.id() as i32),
            None => match child.wait() {
                Ok(st) => {
                    use std::os::unix::process::ExitStatusExt;
                    st.code()
                        .map(|c| c as u32)
                        .or_else(|| st.signal().map(|s| 128 + s as u32))
                        .unwrap_or(255)
                }
                Err(_) => 255,
            },
        }
    }

    /// Waits for a pid from `spawn` (only valid with a reaper).
    pub fn wait_pid(&self, pid: i32) -> u32 {
        self.reaper.as_ref().map(|r| r.wait_for(pid)).unwrap_or(255)
    }

    pub fn take_exit(&self, pid: i32) -> Option<u32> {
        self.reaper.as_ref().and_then(|r| r.take(pid))
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// Runs the runtime with the given stdio; `Ok` when it exits 0.
    pub fn run_io(&self, args: &[&str], io: RuntimeIo) -> Result<()> {
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(to_stdio(io.stdin))
            .stdout(to_stdio(io.stdout))
            .stderr(to_stdio(io.stderr));
        let offset = self.log_len();
        let child = cmd
            .spawn()
            .map_err(|e| Error::Runtime(format!("{} {}: {e}", self.binary, args[0])))?;
        drop(cmd); // close our copies of the stdio fds now
        let code = self.wait_child(child);
        self.check(args, code, offset, "")
    }

    /// Spawns the runtime and returns its pid without waiting (console socket use).
    pub fn spawn(&self, args: &[&str]) -> Result<(i32, u64)> {
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let offset = self.log_len();
        let child = cmd
            .spawn()
            .map_err(|e| Error::Runtime(format!("{} {}: {e}", self.binary, args[0])))?;
        Ok((child.id() as i32, offset))
    }

    /// Turns an exit code into `Ok` or the runtime's own error message.
    pub fn check(&self, args: &[&str], code: u32, offset: u64, stderr: &str) -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        let msg = self
            .log_error(offset)
            .or_else(|| Some(stderr.trim().to_string()).filter(|s| !s.is_empty()))
            .unwrap_or_else(|| format!("exit status {code}"));
        // runc's own messages already say "runc create failed: ...".
        if msg.starts_with(&format!("{} ", self.binary)) || msg.starts_with("runc ") {
            return Err(Error::Runtime(msg));
        }
        Err(Error::Runtime(format!(
            "{} {} failed: {msg}",
            self.binary,
            args.first().copied().unwrap_or("")
        )))
    }

    /// Runs the runtime, feeding `input` on stdin, and returns its stdout.
    pub fn run_output(&self, args: &[&str], input: Option<&[u8]>) -> Result<Vec<u8>> {
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let offset = self.log_len();
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Runtime(format!("{} {}: {e}", self.binary, args[0])))?;
        if let (Some(mut w), Some(data)) = (child.stdin.take(), input) {
            w.write_all(data)
                .map_err(Error::io("write runtime stdin"))?;
        }
        let mut stderr_pipe = child.stderr.take();
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(p) = stderr_pipe.as_mut() {
                let _ = p.read_to_string(&mut s);
            }
            s
        });
        let mut out = Vec::new();
        if let Some(mut p) = child.stdout.take() {
            p.read_to_end(&mut out)
                .map_err(Error::io("read runtime stdout"))?;
        }
        let stderr = err_thread.join().unwrap_or_default();
        let code = self.wait_child(child);
        self.check(args, code, offset, &stderr)?;
        Ok(out)
    }

    /// The last error-level message the runtime logged after `offset`.
    fn log_error(&self, offset: u64) -> Option<String> {
        let mut f = File::open(&self.log).ok()?;
        f.seek(SeekFrom::Start(offset)).ok()?;
        let mut text = String::new();
        f.take(1 << 20).read_to_string(&mut text).ok()?;
        last_error(&text)
    }

    /// Pids of every process in the container.
    pub fn ps(&self, id: &str) -> Result<Vec<u32>> {
        let out = self.run_output(&["ps", "--format", "json", id], None)?;
        serde_json::from_slice::<Option<Vec<u32>>>(&out)
            .map(|v| v.unwrap_or_default())
            .map_err(|e| Error::Other(format!("parse {} ps output: {e}", self.binary)))
    }
}

/// Picks the last `error`/`fatal` message out of runtime JSON log lines.
pub fn last_error(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            matches!(
                v.get("level").and_then(|l| l.as_str()),
                Some("error") | Some("fatal") | Some("panic")
            )
        })
        .find_map(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_string))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn picks_last_error_line() {
        let log = r#"{"level":"info","msg":"hello","time":"x"}
not json
{"level":"error","msg":"first","time":"x"}
{"level":"error","msg":"runc create failed: unable to start container process: exec: \"nope\": executable file not found in $PATH","time":"x"}
"#;
        assert_eq!(
            last_error(log).as_deref(),
            Some("runc create failed: unable to start container process: exec: \"nope\": executable file not found in $PATH")
        );
        assert_eq!(last_error("{\"level\":\"info\",\"msg\":\"x\"}"), None);
    }
}
