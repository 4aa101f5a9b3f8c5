//! Resources and stats through the CRI: a memory limit at create and a new one from
//! UpdateContainerResources reach the container's cgroup; ContainerStats, ListContainerStats and
//! PodSandboxStats report cgroup usage, the writable layer and the pod's network counters; the
//! pod and its container are visible to `ctr -n k8s.io`.

use berth_tests::cri::{http_get_eventually, CriEnv};
use k8s_cri::v1::*;

const MIB: i64 = 1024 * 1024;

fn memory_limit(env: &CriEnv, id: &str) -> i64 {
    let out = env.exec_sync(id, &["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("memory.limit_in_bytes: {text:?} {:?}", out.stderr))
}

#[test]
fn limits_update_and_stats() {
    let env = CriEnv::start();
    let pod = env.pod_config("res");
    let pod_id = env.run_pod(&pod);
    let mut c = env.container_config(&pod, "web", "httpd", &[]);
    if let Some(linux) = c.linux.as_mut() {
        linux.resources = Some(LinuxContainerResources {
            memory_limit_in_bytes: 64 * MIB,
            cpu_shares: 512,
            ..Default::default()
        });
    }
    let id = env.run_container(&pod_id, &pod, &c);
    let ip = env.pod_ip(&pod_id);
    http_get_eventually(&ip, 8080);
    assert_eq!(memory_limit(&env, &id), 64 * MIB);

    let mut cri = env.cri.runtime.clone();
    env.block_on(
        cri.update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: 128 * MIB,
                ..Default::default()
            }),
            ..Default::default()
        }),
    )
    .expect("UpdateContainerResources");
    assert_eq!(
        memory_limit(&env, &id),
        128 * MIB,
        "the update reached the cgroup"
    );
    let negative = env.block_on(
        cri.update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: -5,
                ..Default::default()
            }),
            ..Default::default()
        }),
    );
    assert_eq!(
        negative.expect_err("negative limit").code(),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        memory_limit(&env, &id),
        128 * MIB,
        "a refused update changes nothing"
    );

    let stats = env
        .block_on(cri.container_stats(ContainerStatsRequest {
            container_id: id.clone(),
        }))
        .expect("ContainerStats")
        .into_inner()
        .stats
        .expect("stats");
    assert_eq!(
        stats.attributes.as_ref().map(|a| a.id.as_str()),
        Some(id.as_str())
    );
    let cpu = stats.cpu.expect("cpu");
    assert!(cpu.usage_core_nano_seconds.expect("cpu usage").value > 0);
    let mem = stats.memory.expect("memory");
    assert!(mem.working_set_bytes.expect("working set").value > 0);
    assert!(mem.usage_bytes.expect("usage").value > 0);
    let layer = stats.writable_layer.expect("writable layer");
    assert!(layer.fs_id.is_some_and(|f| !f.mountpoint.is_empty()));

    let listed = env
        .block_on(cri.list_container_stats(ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter {
                pod_sandbox_id: pod_id.clone(),
                ..Default::default()
            }),
        }))
        .expect("ListContainerStats")
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);

    let pod_stats = env
        .block_on(cri.pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: pod_id.clone(),
        }))
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .expect("pod stats");
    let linux = pod_stats.linux.expect("linux");
    assert_eq!(linux.containers.len(), 1);
    let net = linux.network.expect("network");
    let eth0 = net.default_interface.expect("eth0");
    assert_eq!(eth0.name, "eth0");
    assert!(
        eth0.rx_bytes.expect("rx").value > 0,
        "the HTTP GET came in on eth0"
    );
    assert!(
        linux
            .process
            .and_then(|p| p.process_count)
            .expect("pids")
            .value
            >= 1
    );

    // CRI objects are containerd records in k8s.io, as containerd's CRI keeps them.
    let listed = env
        .daemon()
        .ctr("k8s.io", &["containers", "ls", "-q"])
        .ok()
        .stdout;
    for want in [&pod_id, &id] {
        assert!(
            listed.lines().any(|l| l == want.as_str()),
            "ctr -n k8s.io c ls: {listed}"
        );
    }
    let tasks = env.daemon().ctr("k8s.io", &["tasks", "ls"]).ok().stdout;
    assert!(tasks.contains(&id) && tasks.contains("RUNNING"), "{tasks}");

    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
    env.assert_no_footprint("after removing the pod");
}

/// A container that outgrows its memory limit is killed by the kernel and reported as
/// OOMKilled with exit code 137, as the kubelet expects.
#[test]
fn oom_killed_container_says_so() {
    let env = CriEnv::start();
    let pod = env.pod_config("oom");
    let pod_id = env.run_pod(&pod);
    // dd reads 64 MiB of zeros into one buffer: far over a 16 MiB limit.
    let mut c = env.container_config(
        &pod,
        "hog",
        "busybox",
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
    );
    if let Some(linux) = c.linux.as_mut() {
        linux.resources = Some(LinuxContainerResources {
            memory_limit_in_bytes: 16 * MIB,
            ..Default::default()
        });
    }
    let id = env.run_container(&pod_id, &pod, &c);
    let st = env.wait_exited(&id);
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (137, "OOMKilled"),
        "{st:?}"
    );
    let ok = env.container_config(&pod, "fine", "busybox", &["sh", "-c", "exit 3"]);
    let id = env.run_container(&pod_id, &pod, &ok);
    let st = env.wait_exited(&id);
    assert_eq!((st.exit_code, st.reason.as_str()), (3, "Error"), "{st:?}");
    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
    env.assert_no_footprint("after removing the pod");
}
