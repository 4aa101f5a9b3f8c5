//! Reading pod IPs out of a CNI result, whatever spec version printed it.

use std::net::IpAddr;

use serde_json::Value;

/// The pod's addresses: those on the sandbox interface named `ifname`, IPv4 first.
///
/// Results of 0.3.0 and later list `ips` with an index into `interfaces`; older ones
/// have `ip4`/`ip6` objects. IPs that name no interface are taken as the pod's when
/// no IP names the pod interface (single-interface plugins often omit the index).
/// Host-side addresses (the bridge gateway) are never pod IPs.
pub(crate) fn pod_ips(result: &Value, ifname: &str) -> Vec<IpAddr> {
    let mut on_pod_if = Vec::new();
    let mut unattached = Vec::new();

    let interfaces = result.get("interfaces").and_then(Value::as_array);
    let is_pod_if = |index: u64| -> bool {
        let Some(iface) = interfaces.and_then(|l| l.get(index as usize)) else {
            return false;
        };
        let named = iface.get("name").and_then(Value::as_str) == Some(ifname);
        let in_sandbox = iface
            .get("sandbox")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        named && in_sandbox
    };

    if let Some(ips) = result.get("ips").and_then(Value::as_array) {
        for ip in ips {
            let Some(addr) = ip
                .get("address")
                .and_then(Value::as_str)
                .and_then(parse_cidr_addr)
            else {
                continue;
            };
            match ip.get("interface").and_then(Value::as_u64) {
                Some(i) if is_pod_if(i) => on_pod_if.push(addr),
                Some(_) => {}
                None => unattached.push(addr),
            }
        }
    }
    for key in ["ip4", "ip6"] {
        if let Some(addr) = result
            .get(key)
            .and_then(|o| o.get("ip"))
            .and_then(Value::as_str)
            .and_then(parse_cidr_addr)
        {
            unattached.push(addr);
        }
    }

    let mut chosen = if on_pod_if.is_empty() {
        unattached
    } else {
        on_pod_if
    };
    // Stable: keeps the plugin's order within each family.
    chosen.sort_by_key(|ip| ip.is_ipv6());
    chosen.dedup();
    chosen
}

fn parse_cidr_addr(s: &str) -> Option<IpAddr> {
    let addr = s.split_once('/').map_or(s, |(a, _)| a);
    addr.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v1_result_pod_interface_only_ipv4_first() {
        let r = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:00:00:00:00:01"},
                {"name": "veth1", "mac": "aa:00:00:00:00:02"},
                {"name": "eth0", "mac": "aa:00:00:00:00:03", "sandbox": "/run/netns/x"}
            ],
            "ips": [
                {"address": "fd00::5/64", "interface": 2},
                {"address": "10.1.0.1/24", "interface": 0},
                {"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 2}
            ]
        });
        let ips = pod_ips(&r, "eth0");
        assert_eq!(
            ips,
            vec![
                "10.1.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        // Another interface name finds nothing on the pod side, and the host IP is not taken.
        assert!(pod_ips(&r, "net1").is_empty());
    }

    #[test]
    fn ips_without_interface_index_are_used() {
        let r = json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.2.0.9/16"}]});
        assert_eq!(
            pod_ips(&r, "eth0"),
            vec!["10.2.0.9".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn legacy_result() {
        let r = json!({"cniVersion": "0.2.0", "ip6": {"ip": "fd00::9/64"}, "ip4": {"ip": "10.3.0.9/16", "gateway": "10.3.0.1"}});
        assert_eq!(
            pod_ips(&r, "eth0"),
            vec![
                "10.3.0.9".parse::<IpAddr>().unwrap(),
                "fd00::9".parse().unwrap()
            ]
        );
    }

    #[test]
    fn garbage_gives_nothing() {
        assert!(pod_ips(&json!({"ips": [{"address": "nope"}]}), "eth0").is_empty());
        assert!(pod_ips(&json!(null), "eth0").is_empty());
    }
}
