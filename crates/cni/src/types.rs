use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One pod's attachment to the node's CNI network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetwork {
    /// The pod sandbox id; CNI_CONTAINERID and the key of the result cache.
    pub container_id: String,
    /// Path of the pod's network namespace (from [`crate::Cni::create_netns`]).
    pub netns: PathBuf,
    /// Interface name inside the pod, normally `eth0`.
    pub ifname: String,
    /// CNI_ARGS as ordered key/value pairs (`IgnoreUnknown=1;K8S_POD_NAMESPACE=...`).
    pub args: Vec<(String, String)>,
    /// Passed as `runtimeConfig.portMappings` to plugins declaring that capability.
    pub port_mappings: Vec<PortMapping>,
    /// Passed as `runtimeConfig.bandwidth` to plugins declaring that capability.
    pub bandwidth: Option<Bandwidth>,
}

/// A host port forwarded into the pod (CNI `portMappings` capability).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Host address to bind; empty means every address.
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// Traffic shaping for the pod (CNI `bandwidth` capability); rates in bits per second,
/// bursts in bits, as the CNI conventions define them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    pub ingress_rate: u64,
    pub ingress_burst: u64,
    pub egress_rate: u64,
    pub egress_burst: u64,
}

/// What the network chain reported for a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkStatus {
    /// Pod IPs: addresses of the pod's interface, IPv4 before IPv6.
    pub interfaces_ips: Vec<IpAddr>,
    /// The final CNI result exactly as the last plugin printed it.
    pub result_json: serde_json::Value,
}
