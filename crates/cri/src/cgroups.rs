//! Where a pod's and its containers' cgroups go.

use std::path::{Path, PathBuf};

/// Parent of every pod cgroup when neither the pod nor the daemon names one.
pub const DEFAULT_CGROUP_PARENT: &str = "/k8s.io";

/// The cgroup parent a pod uses: the pod config's, else the daemon's, else [`DEFAULT_CGROUP_PARENT`].
pub(crate) fn parent<'a>(pod: &'a str, daemon: &'a str) -> &'a str {
    if !pod.is_empty() {
        pod
    } else if !daemon.is_empty() {
        daemon
    } else {
        DEFAULT_CGROUP_PARENT
    }
}

/// `<parent>/<id>` for cgroupfs. A kubelet using the systemd driver sends a `.slice` parent;
/// runc then wants `slice:prefix:name`, and the `cri-containerd` prefix keeps the scope names
/// that node tools (cAdvisor) already recognise.
pub(crate) fn path(parent: &str, id: &str) -> PathBuf {
    let base = Path::new(parent)
        .file_name()
        .and_then(|b| b.to_str())
        .unwrap_or("");
    if base.ends_with(".slice") {
        return PathBuf::from(format!("{base}:cri-containerd:{id}"));
    }
    Path::new(parent).join(id)
}

/// cgroup v2 hosts give containers their own cgroup namespace.
pub(crate) fn unified_hierarchy() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_and_paths() {
        assert_eq!(parent("", ""), "/k8s.io");
        assert_eq!(parent("", "/berth"), "/berth");
        assert_eq!(parent("/kubepods/pod1", "/berth"), "/kubepods/pod1");
        assert_eq!(path("/k8s.io", "abc"), PathBuf::from("/k8s.io/abc"));
        assert_eq!(
            path("/kubepods/besteffort/podx", "abc"),
            PathBuf::from("/kubepods/besteffort/podx/abc")
        );
        assert_eq!(
            path("/kubepods.slice/kubepods-pod1.slice", "abc"),
            PathBuf::from("kubepods-pod1.slice:cri-containerd:abc")
        );
    }
}
