//! Kubernetes CRI v1 on berthd's socket. This first part serves the image service, `Version`,
//! `Status` and the runtime config; pods and containers (issue 5) answer Unimplemented, clearly,
//! until they exist. CRI objects live in containerd's `k8s.io` namespace, visible to `ctr -n k8s.io`.

pub mod images;
pub mod runtime;

use tonic::Status;

/// containerd's namespace for everything the kubelet makes.
pub const NAMESPACE: &str = "k8s.io";

fn not_yet(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "CRI {rpc} is not implemented in berth yet: only the image service, Version, Status and \
         RuntimeConfig are served so far"
    ))
}
