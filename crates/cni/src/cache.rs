//! The per-pod record of what ADD ran and returned, so DEL and CHECK replay exactly
//! that after a daemon restart or a config change. Blocking functions: call them from
//! `spawn_blocking`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;
use crate::types::{Bandwidth, PortMapping};

const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Entry {
    pub format: u32,
    pub container_id: String,
    pub ifname: String,
    pub netns: PathBuf,
    pub args: Vec<(String, String)>,
    pub port_mappings: Vec<PortMapping>,
    pub bandwidth: Option<Bandwidth>,
    /// The config file ADD read, for messages only.
    pub config_path: PathBuf,
    /// The normalized network list ADD ran.
    pub config: Value,
    /// The final ADD result; `None` while ADD is in flight (a crash then leaves an entry
    /// that still lets DEL clean up).
    pub result: Option<Value>,
}

impl Entry {
    pub fn new_format() -> u32 {
        FORMAT
    }
}

pub(crate) fn path(dir: &Path, container_id: &str) -> PathBuf {
    // container_id is validated as a single safe path component before we get here.
    dir.join(container_id)
}

/// Writes the entry atomically: a reader sees the old entry or the new one, never half.
pub(crate) fn write(dir: &Path, entry: &Entry) -> Result<(), Error> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create CNI cache dir", dir, e))?;
    let dest = path(dir, &entry.container_id);
    // Unique per process and call, so parallel writers never share a temp file.
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{}",
        entry.container_id,
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let bytes = serde_json::to_vec(entry)
        .map_err(|e| Error::io("encode CNI cache", &dest, std::io::Error::other(e)))?;
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("write CNI cache", &tmp, e));
    }
    std::fs::rename(&tmp, &dest).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("rename CNI cache into place", &dest, e)
    })
}

pub(crate) fn read(dir: &Path, container_id: &str) -> Result<Option<Entry>, Error> {
    let p = path(dir, container_id);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read CNI cache", &p, e)),
    };
    let entry: Entry = serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid_config(&p, format!("unreadable CNI cache entry: {e}")))?;
    if entry.format != FORMAT || entry.container_id != container_id {
        return Err(Error::invalid_config(
            &p,
            format!(
                "CNI cache entry has format {} for {:?}, expected format {FORMAT} for {container_id:?}",
                entry.format, entry.container_id
            ),
        ));
    }
    Ok(Some(entry))
}

pub(crate) fn remove(dir: &Path, container_id: &str) -> Result<(), Error> {
    let p = path(dir, container_id);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove CNI cache", &p, e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(id: &str) -> Entry {
        Entry {
            format: Entry::new_format(),
            container_id: id.into(),
            ifname: "eth0".into(),
            netns: "/run/x".into(),
            args: vec![("K8S_POD_NAME".into(), "p".into())],
            port_mappings: vec![PortMapping {
                host_port: 80,
                container_port: 8080,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
            bandwidth: None,
            config_path: "/etc/cni/net.d/10.conflist".into(),
            config: json!({"name": "n"}),
            result: Some(json!({"ips": []})),
        }
    }

    #[test]
    fn round_trip_overwrite_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        assert_eq!(read(&cache, "a").unwrap(), None);
        let mut e = entry("a");
        write(&cache, &e).unwrap();
        assert_eq!(read(&cache, "a").unwrap(), Some(e.clone()));
        e.result = None;
        write(&cache, &e).unwrap();
        assert_eq!(read(&cache, "a").unwrap(), Some(e));
        // No temp files are left beside the entry.
        let names: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|d| d.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a")]);
        remove(&cache, "a").unwrap();
        remove(&cache, "a").unwrap();
        assert_eq!(read(&cache, "a").unwrap(), None);
    }

    #[test]
    fn corrupt_or_foreign_entry_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "{").unwrap();
        let msg = read(dir.path(), "a").unwrap_err().to_string();
        assert!(msg.contains("unreadable CNI cache entry"), "{msg}");
        write(dir.path(), &entry("b")).unwrap();
        std::fs::rename(dir.path().join("b"), dir.path().join("c")).unwrap();
        assert!(read(dir.path(), "c").is_err());
    }
}
