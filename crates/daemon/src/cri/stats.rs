//! Container and pod stats: cgroup metrics from the shim's `Stats`, the writable layer's usage
//! from the snapshotter, the pod's network counters from its namespace.

use berth_api::metrics::{v1, v2};
use k8s_cri::v1::{
    ContainerAttributes, ContainerStats, CpuUsage, FilesystemIdentifier, FilesystemUsage,
    LinuxPodSandboxStats, MemoryUsage, NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes,
    PodSandboxStats, UInt64Value,
};
use prost::Message;
use tonic::Status;

use super::meta::{now_nanos, ContainerMeta, ContainerState, SandboxMeta};
use super::NAMESPACE;
use crate::daemon::{backend_key, blocking};
use crate::services::Service;

/// How long a writable layer's measured usage is served before it is walked again.
pub const LAYER_USAGE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// What berth reads out of either cgroup version's metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub cpu_nanos: u64,
    pub memory_usage: u64,
    pub working_set: u64,
    pub rss: u64,
    pub pids: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.cpu_nanos += o.cpu_nanos;
        self.memory_usage += o.memory_usage;
        self.working_set += o.working_set;
        self.rss += o.rss;
        self.pids += o.pids;
    }
}

pub fn usage_of(any: &prost_types::Any) -> Option<Usage> {
    if any.type_url.ends_with("cgroups.v1.Metrics") {
        let m = v1::Metrics::decode(any.value.as_slice()).ok()?;
        let mem = m.memory.unwrap_or_default();
        let usage = mem.usage.map(|u| u.usage).unwrap_or_default();
        Some(Usage {
            cpu_nanos: m
                .cpu
                .and_then(|c| c.usage)
                .map(|u| u.total)
                .unwrap_or_default(),
            memory_usage: usage,
            // The kubelet's working set: usage less inactive file cache.
            working_set: usage.saturating_sub(mem.total_inactive_file),
            rss: mem.rss,
            pids: m.pids.map(|p| p.current).unwrap_or_default(),
        })
    } else if any.type_url.ends_with("cgroups.v2.Metrics") {
        let m = v2::Metrics::decode(any.value.as_slice()).ok()?;
        let mem = m.memory.unwrap_or_default();
        Some(Usage {
            cpu_nanos: m.cpu.map(|c| c.usage_usec * 1000).unwrap_or_default(),
            memory_usage: mem.usage,
            working_set: mem.usage.saturating_sub(mem.inactive_file),
            rss: mem.anon,
            pids: m.pids.map(|p| p.current).unwrap_or_default(),
        })
    } else {
        None
    }
}

fn value(v: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value: v })
}

fn cpu(u: &Usage, at: i64) -> CpuUsage {
    CpuUsage {
        timestamp: at,
        usage_core_nano_seconds: value(u.cpu_nanos),
        usage_nano_cores: None,
    }
}

fn memory(u: &Usage, at: i64) -> MemoryUsage {
    MemoryUsage {
        timestamp: at,
        working_set_bytes: value(u.working_set),
        usage_bytes: value(u.memory_usage),
        rss_bytes: value(u.rss),
        ..Default::default()
    }
}

/// rx/tx counters of every interface but `lo`, from /proc/<pid>/net/dev inside the pod.
fn network_usage(pid: u32, at: i64) -> Option<NetworkUsage> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let interfaces: Vec<NetworkInterfaceUsage> = text
        .lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (f.len() >= 11).then(|| NetworkInterfaceUsage {
                name: name.to_string(),
                rx_bytes: value(f[0]),
                rx_errors: value(f[2]),
                tx_bytes: value(f[8]),
                tx_errors: value(f[10]),
            })
        })
        .collect();
    Some(NetworkUsage {
        timestamp: at,
        default_interface: interfaces
            .iter()
            .find(|i| i.name == "eth0")
            .or(interfaces.first())
            .cloned(),
        interfaces,
    })
}

impl Service {
    async fn task_usage(&self, id: &str) -> Option<Usage> {
        let any = self.tasks.stats(NAMESPACE, id).await.ok()??;
        usage_of(&any)
    }

