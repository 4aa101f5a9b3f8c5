//! Pod-level options through the CRI: hostname, DNS config, sysctls, a /dev/shm shared by the
//! pod's containers, and host networking (no pod network namespace, no CNI).

use berth_tests::cri::CriEnv;
use k8s_cri::v1::*;

fn out(r: &ExecSyncResponse) -> String {
    String::from_utf8_lossy(&r.stdout).trim().to_string()
}

#[test]
fn hostname_dns_sysctls_and_shared_shm() {
    let env = CriEnv::start();
    let mut pod = env.pod_config("opts");
    pod.hostname = "opts-host".into();
    pod.dns_config = Some(DnsConfig {
        servers: vec!["10.9.8.7".into()],
        searches: vec!["svc.example".into()],
        options: vec!["ndots:3".into()],
    });
    if let Some(linux) = pod.linux.as_mut() {
        linux
            .sysctls
            .insert("net.ipv4.ip_unprivileged_port_start".into(), "80".into());
    }
    let pod_id = env.run_pod(&pod);
    let sleeper = |name: &str| env.container_config(&pod, name, "busybox", &["sleep", "1000"]);
    let a = env.run_container(&pod_id, &pod, &sleeper("a"));
    let b = env.run_container(&pod_id, &pod, &sleeper("b"));

    assert_eq!(out(&env.exec_sync(&a, &["hostname"])), "opts-host");
    let resolv = out(&env.exec_sync(&a, &["cat", "/etc/resolv.conf"]));
    for want in [
        "nameserver 10.9.8.7",
        "search svc.example",
        "options ndots:3",
    ] {
        assert!(
            resolv.contains(want),
            "resolv.conf lacks {want:?}:\n{resolv}"
        );
    }
    let hosts = out(&env.exec_sync(&a, &["cat", "/etc/hosts"]));
    assert!(
        hosts.contains("localhost") && hosts.contains("opts-host"),
        "{hosts}"
    );
    assert_eq!(
        out(&env.exec_sync(
            &b,
            &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]
        )),
        "80",
        "the pod's sysctl is set in the pod's network namespace"
    );
    let host_value = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .expect("host sysctl");
    assert_ne!(host_value.trim(), "80", "the host's value is untouched");

    let w = env.exec_sync(&a, &["sh", "-c", "echo shared > /dev/shm/x"]);
    assert_eq!(w.exit_code, 0, "{w:?}");
    assert_eq!(out(&env.exec_sync(&b, &["cat", "/dev/shm/x"])), "shared");
    let fs = out(&env.exec_sync(&a, &["sh", "-c", "grep ' /dev/shm ' /proc/mounts"]));
    assert!(fs.contains("tmpfs"), "{fs}");

    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
    env.assert_no_footprint("after removing the pod");
}

#[test]
fn host_network_pod_has_no_pod_network() {
    let env = CriEnv::start();
    let mut pod = env.pod_config("hostnet");
    if let Some(ns) = pod
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.network = NamespaceMode::Node as i32;
    }
    let pod_id = env.run_pod(&pod);
    let status = env.pod_status(&pod_id);
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(
        status.network.as_ref().map(|n| n.ip.as_str()),
        Some(""),
        "no CNI IP for a host-network pod"
    );
    assert_eq!(
        status
            .linux
            .and_then(|l| l.namespaces)
            .and_then(|n| n.options)
            .map(|o| o.network),
        Some(NamespaceMode::Node as i32)
    );
    let c = env.run_container(
        &pod_id,
        &pod,
        &env.container_config(&pod, "c", "busybox", &["sleep", "1000"]),
    );
    // The host's own interfaces are visible: this test's bridge among them once CNI made it.
    let host_links = std::fs::read_to_string("/proc/net/dev").expect("host links");
    let inside = out(&env.exec_sync(&c, &["cat", "/proc/net/dev"]));
    let names = |t: &str| -> Vec<String> {
        t.lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|n| n.trim().to_string())
            .collect()
    };
    let mut host = names(&host_links);
    let mut seen = names(&inside);
    host.sort();
    seen.sort();
    assert!(seen.len() > 1, "more than lo: {inside}");
    assert!(
        seen.iter().all(|n| host.contains(n)),
        "{seen:?} vs host {host:?}"
    );
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert_eq!(out(&env.exec_sync(&c, &["hostname"])), host_name.trim());
    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
    env.assert_no_footprint("after removing the pod");
}
