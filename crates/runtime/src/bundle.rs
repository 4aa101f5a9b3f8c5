//! The on-disk bundle `<state_dir>/<ns>/<id>`: the spec, the rootfs mount point, and everything
//! needed to find the task again after berthd restarts (no task state lives only in memory).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::Exit;

/// Our own files carry a `berth-` prefix: shims write `runtime`, `address`, `options.json`,
/// `log.json`, `shim.pid` into the same directory and must not be clobbered.
const META: &str = "berth.json";
const EXIT: &str = "berth-exit.json";
const PUBLISHED: &str = "berth-published";

/// What we need to talk to (or clean up after) a task's shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub namespace: String,
    pub id: String,
    pub runtime: String,
    pub binary: PathBuf,
    /// Task API version the shim announced (2 or 3); 0 before the shim started.
    #[serde(default)]
    pub task_api: u32,
    /// The init process pid, once created.
    #[serde(default)]
    pub pid: u32,
    /// The shim daemon's pid (for cleanup by tools and tests; recovery asks the shim).
    #[serde(default)]
    pub shim_pid: u32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct ExitRecord {
    pid: u32,
    status: u32,
    secs: u64,
    nanos: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct Bundle {
    pub path: PathBuf,
}

/// containerd's identifier rule: alphanumeric start, then `[A-Za-z0-9._-]`, at most 76 chars.
/// Keeps ids safe as path components.
pub(crate) fn validate_id(what: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 76
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} {id:?} is not a valid identifier"
        )))
    }
}

impl Bundle {
    pub fn at(state_dir: &Path, ns: &str, id: &str) -> Bundle {
        Bundle {
            path: state_dir.join(ns).join(id),
        }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.path.join("rootfs")
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Creates the bundle directory exclusively (the directory is the lock against a concurrent
    /// create of the same id), writes `config.json` and the empty `rootfs/`.
    pub fn create(&self, spec: &[u8]) -> Result<()> {
        let spec = prepare_spec(spec)?;
        if let Some(parent) = self.path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(parent)
                .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
        }
        match fs::DirBuilder::new().mode(0o711).create(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists(format!(
                    "task bundle {}",
                    self.path.display()
                )))
            }
            Err(e) => return Err(Error::io(format!("create {}", self.path.display()), e)),
        }
        let res = (|| {
            write_atomic(&self.file("config.json"), &spec)?;
            fs::create_dir(self.rootfs())
                .map_err(|e| Error::io(format!("create {}", self.rootfs().display()), e))
        })();
        if res.is_err() {
            let _ = fs::remove_dir_all(&self.path);
        }
        res
    }

    pub fn write_meta(&self, meta: &Meta) -> Result<()> {
        let data = serde_json::to_vec(meta).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(&self.file(META), &data)
    }

    pub fn read_meta(&self) -> Result<Meta> {
        let data = fs::read(self.file(META))
            .map_err(|e| Error::io(format!("read {}", self.file(META).display()), e))?;
        serde_json::from_slice(&data)
            .map_err(|e| Error::Internal(format!("{}: {e}", self.file(META).display())))
    }

    pub fn write_address(&self, address: &str) -> Result<()> {
        write_atomic(&self.file("address"), address.as_bytes())
    }

    pub fn read_address(&self) -> Result<String> {
        fs::read_to_string(self.file("address"))
            .map(|s| s.trim().to_string())
            .map_err(|e| Error::io(format!("read {}", self.file("address").display()), e))
    }

    /// Records that the shim is gone and how the task ended.
    pub fn write_exit(&self, exit: &Exit) -> Result<()> {
        let d = exit
            .exited_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let rec = ExitRecord {
            pid: exit.pid,
            status: exit.status,
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        };
        let data = serde_json::to_vec(&rec).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(&self.file(EXIT), &data)
    }

    pub fn read_exit(&self) -> Option<Exit> {
        let data = fs::read(self.file(EXIT)).ok()?;
        let rec: ExitRecord = serde_json::from_slice(&data).ok()?;
        Some(Exit {
            pid: rec.pid,
            status: rec.status,
            exited_at: UNIX_EPOCH + Duration::new(rec.secs, rec.nanos),
        })
    }

    /// Remembers a published exit; returns false when it had been published already.
    /// Recorded before publishing: losing an event on a crash beats publishing it twice.
    pub fn mark_published(&self, key: &str) -> Result<bool> {
        let path = self.file(PUBLISHED);
        let seen = fs::read_to_string(&path).unwrap_or_default();
        if seen.lines().any(|l| l == key) {
            return Ok(false);
        }
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        writeln!(f, "{key}")
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        Ok(true)
    }

    /// Creates the `log` FIFO the shim writes its own log to (containerd does the same; the
    /// runc shim blocks at start until someone opens the reading end).
    pub fn create_log_fifo(&self) -> Result<()> {
        let path = self.file("log");
        match nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(e) => Err(Error::io(
                format!("mkfifo {}", path.display()),
                std::io::Error::from(e),
            )),
        }
    }

    /// The last `msg` of runc's JSON log, which carries the real reason of a failed create/exec.
    pub fn last_runtime_log_msg(&self) -> Option<String> {
        let data = fs::read_to_string(self.file("log.json")).ok()?;
        data.lines().rev().find_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            let msg = v.get("msg")?.as_str()?.trim().to_string();
            (!msg.is_empty()).then_some(msg)
        })
    }

    /// Unmounts whatever is stacked on `rootfs/` and removes the bundle. Idempotent.
    pub fn remove(&self) -> Result<()> {
        unmount_all(&self.rootfs());
        let mut attempt = 0;
        loop {
            match fs::remove_dir_all(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                // A late runtime call (a kill racing the exit) can still drop its log file in.
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && attempt < 5 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(Error::io(format!("remove {}", self.path.display()), e)),
            }
        }
    }
}