    /// The writable layer's usage, walked at most once per [`LAYER_USAGE_TTL`] per container
    /// (containerd's CRI refreshes it in the background every 10 s): the kubelet polls stats
    /// far more often than layers change meaningfully, and a walk costs a directory traversal.
    async fn writable_layer(&self, id: &str, at: i64) -> Option<FilesystemUsage> {
        let sn = self.snapshotter("").ok()?;
        let mountpoint = self.root.join("snapshots").join(sn.name());
        let (size, inodes, taken) = match self.cri.layer_usage(id, LAYER_USAGE_TTL) {
            Some(hit) => hit,
            None => {
                let key = backend_key(NAMESPACE, id);
                let usage = blocking(move || Ok(sn.usage(&key).ok())).await.ok()??;
                let entry = (usage.size.max(0) as u64, usage.inodes.max(0) as u64, at);
                self.cri.set_layer_usage(id, entry);
                entry
            }
        };
        Some(FilesystemUsage {
            timestamp: taken,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: mountpoint.to_string_lossy().into_owned(),
            }),
            used_bytes: value(size),
            inodes_used: value(inodes),
        })
    }

    pub async fn cri_container_stats(&self, m: &ContainerMeta) -> (ContainerStats, Usage) {
        let at = now_nanos();
        let usage = if m.state == ContainerState::Running {
            self.task_usage(&m.id).await
        } else {
            None
        };
        let stats = ContainerStats {
            attributes: Some(ContainerAttributes {
                id: m.id.clone(),
                metadata: m.config.metadata.clone(),
                labels: m.config.labels.clone(),
                annotations: m.config.annotations.clone(),
            }),
            cpu: usage.as_ref().map(|u| cpu(u, at)),
            memory: usage.as_ref().map(|u| memory(u, at)),
            writable_layer: self.writable_layer(&m.id, at).await,
            swap: None,
        };
        (stats, usage.unwrap_or_default())
    }

    pub async fn cri_list_container_stats(&self, list: Vec<ContainerMeta>) -> Vec<ContainerStats> {
        let all = futures::future::join_all(list.iter().map(|m| self.cri_container_stats(m))).await;
        all.into_iter().map(|(s, _)| s).collect()
    }

    pub async fn cri_pod_stats(&self, pod: &SandboxMeta) -> Result<PodSandboxStats, Status> {
        let at = now_nanos();
        let containers = self.cri.records.containers_of(&pod.id);
        let per =
            futures::future::join_all(containers.iter().map(|m| self.cri_container_stats(m))).await;
        let mut total = self.task_usage(&pod.id).await.unwrap_or_default();
        let mut stats = Vec::new();
        for (s, u) in per {
            total += u;
            stats.push(s);
        }
        let pid = pod.pid;
        let network = if pod.netns.is_some() && pid > 0 {
            blocking(move || Ok(network_usage(pid, at))).await?
        } else {
            None
        };
        Ok(PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: pod.id.clone(),
                metadata: pod.config.metadata.clone(),
                labels: pod.config.labels.clone(),
                annotations: pod.config.annotations.clone(),
            }),
            linux: Some(LinuxPodSandboxStats {
                cpu: Some(cpu(&total, at)),
                memory: Some(memory(&total, at)),
                network,
                process: Some(k8s_cri::v1::ProcessUsage {
                    timestamp: at,
                    process_count: value(total.pids),
                }),
                containers: stats,
            }),
            windows: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_usage() {
        let m = v1::Metrics {
            pids: Some(v1::PidsStat {
                current: 2,
                limit: 0,
            }),
            cpu: Some(v1::CpuStat {
                usage: Some(v1::CpuUsage {
                    total: 5000,
                    ..Default::default()
                }),
            }),
            memory: Some(v1::MemoryStat {
                rss: 100,
                total_inactive_file: 30,
                usage: Some(v1::MemoryEntry {
                    usage: 200,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let any = prost_types::Any {
            type_url: "io.containerd.cgroups.v1.Metrics".into(),
            value: m.encode_to_vec(),
        };
        let u = usage_of(&any).expect("v1");
        assert_eq!(
            u,
            Usage {
                cpu_nanos: 5000,
                memory_usage: 200,
                working_set: 170,
                rss: 100,
                pids: 2
            }
        );
        let m = v2::Metrics {
            cpu: Some(v2::CpuStat {
                usage_usec: 7,
                ..Default::default()
            }),
            memory: Some(v2::MemoryStat {
                usage: 50,
                inactive_file: 60,
                ..Default::default()
            }),
            ..Default::default()
        };
        let any = prost_types::Any {
            type_url: "io.containerd.cgroups.v2.Metrics".into(),
            value: m.encode_to_vec(),
        };
        let u = usage_of(&any).expect("v2");
        assert_eq!(u.cpu_nanos, 7000);
        assert_eq!(u.working_set, 0, "never negative");
        assert!(usage_of(&prost_types::Any::default()).is_none());
    }
}
