//! Public request/response types at the crate boundary (prost types, no rust-protobuf).

use std::path::PathBuf;
use std::time::SystemTime;

/// Where the task manager keeps its files and what it tells shims.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Per-boot state: bundles live in `<state_dir>/<ns>/<id>`.
    pub state_dir: PathBuf,
    /// Persistent work dirs (reserved; nothing is kept there yet).
    pub root_dir: PathBuf,
    /// berthd's gRPC socket, passed to shims as `-address`.
    pub address: PathBuf,
    /// The events ttrpc socket this crate serves; passed to shims as `TTRPC_ADDRESS`.
    pub ttrpc_address: PathBuf,
    /// Searched for shim binaries before `$PATH`.
    pub shim_dirs: Vec<PathBuf>,
    /// Extra environment for every shim (e.g. where the sandbox shim finds its settings).
    pub shim_env: Vec<(String, String)>,
}

/// One rootfs mount, as containerd's `types.Mount`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mount {
    pub r#type: String,
    pub source: String,
    pub target: String,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct CreateTask {
    pub id: String,
    /// OCI runtime spec (JSON).
    pub spec: Vec<u8>,
    /// e.g. `io.containerd.runc.v2`, or an absolute path to a shim binary.
    pub runtime: String,
    pub runtime_options: Option<prost_types::Any>,
    pub rootfs: Vec<Mount>,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    pub checkpoint: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ExecProcess {
    pub exec_id: String,
    /// OCI process (JSON) as `types.containerd.io/opencontainers/runtime-spec/1/Process`.
    pub spec: prost_types::Any,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: u32,
    pub status: u32,
    pub exited_at: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
    Paused,
    Pausing,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessState {
    /// The task (container) id.
    pub id: String,
    /// Empty for the init process.
    pub exec_id: String,
    pub pid: u32,
    pub status: Status,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    pub exit_status: u32,
    pub exited_at: Option<SystemTime>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub info: Option<prost_types::Any>,
}

/// A task named by namespace and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRef {
    pub namespace: String,
    pub id: String,
}

/// What [`crate::TaskManager::recover`] found on disk.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Tasks whose shim answered; they are managed again (running or stopped).
    pub reconnected: Vec<TaskRef>,
    /// Tasks that were already marked dead (shim gone) and await delete.
    pub stopped: Vec<TaskRef>,
    /// Bundles whose shim was gone: cleaned up and removed, exit published.
    pub cleaned: Vec<TaskRef>,
    /// Bundles that could not be handled; left in place.
    pub errors: Vec<String>,
}
