//! CRI building blocks that need no daemon state: the OCI runtime specs of pod sandboxes and
//! their containers, built the way containerd's CRI plugin builds them on top of
//! [`berth_spec::default_spec`], the RuntimeDefault seccomp filter, and the pod's
//! `/etc/hosts` and `/etc/resolv.conf`.

pub mod annotations;
mod caps;
mod cgroups;
mod container;
mod devices;
mod error;
mod files;
mod mountinfo;
mod mounts;
mod resources;
mod sandbox;
pub mod seccomp;
mod user;
mod util;

#[cfg(test)]
mod testutil;

pub use cgroups::DEFAULT_CGROUP_PARENT;
pub use container::{container_spec, ContainerSpec};
pub use error::{Error, ErrorKind, Result};
pub use files::{hosts_file, pod_hostname, resolv_conf, PodFiles};
pub use resources::linux_resources;
pub use sandbox::{sandbox_spec, SandboxSpec, SANDBOX_CPU_SHARES, SANDBOX_OOM_SCORE_ADJ};

/// The containerd namespace CRI objects live in.
pub const CRI_NAMESPACE: &str = "k8s.io";