/// Lazily unmounts every mount stacked on `target` (bounded, in case something keeps mounting).
pub(crate) fn unmount_all(target: &Path) {
    for _ in 0..32 {
        match nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(_) => break,
        }
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let res = (|| -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    res.map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// Validates the spec and clamps a negative `process.oomScoreAdj`: without CAP_SYS_RESOURCE a
/// value below our own cannot be written and runc would die with an opaque error.
pub(crate) fn prepare_spec(spec: &[u8]) -> Result<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(spec)
        .map_err(|e| Error::InvalidArgument(format!("OCI spec is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(Error::InvalidArgument(
            "OCI spec is not a JSON object".into(),
        ));
    }
    let own = fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0);
    if let Some(adj) = v.pointer_mut("/process/oomScoreAdj") {
        if let Some(n) = adj.as_i64() {
            if n < 0 && n < own {
                *adj = serde_json::Value::from(own);
            }
        }
    }
    serde_json::to_vec_pretty(&v).map_err(|e| Error::Internal(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(validate_id("id", "abc-1.2_3").is_ok());
        for bad in ["", "../x", "a/b", ".x", "-x", &"a".repeat(77)] {
            assert!(validate_id("id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn negative_oom_score_is_clamped() {
        let out = prepare_spec(br#"{"process":{"oomScoreAdj":-999,"args":["x"]}}"#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let own: i64 = fs::read_to_string("/proc/self/oom_score_adj")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(v["process"]["oomScoreAdj"], own.max(-999));
        let out = prepare_spec(br#"{"process":{"oomScoreAdj":500}}"#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["process"]["oomScoreAdj"], 500);
        assert!(prepare_spec(b"nope").is_err());
        assert!(prepare_spec(b"[1]").is_err());
    }

    #[test]
    fn published_marks_once() {
        let d = tempfile::tempdir().unwrap();
        let b = Bundle {
            path: d.path().to_path_buf(),
        };
        assert!(b.mark_published("init 42").unwrap());
        assert!(!b.mark_published("init 42").unwrap());
        assert!(b.mark_published("init 43").unwrap());
    }

    #[test]
    fn log_json_last_msg() {
        let d = tempfile::tempdir().unwrap();
        let b = Bundle {
            path: d.path().to_path_buf(),
        };
        assert_eq!(b.last_runtime_log_msg(), None);
        fs::write(
            b.file("log.json"),
            "{\"level\":\"error\",\"msg\":\"first\"}\n{\"level\":\"error\",\"msg\":\"exec: no such file\"}\n",
        )
        .unwrap();
        assert_eq!(
            b.last_runtime_log_msg().as_deref(),
            Some("exec: no such file")
        );
    }
}
