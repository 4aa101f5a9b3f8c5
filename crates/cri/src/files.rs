//! The per-pod files the daemon writes before the sandbox starts and every container binds:
//! `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`, and the pod's `/dev/shm` directory.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use k8s_cri::v1::DnsConfig;

use crate::error::{Error, Result};

/// Where the daemon put a pod's files on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFiles {
    pub hostname: PathBuf,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    /// The pod's own `/dev/shm` (a tmpfs the daemon mounted); None when the pod uses the host's
    /// IPC namespace, and so the host's `/dev/shm`.
    pub shm: Option<PathBuf>,
}

/// The host's `/dev/shm`, shared by pods in the host IPC namespace.
pub(crate) const HOST_SHM: &str = "/dev/shm";

/// The loopback names every container expects, as Docker and containerd write them.
const LOCALHOST_LINES: &str = "127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
ff00::0\tip6-mcastprefix\n\
ff02::1\tip6-allnodes\n\
ff02::2\tip6-allrouters\n";

/// `/etc/hosts` for a pod: the localhost names, then the pod's hostname on each of its IPs (or
/// on 127.0.1.1, Debian's convention, when it has none yet) so the pod can resolve itself.
pub fn hosts_file(hostname: &str, ips: &[IpAddr]) -> String {
    let mut out = LOCALHOST_LINES.to_string();
    if hostname.is_empty() {
        return out;
    }
    if ips.is_empty() {
        let _ = writeln!(out, "127.0.1.1\t{hostname}");
    }
    for ip in ips {
        let _ = writeln!(out, "{ip}\t{hostname}");
    }
    out
}

/// `/etc/resolv.conf` from the pod's DNS config; None when the config sets nothing, which
/// means the pod gets a copy of the host's file.
pub fn resolv_conf(dns: Option<&DnsConfig>) -> Option<String> {
    let dns = dns?;
    let mut out = String::new();
    if !dns.searches.is_empty() {
        let _ = writeln!(out, "search {}", dns.searches.join(" "));
    }
    for server in &dns.servers {
        let _ = writeln!(out, "nameserver {server}");
    }
    if !dns.options.is_empty() {
        let _ = writeln!(out, "options {}", dns.options.join(" "));
    }
    (!out.is_empty()).then_some(out)
}

/// The pod's hostname, or the host's when the pod has none (host-network pods).
pub fn pod_hostname(requested: &str) -> Result<String> {
    if !requested.is_empty() {
        return Ok(requested.to_string());
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .map_err(Error::Hostname)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_with_and_without_ips() {
        let h = hosts_file("web-0", &[]);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n::1\tlocalhost"));
        assert!(h.ends_with("127.0.1.1\tweb-0\n"));
        let ips: Vec<IpAddr> = vec![
            "10.1.0.5".parse().expect("v4"),
            "fd00::5".parse().expect("v6"),
        ];
        let h = hosts_file("web-0", &ips);
        assert!(h.ends_with("10.1.0.5\tweb-0\nfd00::5\tweb-0\n"));
        assert!(!h.contains("127.0.1.1"));
        assert_eq!(hosts_file("", &ips), LOCALHOST_LINES);
    }

    #[test]
    fn resolv_from_dns_config() {
        assert_eq!(resolv_conf(None), None);
        assert_eq!(resolv_conf(Some(&DnsConfig::default())), None);
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into(), "8.8.8.8".into()],
            searches: vec!["ns.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(Some(&dns)).expect("content"),
            "search ns.svc.cluster.local svc.cluster.local\n\
             nameserver 10.96.0.10\nnameserver 8.8.8.8\noptions ndots:5\n"
        );
    }

    #[test]
    fn hostname_falls_back_to_host() {
        assert_eq!(pod_hostname("pod").expect("given"), "pod");
        let host = pod_hostname("").expect("host");
        assert!(!host.is_empty());
        assert!(!host.contains('\n'));
    }
}
