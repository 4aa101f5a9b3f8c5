//! Running one plugin binary: the CNI exec protocol (environment + stdin in, result or
//! error object out), with a deadline.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::error::Error;

/// Plugin output beyond this is not a CNI result; stop reading rather than buffer it.
const MAX_OUTPUT_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Add,
    Del,
    Check,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Add => "ADD",
            Op::Del => "DEL",
            Op::Check => "CHECK",
        }
    }
}

/// The per-invocation environment; the same for every plugin of a list.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    pub container_id: String,
    /// Empty when the namespace is gone (DEL then cleans up what it can).
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub cni_path: String,
}

/// Finds `kind` in `dirs`, first match wins.
pub(crate) fn find_plugin(kind: &str, dirs: &[PathBuf]) -> Result<PathBuf, Error> {
    use std::os::unix::fs::PermissionsExt;
    for dir in dirs {
        let candidate = dir.join(kind);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(Error::PluginNotFound {
        plugin: kind.to_string(),
        dirs: dirs.to_vec(),
    })
}

/// Runs `binary` for `op` and returns its stdout on success.
///
/// On expiry of `timeout` the plugin is killed (and reaped) and `Error::Timeout`
/// returned. The child is also killed if the returned future is dropped, so a
/// cancelled request does not leave a plugin running unobserved.
pub(crate) async fn run(
    kind: &str,
    binary: &Path,
    op: Op,
    env: &Env,
    stdin: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, Error> {
    let mut cmd = Command::new(binary);
    cmd.env("CNI_COMMAND", op.as_str())
        .env("CNI_CONTAINERID", &env.container_id)
        .env("CNI_NETNS", &env.netns)
        .env("CNI_IFNAME", &env.ifname)
        .env("CNI_ARGS", &env.args)
        .env("CNI_PATH", &env.cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = spawn(&mut cmd, binary).await?;
    let child_stdin = child.stdin.take();
    let child_stdout = child.stdout.take();
    let child_stderr = child.stderr.take();

    let work = async {
        let write = async {
            if let Some(mut pipe) = child_stdin {
                // A plugin may exit without reading all of stdin (e.g. on a usage
                // error); the broken pipe is not the error worth reporting, its exit is.
                let _ = pipe.write_all(&stdin).await;
                let _ = pipe.shutdown().await;
            }
        };
        let (_, out, err) = tokio::join!(
            write,
            read_limited(child_stdout),
            read_limited(child_stderr)
        );
        let status = child.wait().await;
        (out, err, status)
    };
    let (out, err, status) = match tokio::time::timeout(timeout, work).await {
        Ok(done) => done,
        Err(_) => {
            // kill() also waits, so no zombie is left behind.
            if let Err(e) = child.kill().await {
                tracing::warn!(plugin = kind, error = %e, "killing timed-out CNI plugin");
            }
            return Err(Error::Timeout {
                plugin: kind.to_string(),
                command: op.as_str(),
                after: timeout,
            });
        }
    };
    let status = status.map_err(|e| Error::io("wait for CNI plugin", binary, e))?;
    let out = out.map_err(|e| Error::io("read CNI plugin stdout", binary, e))?;
    let err = err.unwrap_or_default();
    if !err.is_empty() {
        tracing::debug!(plugin = kind, op = op.as_str(), stderr = %String::from_utf8_lossy(&err), "CNI plugin stderr");
    }
    if out.len() as u64 > MAX_OUTPUT_BYTES {
        return Err(plugin_error(
            kind,
            op,
            None,
            format!("printed more than {MAX_OUTPUT_BYTES} bytes"),
            String::new(),
        ));
    }
    if status.success() {
        return Ok(out);
    }
    Err(failure(kind, op, status, &out, &err))
}

/// Spawns, retrying briefly on ETXTBSY: a plugin binary that is being replaced, or was
/// just written while another thread forked, is busy for a moment and then fine.
async fn spawn(cmd: &mut Command, binary: &Path) -> Result<tokio::process::Child, Error> {
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Ok(child) => return Ok(child),
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 10 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(Error::io("start CNI plugin", binary, e)),
        }
    }
}

async fn read_limited<R: AsyncRead + Unpin>(pipe: Option<R>) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(pipe) = pipe {
        pipe.take(MAX_OUTPUT_BYTES + 1)
            .read_to_end(&mut buf)
            .await?;
    }
    Ok(buf)
}

