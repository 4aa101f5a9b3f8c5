//! The warm pool of sandbox guests (`[sandbox] pool_size`): shims of the sandbox runtime
//! started ahead of any pod, each with its guest kernel already booted inside a network
//! namespace made for it. A sandboxed pod takes one: CNI configures that namespace, and the
//! pod's tasks go to the waiting shim (named in their specs), whose guest takes the pod's
//! interface over — the boot is paid before the pod asks.

use std::collections::VecDeque;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Where pool shims come from and what they are told.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub size: usize,
    /// `containerd-shim-berth-sandbox-v2`, if installed.
    pub shim: Option<PathBuf>,
    /// berthd's socket and its events socket, as every shim gets them.
    pub address: PathBuf,
    pub ttrpc_address: PathBuf,
    pub sandbox_config: PathBuf,
    /// `<state>/sandbox/pool`: one bundle directory per warm shim.
    pub dir: PathBuf,
}

/// A warm shim a pod took: kept in the pod's record so its removal (or a failed start) can
/// make sure the shim and its guest are gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warm {
    pub id: String,
    pub address: String,
    pub netns: PathBuf,
}

pub const SHIM_ADDRESS_ANNOTATION: &str = "io.berth.sandbox.shim-address";
const NAMESPACE: &str = super::NAMESPACE;
/// Marks a pool bundle whose shim serves a pod now.
const TAKEN: &str = "taken";

pub struct Pool {
    cfg: Option<PoolConfig>,
    ready: Mutex<VecDeque<Warm>>,
    filling: tokio::sync::Mutex<()>,
    /// Per warm shim: the task copying its log FIFO into berthd's log.
    logs: Mutex<std::collections::HashMap<String, tokio::task::JoinHandle<()>>>,
}

fn alive(address: &str) -> bool {
    UnixStream::connect(address.strip_prefix("unix://").unwrap_or(address)).is_ok()
}

