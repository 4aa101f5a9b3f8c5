//! Where the sandbox's pieces are and how big a guest is. berthd writes its `[sandbox]` settings
//! to a JSON file and names it in `BERTH_SANDBOX_CONFIG`; without it the defaults apply (the shim
//! run by containerd itself).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

pub const CONFIG_ENV: &str = "BERTH_SANDBOX_CONFIG";
pub const AGENT_ENV: &str = "BERTH_SANDBOX_AGENT";
pub const DEFAULT_KERNEL: &str = "/usr/bin/linux.uml";
/// The host uid the guest kernel runs as (its user namespace maps guest-root files to it).
/// Far above any uid a distribution hands out, like the ranges Kubernetes user namespaces use.
pub const DEFAULT_HOST_UID: u32 = 1_000_000_000;
pub const DEFAULT_MEMORY_MB: u64 = 128;
/// UML panics at boot below this.
pub const MIN_MEMORY_MB: u64 = 64;

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Which machine runs guests (`uml`; see `backend.rs`).
    pub backend: String,
    /// The guest kernel (`linux.uml`).
    pub kernel: PathBuf,
    /// The statically linked guest agent; empty: looked up (see [`Config::agent_path`]).
    pub agent: PathBuf,
    /// Guest memory when the pod asks for none.
    pub memory_mb: u64,
    pub host_uid: u32,
    /// Where per-sandbox directories live.
    pub state_dir: PathBuf,
    pub boot_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            backend: "uml".into(),
            kernel: PathBuf::from(DEFAULT_KERNEL),
            agent: PathBuf::new(),
            memory_mb: DEFAULT_MEMORY_MB,
            host_uid: DEFAULT_HOST_UID,
            state_dir: PathBuf::from("/run/berth-sandbox"),
            boot_timeout_secs: 30,
        }
    }
}

impl Config {
    pub fn load() -> Result<Config> {
        let Some(path) = std::env::var_os(CONFIG_ENV) else {
            return Ok(Config::default());
        };
        let text = std::fs::read(&path)
            .map_err(Error::io(format!("read {}", Path::new(&path).display())))?;
        serde_json::from_slice(&text).map_err(|e| {
            Error::InvalidArgument(format!(
                "sandbox config {}: {e}",
                Path::new(&path).display()
            ))
        })
    }

    /// The agent: the configured path, `$BERTH_SANDBOX_AGENT`, then `berth-sandbox-agent` in
    /// `sandbox/` beside or above the shim's directory (a cargo target dir), then
    /// `/usr/local/lib/berth/`. It must be statically linked: the guest has no C library.
    pub fn agent_path(&self) -> Result<PathBuf> {
        let mut candidates = Vec::new();
        if !self.agent.as_os_str().is_empty() {
            candidates.push(self.agent.clone());
        } else {
            if let Some(p) = std::env::var_os(AGENT_ENV) {
                candidates.push(PathBuf::from(p));
            }
            if let Some(dir) = std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(Path::to_path_buf))
            {
                candidates.push(dir.join("sandbox/berth-sandbox-agent"));
                if let Some(up) = dir.parent() {
                    candidates.push(up.join("sandbox/berth-sandbox-agent"));
                }
            }
            candidates.push(PathBuf::from("/usr/local/lib/berth/berth-sandbox-agent"));
        }
        let found = candidates.iter().find(|p| p.is_file()).ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "sandbox guest agent not found (looked at {})",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if !is_static_elf(found)? {
            return Err(Error::FailedPrecondition(format!(
                "sandbox guest agent {} is dynamically linked; build it with scripts/build-sandbox-agent.sh",
                found.display()
            )));
        }
        Ok(found.clone())
    }

    pub fn check_kernel(&self) -> Result<()> {
        if self.kernel.is_file() {
            Ok(())
        } else {
            Err(Error::FailedPrecondition(format!(
                "sandbox guest kernel {} is not installed (Debian package user-mode-linux)",
                self.kernel.display()
            )))
        }
    }
}

/// An ELF executable without a PT_INTERP program header needs no dynamic loader.
pub fn is_static_elf(path: &Path) -> Result<bool> {
    let data = std::fs::read(path).map_err(Error::io(format!("read {}", path.display())))?;
    let bad = || Error::FailedPrecondition(format!("{} is not a 64-bit ELF file", path.display()));
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return Err(bad());
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[32..40].try_into().map_err(|_| bad())?) as usize;
    let phentsize = u16_at(54);
    let phnum = u16_at(56);
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > data.len() {
            return Err(bad());
        }
        let p_type = u32::from_le_bytes(data[o..o + 4].try_into().map_err(|_| bad())?);
        if p_type == 3 {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_and_static_binaries_are_told_apart() {
        assert!(!is_static_elf(Path::new("/bin/ls")).unwrap());
        assert!(is_static_elf(Path::new("/bin/busybox")).unwrap());
        assert!(is_static_elf(Path::new("/etc/hostname")).is_err());
    }

    #[test]
    fn partial_config_keeps_defaults() {
        let c: Config = serde_json::from_str(r#"{"memory_mb": 256}"#).unwrap();
        assert_eq!(c.memory_mb, 256);
        assert_eq!(c.kernel, PathBuf::from(DEFAULT_KERNEL));
    }
}
