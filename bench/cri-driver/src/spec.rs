//! The pod and container configs a scenario sends, shaped like the kubelet's (own pid namespace
//! per container, network and IPC shared in the pod, log directory per pod).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1::*;

/// The label every pod and container of a run carries, so teardown finds exactly its own.
pub const TAG_LABEL: &str = "berth-bench";
const POD_NAMESPACE: &str = "berth-bench";

/// What every pod of one run looks like.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Distinguishes this run's pods from anything else on the daemon.
    pub tag: String,
    pub image: String,
    /// Empty: the image's own entrypoint and cmd.
    pub command: Vec<String>,
    pub containers_per_pod: usize,
    /// Pod log directories go under it, one per pod.
    pub log_dir: PathBuf,
    /// cgroupfs parent; each pod gets `<parent>/<pod name>`. Empty: the daemon's default.
    pub cgroup_parent: String,
    pub runtime_handler: String,
}

fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

impl Plan {
    pub fn pod_name(&self, i: usize) -> String {
        format!("{}-{i}", self.tag)
    }

    pub fn pod_log_dir(&self, i: usize) -> PathBuf {
        self.log_dir.join(self.pod_name(i))
    }

    fn labels(&self) -> HashMap<String, String> {
        HashMap::from([(TAG_LABEL.to_string(), self.tag.clone())])
    }

    pub fn pod_config(&self, i: usize) -> PodSandboxConfig {
        let name = self.pod_name(i);
        let cgroup_parent = if self.cgroup_parent.is_empty() {
            String::new()
        } else {
            format!("{}/{name}", self.cgroup_parent.trim_end_matches('/'))
        };
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.clone(),
                uid: format!("{name}-uid"),
                namespace: POD_NAMESPACE.to_string(),
                attempt: 0,
            }),
            hostname: name,
            log_directory: path_string(&self.pod_log_dir(i)),
            labels: self.labels(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent,
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn container_config(&self, j: usize) -> ContainerConfig {
        let name = format!("c{j}");
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.clone(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: self.command.clone(),
            log_path: format!("{name}.log"),
            labels: self.labels(),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn path_string(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            tag: "t1".into(),
            image: "127.0.0.1:5000/busybox:latest".into(),
            command: vec!["sleep".into(), "3600".into()],
            containers_per_pod: 4,
            log_dir: "/tmp/logs".into(),
            cgroup_parent: "/bench-1/".into(),
            runtime_handler: String::new(),
        }
    }

    #[test]
    fn pods_have_distinct_names_uids_and_cgroups() {
        let p = plan();
        let (a, b) = (p.pod_config(0), p.pod_config(1));
        let (ma, mb) = (
            a.metadata.unwrap_or_default(),
            b.metadata.unwrap_or_default(),
        );
        assert_ne!(ma.name, mb.name);
        assert_ne!(ma.uid, mb.uid);
        assert_eq!(a.linux.unwrap_or_default().cgroup_parent, "/bench-1/t1-0");
        assert_eq!(a.log_directory, "/tmp/logs/t1-0");
        assert_eq!(a.labels.get(TAG_LABEL).map(String::as_str), Some("t1"));
    }

    #[test]
    fn containers_keep_their_own_pid_namespace() {
        let c = plan().container_config(2);
        assert_eq!(c.metadata.unwrap_or_default().name, "c2");
        assert_eq!(c.log_path, "c2.log");
        let ns = c
            .linux
            .and_then(|l| l.security_context)
            .and_then(|s| s.namespace_options)
            .unwrap_or_default();
        assert_eq!(ns.pid, NamespaceMode::Container as i32);
        assert_eq!(ns.network, NamespaceMode::Pod as i32);
    }

    #[test]
    fn no_cgroup_parent_leaves_it_to_the_daemon() {
        let mut p = plan();
        p.cgroup_parent.clear();
        assert_eq!(p.pod_config(3).linux.unwrap_or_default().cgroup_parent, "");
    }
}
