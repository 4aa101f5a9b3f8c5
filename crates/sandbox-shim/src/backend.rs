//! The machine a sandbox's guest runs on, behind one small interface. Here it is User-Mode
//! Linux (`vm.rs`): the guest kernel is a confined host process, the sandbox directory reaches
//! it through hostfs and the agent's line is a console mapped to pipes. A KVM microVM (QEMU
//! microvm or Cloud Hypervisor, the sandbox directory over virtio-fs, the line over vsock) fits
//! the same calls on hosts with hardware virtualization; this one has none to test it on.

use std::path::Path;

use crate::error::{Error, Result};
use crate::vm::{self, Vm, VmSpec};

pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    /// Lays out the sandbox directory the guest will see.
    fn prepare(&self, spec: &VmSpec) -> Result<()>;
    /// Starts the guest: its host pid and the two ends of the agent's line.
    fn start(&self, spec: &VmSpec) -> Result<Vm>;
    /// Ends the guest at once (everything it started on the host goes with it).
    fn kill(&self, pid: i32);
    /// Undoes `prepare` once the guest has ended.
    fn remove(&self, dir: &Path) -> Result<()>;
}

pub struct UserModeLinux;

impl Backend for UserModeLinux {
    fn name(&self) -> &'static str {
        "uml"
    }

    fn prepare(&self, spec: &VmSpec) -> Result<()> {
        vm::prepare_dir(spec)
    }

    fn start(&self, spec: &VmSpec) -> Result<Vm> {
        vm::spawn(spec)
    }

    fn kill(&self, pid: i32) {
        vm::kill(pid)
    }

    fn remove(&self, dir: &Path) -> Result<()> {
        vm::remove_dir(dir)
    }
}

/// The backend a config names (`uml`, the default).
pub fn named(name: &str) -> Result<Box<dyn Backend>> {
    match name {
        "" | "uml" => Ok(Box::new(UserModeLinux)),
        other => Err(Error::InvalidArgument(format!(
            "sandbox backend {other:?} is not available (this build has: uml)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_backends_are_named() {
        assert!(named("uml").is_ok());
        let e = named("kvm")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("\"kvm\"") && e.contains("uml"), "{e}");
    }
}
