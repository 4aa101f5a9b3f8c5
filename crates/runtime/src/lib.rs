//! berth-runtime: runs tasks through containerd shim v2 binaries (task API v2 and v3), serves
//! the events ttrpc socket shims publish to, and finds its tasks again after a daemon restart.
//! Knows nothing of gRPC, CRI or the metadata store.

mod binary;
mod bundle;
mod convert;
mod error;
mod events;
mod manager;
mod proc;
mod shim;
mod types;

pub use error::{Error, ErrorKind, Result};
pub use events::EventSink;
pub use manager::TaskManager;
pub use shim::spawn_log_reader;
pub use types::{
    CreateTask, ExecProcess, Exit, Mount, ProcessInfo, ProcessState, RecoveryReport, RuntimeConfig,
    Status, TaskRef,
};

/// The topic of task exit events (`containerd.events.TaskExit`).
pub const TASK_EXIT_TOPIC: &str = manager::TASK_EXIT_TOPIC;
