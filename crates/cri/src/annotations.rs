//! The `io.kubernetes.cri.*` annotations containerd's CRI plugin writes into every spec. Shims
//! (berth's, containerd's runc v2, Kata, gVisor) read them: the sandbox id groups a pod's
//! containers into one shim, the container type tells a VM shim whether to boot a VM.

use std::collections::HashMap;

use oci_spec::runtime::Spec;

pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const CONTAINER_TYPE_SANDBOX: &str = "sandbox";
pub const CONTAINER_TYPE_CONTAINER: &str = "container";
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
pub const SANDBOX_LOG_DIR: &str = "io.kubernetes.cri.sandbox-log-directory";
pub const SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
pub const SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
pub const SANDBOX_CPU_SHARES: &str = "io.kubernetes.cri.sandbox-cpu-shares";
pub const SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";
pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

/// Prefix of the annotations only the runtime may set.
const RESERVED_PREFIX: &str = "io.kubernetes.cri.";

/// Sets the spec's annotations: the request's own, minus any in berth's reserved namespace, then
/// berth's, so a request cannot forge the sandbox id a shim is chosen by.
pub(crate) fn set(spec: &mut Spec, request: &HashMap<String, String>, ours: &[(&str, String)]) {
    let mut all: HashMap<String, String> = request
        .iter()
        .filter(|(k, _)| !k.starts_with(RESERVED_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in ours {
        all.insert((*k).to_string(), v.clone());
    }
    spec.set_annotations(Some(all));
}