impl Pool {
    pub fn new(cfg: Option<PoolConfig>) -> Pool {
        Pool {
            cfg: cfg.filter(|c| c.size > 0),
            ready: Mutex::new(VecDeque::new()),
            filling: tokio::sync::Mutex::new(()),
            logs: Mutex::new(std::collections::HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.cfg.is_some()
    }

    /// How many warm guests wait right now.
    pub fn len(&self) -> usize {
        self.ready.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// The oldest warm shim that still answers (its guest booted longest ago), marked as a
    /// pod's so that no drain stops it.
    pub fn take(&self) -> Option<Warm> {
        let cfg = self.cfg.as_ref()?;
        let mut q = self.ready.lock().ok()?;
        while let Some(w) = q.pop_front() {
            if alive(&w.address) {
                let _ = std::fs::write(cfg.dir.join(&w.id).join(TAKEN), "");
                return Some(w);
            }
            tracing::warn!(id = %w.id, "warm sandbox shim is gone; skipped");
        }
        None
    }

    /// Starts warm shims until the pool is full (one filler at a time).
    pub async fn fill(&self, cni: &berth_cni::Cni) {
        let Some(cfg) = &self.cfg else { return };
        let Ok(_one) = self.filling.try_lock() else {
            return;
        };
        while self.len() < cfg.size {
            match spawn(cfg, cni).await {
                Ok((w, log)) => {
                    if let (Some(h), Ok(mut logs)) = (log, self.logs.lock()) {
                        logs.insert(w.id.clone(), h);
                    }
                    tracing::info!(id = %w.id, "warm sandbox guest started");
                    if let Ok(mut q) = self.ready.lock() {
                        q.push_back(w);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a warm sandbox guest");
                    return;
                }
            }
        }
    }

    /// Stops every waiting shim and whatever an earlier berthd left in the pool directory.
    pub async fn drain(&self, cni: &berth_cni::Cni) {
        let Some(cfg) = &self.cfg else { return };
        let _one = self.filling.lock().await;
        if let Ok(mut q) = self.ready.lock() {
            q.clear();
        }
        let entries: Vec<PathBuf> = std::fs::read_dir(&cfg.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        for dir in entries {
            if dir.join(TAKEN).exists() {
                continue;
            }
            let Some(id) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            let w = Warm {
                netns: cni_netns(cni, &id),
                address: std::fs::read_to_string(dir.join("address")).unwrap_or_default(),
                id,
            };
            self.stop_log(&w.id);
            discard(cfg, cni, &w).await;
        }
    }

    /// A pod that held `w` is gone (or never started): its shim and guest must be too.
    pub async fn release(&self, cni: &berth_cni::Cni, w: &Warm) {
        if let Some(cfg) = &self.cfg {
            discard(cfg, cni, w).await;
        }
        self.stop_log(&w.id);
    }

    fn stop_log(&self, id: &str) {
        if let Some(h) = self.logs.lock().ok().and_then(|mut l| l.remove(id)) {
            h.abort();
        }
    }
}

fn cni_netns(cni: &berth_cni::Cni, id: &str) -> PathBuf {
    cni.netns_dir().join(id)
}

/// Kills the warm shim (pid it recorded) and lets the shim's `delete` action kill its guest and
/// remove its directory; the namespace goes with the pod (or here, if no pod took it).
async fn discard(cfg: &PoolConfig, cni: &berth_cni::Cni, w: &Warm) {
    let bundle = cfg.dir.join(&w.id);
    if let Some(pid) = std::fs::read_to_string(bundle.join("shim.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("containerd-shim-berth-sandbox") {
            // SAFETY: kill(2) of the shim this pool started (checked by its command line).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    if let Some(shim) = &cfg.shim {
        if bundle.exists() {
            let _ = tokio::process::Command::new(shim)
                .args(["-namespace", NAMESPACE, "-id", &w.id, "delete"])
                .current_dir(&bundle)
                .env("BERTH_SANDBOX_CONFIG", &cfg.sandbox_config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
    }
    if !w.address.is_empty() {
        let _ = std::fs::remove_file(w.address.strip_prefix("unix://").unwrap_or(&w.address));
    }
    if w.netns.exists() {
        if let Err(e) = cni.remove_netns(&w.netns).await {
            tracing::warn!(error = %e, "remove warm netns");
        }
    }
    let _ = std::fs::remove_dir_all(&bundle);
}

/// Starts one warm shim: a network namespace, then the shim's `start` action with
/// `BERTH_SANDBOX_PREWARM` naming it (the server boots its guest there at once). Its log FIFO
/// is copied into berthd's log, as for the shims the task manager starts.
async fn spawn(
    cfg: &PoolConfig,
    cni: &berth_cni::Cni,
) -> Result<(Warm, Option<tokio::task::JoinHandle<()>>), String> {
    let shim = cfg
        .shim
        .as_ref()
        .ok_or("containerd-shim-berth-sandbox-v2 is not installed")?;
    let id = format!("warm-{}", &super::meta::new_id()[..16]);
    let netns = cni
        .create_netns(&id)
        .await
        .map_err(|e| format!("warm netns: {e}"))?;
    let bundle = cfg.dir.join(&id);
    let w = Warm {
        id: id.clone(),
        address: String::new(),
        netns: netns.clone(),
    };
    if let Err(e) = std::fs::create_dir_all(&bundle) {
        discard(cfg, cni, &w).await;
        return Err(format!("create {}: {e}", bundle.display()));
    }
    let log = bundle.join("log");
    let reader = match nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
        Ok(()) => berth_runtime::spawn_log_reader(&log, NAMESPACE, &id),
        Err(e) => {
            tracing::warn!(error = %e, "warm shim log fifo");
            None
        }
    };
    let publish = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "berthd".into());
    let out = tokio::process::Command::new(shim)
        .arg("-namespace")
        .arg(NAMESPACE)
        .arg("-address")
        .arg(&cfg.address)
        .arg("-publish-binary")
        .arg(publish)
        .arg("-id")
        .arg(&id)
        .arg("start")
        .current_dir(&bundle)
        .env("TTRPC_ADDRESS", &cfg.ttrpc_address)
        .env("GRPC_ADDRESS", &cfg.address)
        .env("NAMESPACE", NAMESPACE)
        .env("BERTH_SANDBOX_CONFIG", &cfg.sandbox_config)
        .env("BERTH_SANDBOX_PREWARM", &netns)
        .stdin(Stdio::null())
        .output()
        .await;
    let address = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Ok(o) => {
            if let Some(h) = &reader {
                h.abort();
            }
            discard(cfg, cni, &w).await;
            return Err(format!(
                "warm shim start: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Err(e) => {
            if let Some(h) = &reader {
                h.abort();
            }
            discard(cfg, cni, &w).await;
            return Err(format!("run {}: {e}", shim.display()));
        }
    };
    Ok((Warm { address, ..w }, reader))
}

/// Names the warm shim in a spec the pod's tasks are created from.
pub fn annotate(spec: Vec<u8>, address: &str) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&spec) else {
        return spec;
    };
    if let Some(obj) = v.as_object_mut() {
        let ann = obj
            .entry("annotations")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(a) = ann.as_object_mut() {
            a.insert(SHIM_ADDRESS_ANNOTATION.into(), address.into());
        }
    }
    serde_json::to_vec(&v).unwrap_or(spec)
}

/// The shim binary beside berthd, else on PATH.
pub fn find_shim(exe_dir: Option<&Path>) -> Option<PathBuf> {
    let name = "containerd-shim-berth-sandbox-v2";
    exe_dir
        .map(|d| d.join(name))
        .into_iter()
        .chain(
            std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        )
        .find(|p| p.is_file())
}
