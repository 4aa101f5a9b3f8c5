//! berth's containerd shim v2 for OCI runtimes (runc/crun), and the parts other berth shims
//! share with it: start/delete actions, the ttrpc server, events, stdio and errors.

pub mod cleanup;
pub mod cli;
pub mod cpuacct;
pub mod error;
pub mod events;
pub mod mount;
pub mod oom;
pub mod reaper;
pub mod runc;
pub mod server;
pub mod service;
pub mod spec;
pub mod start;
pub mod stdio;

pub const RUNTIME_ID: &str = "io.containerd.berth.v2";