#[derive(serde::Deserialize)]
struct ErrorObject {
    code: u64,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// Turns a failed exit into `Error::Plugin`, preferring the CNI error object on stdout
/// and falling back to what the plugin wrote on stderr.
fn failure(
    kind: &str,
    op: Op,
    status: std::process::ExitStatus,
    stdout: &[u8],
    stderr: &[u8],
) -> Error {
    if let Ok(obj) = serde_json::from_slice::<ErrorObject>(stdout) {
        return plugin_error(kind, op, Some(obj.code), obj.msg, obj.details);
    }
    let text = if stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        stderr
    } else {
        stdout
    };
    let text = String::from_utf8_lossy(text).trim().to_string();
    let text = if text.len() > 2048 {
        let mut end = 2048;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &text[..end])
    } else {
        text
    };
    plugin_error(kind, op, None, format!("exited with {status}"), text)
}

fn plugin_error(kind: &str, op: Op, code: Option<u64>, msg: String, details: String) -> Error {
    Error::Plugin {
        plugin: kind.to_string(),
        command: op.as_str(),
        code,
        msg,
        details,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn env() -> Env {
        Env {
            container_id: "c1".into(),
            netns: "/proc/self/ns/net".into(),
            ifname: "eth0".into(),
            args: "A=1;B=2".into(),
            cni_path: "/nowhere".into(),
        }
    }

    #[tokio::test]
    async fn passes_environment_and_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let bin = script(
            dir.path(),
            "echoer",
            r#"printf '{"cmd":"%s","id":"%s","ns":"%s","if":"%s","args":"%s","path":"%s","stdin":' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" "$CNI_PATH"; cat; printf '}'"#,
        );
        let out = run(
            "echoer",
            &bin,
            Op::Check,
            &env(),
            br#"{"x":1}"#.to_vec(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["cmd"], "CHECK");
        assert_eq!(v["id"], "c1");
        assert_eq!(v["ns"], "/proc/self/ns/net");
        assert_eq!(v["if"], "eth0");
        assert_eq!(v["args"], "A=1;B=2");
        assert_eq!(v["path"], "/nowhere");
        assert_eq!(v["stdin"]["x"], 1);
    }

    #[tokio::test]
    async fn error_object_becomes_plugin_error() {
        let dir = tempfile::tempdir().unwrap();
        let bin = script(
            dir.path(),
            "failer",
            r#"cat >/dev/null; echo '{"cniVersion":"1.0.0","code":7,"msg":"bad config","details":"no subnet"}'; exit 1"#,
        );
        let err = run(
            "failer",
            &bin,
            Op::Add,
            &env(),
            b"{}".to_vec(),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        match &err {
            Error::Plugin {
                plugin,
                command,
                code,
                msg,
                details,
            } => {
                assert_eq!(plugin, "failer");
                assert_eq!(*command, "ADD");
                assert_eq!(*code, Some(7));
                assert_eq!(msg, "bad config");
                assert_eq!(details, "no subnet");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "CNI plugin \"failer\" failed on ADD (code 7): bad config; no subnet"
        );
    }

    #[tokio::test]
    async fn crash_without_error_object_reports_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let bin = script(dir.path(), "crasher", "echo 'panic: boom' >&2; exit 2");
        let err = run(
            "crasher",
            &bin,
            Op::Del,
            &env(),
            b"{}".to_vec(),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        match err {
            Error::Plugin {
                code, msg, details, ..
            } => {
                assert_eq!(code, None);
                assert!(msg.contains("exit status: 2"), "{msg}");
                assert_eq!(details, "panic: boom");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn hung_plugin_is_killed_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // exec so the pid written is the process the timeout must kill.
        let bin = script(
            dir.path(),
            "sleeper",
            &format!("echo $$ > {}; exec sleep 60", pidfile.display()),
        );
        let started = std::time::Instant::now();
        let err = run(
            "sleeper",
            &bin,
            Op::Add,
            &env(),
            b"{}".to_vec(),
            Duration::from_millis(500),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed and reaped: the pid no longer exists (not even as a zombie).
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "plugin {pid} still there"
        );
    }

    #[test]
    fn finds_plugin_in_dir_order_and_skips_non_executables() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("p"), "not executable").unwrap();
        let exe = script(b.path(), "p", "true");
        script(b.path(), "q", "true");
        let q_first = script(a.path(), "q", "true");
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find_plugin("p", &dirs).unwrap(), exe);
        assert_eq!(find_plugin("q", &dirs).unwrap(), q_first);
        let err = find_plugin("missing", &dirs).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"missing\""), "{msg}");
        assert!(
            msg.contains(&format!("{}:{}", a.path().display(), b.path().display())),
            "{msg}"
        );
    }
}
