//! The sandbox runtime's settings, handed to `containerd-shim-berth-sandbox-v2` as a JSON file
//! named in its environment (`BERTH_SANDBOX_CONFIG`).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::Config;

pub const RUNTIME_TYPE: &str = "io.containerd.berth-sandbox.v2";

pub fn config_path(cfg: &Config) -> PathBuf {
    cfg.state.join("sandbox").join("config.json")
}

/// Writes the shim's settings; per-sandbox directories go under berthd's state dir.
pub fn write_config(cfg: &Config) -> anyhow::Result<()> {
    let s = &cfg.sandbox;
    let json = serde_json::json!({
        "kernel": s.kernel,
        "agent": s.agent,
        "memory_mb": s.memory_mb,
        "host_uid": s.host_uid,
        "boot_timeout_secs": s.boot_timeout_secs,
        "state_dir": cfg.state.join("sandbox"),
    });
    let path = config_path(cfg);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("write {}", path.display()))
}

/// The warm pool's settings, when `[sandbox] pool_size` asks for one and the guest kernel
/// is installed.
pub fn pool_config(cfg: &Config) -> Option<crate::cri::warm::PoolConfig> {
    if cfg.sandbox.pool_size == 0 || unavailable(&cfg.sandbox.kernel).is_some() {
        return None;
    }
    let exe = std::env::current_exe().ok();
    let mut ttrpc = cfg.address.clone().into_os_string();
    ttrpc.push(".ttrpc");
    Some(crate::cri::warm::PoolConfig {
        size: cfg.sandbox.pool_size,
        shim: crate::cri::warm::find_shim(exe.as_deref().and_then(Path::parent)),
        address: cfg.address.clone(),
        ttrpc_address: ttrpc.into(),
        sandbox_config: config_path(cfg),
        dir: cfg.state.join("sandbox").join("pool"),
    })
}

/// Why the sandbox runtime cannot run pods here, if it cannot.
pub fn unavailable(kernel: &Path) -> Option<String> {
    (!kernel.is_file()).then(|| {
        format!(
            "its guest kernel {} is not installed (Debian package user-mode-linux)",
            kernel.display()
        )
    })
}
