//! Fixtures shared by the spec tests: a pod config, the pod's files in a tempdir, images.

use std::path::{Path, PathBuf};

use k8s_cri::v1::{
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata,
};
use oci_spec::runtime::Spec;

use crate::PodFiles;

pub(crate) fn pod_config() -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web".into(),
            uid: "uid-123".into(),
            namespace: "shop".into(),
            attempt: 0,
        }),
        hostname: "web-0".into(),
        log_directory: "/var/log/pods/shop_web_uid-123".into(),
        annotations: [("team".to_string(), "blue".to_string())].into(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption::default()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod's security context, created if absent.
pub(crate) fn pod_sc(cfg: &mut PodSandboxConfig) -> &mut LinuxSandboxSecurityContext {
    cfg.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// A pod's files written into a tempdir, removed with it.
pub(crate) struct PodDir {
    pub dir: tempfile::TempDir,
    pub files: PodFiles,
}

impl PodDir {
    pub(crate) fn new() -> PodDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path();
        std::fs::write(p.join("hostname"), "web-0\n").expect("hostname");
        std::fs::write(p.join("hosts"), crate::hosts_file("web-0", &[])).expect("hosts");
        std::fs::write(p.join("resolv.conf"), "nameserver 10.0.0.10\n").expect("resolv");
        std::fs::create_dir(p.join("shm")).expect("shm");
        let files = PodFiles {
            hostname: p.join("hostname"),
            hosts: p.join("hosts"),
            resolv_conf: p.join("resolv.conf"),
            shm: Some(p.join("shm")),
        };
        PodDir { dir, files }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

pub(crate) fn json(spec: &Spec) -> serde_json::Value {
    serde_json::to_value(spec).expect("json")
}

/// (type, path) of each namespace in the spec.
pub(crate) fn namespaces(spec: &Spec) -> Vec<(String, Option<PathBuf>)> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
        .map(|n| (n.typ().to_string(), n.path().clone()))
        .collect()
}

pub(crate) fn ns_path(spec: &Spec, typ: &str) -> Option<Option<PathBuf>> {
    namespaces(spec)
        .into_iter()
        .find(|(t, _)| t == typ)
        .map(|(_, p)| p)
}

pub(crate) fn mount_dsts(spec: &Spec) -> Vec<String> {
    spec.mounts()
        .iter()
        .flatten()
        .map(|m| m.destination().display().to_string())
        .collect()
}

/// A rootfs with account databases, for name lookups.
pub(crate) fn rootfs_with_users() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(d.path().join("etc")).expect("etc");
    std::fs::write(
        d.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nwww:x:33:34::/var/www:/bin/sh\n",
    )
    .expect("passwd");
    std::fs::write(
        d.path().join("etc/group"),
        "root:x:0:\nwww:x:34:\nvideo:x:44:www\naudio:x:29:www,root\n",
    )
    .expect("group");
    d
}
