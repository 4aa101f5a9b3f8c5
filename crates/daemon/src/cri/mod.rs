//! Kubernetes CRI v1 on berthd's socket: the image service, and the runtime service's pods
//! (pause container, CNI network, pod files), containers (specs from berth-cri, CRI log files),
//! ExecSync, stats and RuntimeClass handlers. CRI objects live in containerd's `k8s.io`
//! namespace, visible to `ctr -n k8s.io`. Exec/attach/port-forward streaming is issue 6.

pub mod container;
pub mod exec;
pub mod handlers;
pub mod images;
pub mod io;
pub mod log;
pub mod meta;
pub mod persist;
pub mod recover;
pub mod runtime;
pub mod sandbox;
pub mod stats;
pub mod streaming;
pub mod warm;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tonic::Status;

use crate::config::CriConfig;

/// containerd's namespace for everything the kubelet makes.
pub const NAMESPACE: &str = "k8s.io";

/// The CRI's state beside the daemon's: records, the CNI client, running log copiers.
pub struct Cri {
    pub config: CriConfig,
    pub handlers: handlers::Handlers,
    pub records: meta::Records,
    pub cni: berth_cni::Cni,
    /// `<state>/cri`: FIFOs, pod files, CNI cache, network namespaces.
    pub state_dir: PathBuf,
    /// Open log files of running containers (ReopenContainerLog swaps them).
    logs: Mutex<HashMap<String, Arc<log::LogFile>>>,
    /// Per container: tells its output copiers that the process has exited.
    exits: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// One lifecycle operation at a time per pod or container.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub pod_cidr: Mutex<String>,
    /// Per running container: its output as it is copied to the log, for attach sessions.
    taps: Mutex<HashMap<String, log::Tap>>,
    /// The streaming server Exec/Attach/PortForward URLs point at (set once at start-up).
    pub stream: std::sync::OnceLock<berth_stream::Server>,
    /// Per container: when its writable layer was last measured, and what was found.
    layer_usage: Mutex<HashMap<String, (std::time::Instant, LayerUsage)>>,
    /// Sandbox guests booted ahead of their pods.
    pub warm: warm::Pool,
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cri {
    pub fn new(
        config: CriConfig,
        state: &std::path::Path,
        sandbox_kernel: &std::path::Path,
        pool: Option<warm::PoolConfig>,
    ) -> Cri {
        let state_dir = state.join("cri");
        let cni = berth_cni::Cni::new(berth_cni::Config {
            conf_dir: config.cni.conf_dir.clone(),
            bin_dirs: config.cni.bin_dirs.clone(),
            state_dir: state_dir.join("cni"),
        });
        Cri {
            handlers: handlers::Handlers::from_config(&config, sandbox_kernel),
            config,
            records: Default::default(),
            cni,
            state_dir,
            logs: Default::default(),
            exits: Default::default(),
            locks: Default::default(),
            pod_cidr: Default::default(),
            layer_usage: Default::default(),
            taps: Default::default(),
            stream: Default::default(),
            warm: warm::Pool::new(pool),
        }
    }

    /// Serialises lifecycle calls on one object (the kubelet may retry while one is running).
    pub async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = guard(&self.locks)
            .entry(id.to_string())
            .or_default()
            .clone();
        m.lock_owned().await
    }

    pub fn forget_lock(&self, id: &str) {
        guard(&self.locks).remove(id);
    }

    pub fn set_log(&self, id: &str, log: Arc<log::LogFile>) {
        guard(&self.logs).insert(id.to_string(), log);
    }

    pub fn log(&self, id: &str) -> Option<Arc<log::LogFile>> {
        guard(&self.logs).get(id).cloned()
    }

    pub fn forget_log(&self, id: &str) {
        guard(&self.logs).remove(id);
    }

    /// A receiver that turns true when the container's process has exited.
    pub fn exit_signal(&self, id: &str) -> watch::Receiver<bool> {
        guard(&self.exits)
            .entry(id.to_string())
            .or_insert_with(|| watch::channel(false).0)
            .subscribe()
    }

    pub fn signal_exit(&self, id: &str) {
        if let Some(tx) = guard(&self.exits).remove(id) {
            let _ = tx.send(true);
        }
    }

    /// A writable-layer usage measured less than `ttl` ago.
    pub fn layer_usage(&self, id: &str, ttl: std::time::Duration) -> Option<LayerUsage> {
        guard(&self.layer_usage)
            .get(id)
            .filter(|(at, _)| at.elapsed() < ttl)
            .map(|(_, u)| *u)
    }

    pub fn set_layer_usage(&self, id: &str, usage: LayerUsage) {
        guard(&self.layer_usage).insert(id.to_string(), (std::time::Instant::now(), usage));
    }

    pub fn forget_layer_usage(&self, id: &str) {
        guard(&self.layer_usage).remove(id);
    }

    pub fn new_output_tap(&self, id: &str) -> log::Tap {
        guard(&self.taps)
            .entry(id.to_string())
            .or_insert_with(|| tokio::sync::broadcast::channel(256).0)
            .clone()
    }

    pub fn output_tap(&self, id: &str) -> Option<log::Tap> {
        guard(&self.taps).get(id).cloned()
    }

    pub fn forget_output_tap(&self, id: &str) {
        guard(&self.taps).remove(id);
    }

    pub fn io_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("io").join(id)
    }

    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("sandboxes").join(id)
    }
}

impl crate::services::Service {
    /// The pod an id (or unique prefix) names; NotFound otherwise.
    pub fn cri_pod(&self, id: &str) -> Result<meta::SandboxMeta, Status> {
        self.cri
            .records
            .sandbox(id)
            .ok_or_else(|| Status::not_found(format!("pod sandbox {id:?} not found")))
    }

    /// The container an id (or unique prefix) names; NotFound otherwise.
    pub fn cri_container(&self, id: &str) -> Result<meta::ContainerMeta, Status> {
        self.cri
            .records
            .container(id)
            .ok_or_else(|| Status::not_found(format!("container {id:?} not found")))
    }
}

/// A writable layer's (bytes, inodes, measured at in ns since the epoch).
pub type LayerUsage = (u64, u64, i64);

/// A request field that must be present.
pub fn required<T>(v: Option<T>, what: &str) -> Result<T, Status> {
    v.ok_or_else(|| Status::invalid_argument(format!("{what} is required")))
}

/// Whether an error only says the thing is already gone (teardown steps are idempotent).
pub fn is_not_found(s: &Status) -> bool {
    s.code() == tonic::Code::NotFound
}
