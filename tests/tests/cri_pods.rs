//! CRI pods end to end: a pod on a CNI bridge network serving HTTP to the host (directly and
//! through a host port), containers sharing the pod's namespaces, status and list filters, exit
//! statuses, and a teardown that leaves nothing behind.

use std::collections::BTreeSet;

use berth_tests::cri::*;
use k8s_cri::v1::*;
use tonic::Code;

fn ids<T>(items: &[T], id: impl Fn(&T) -> &str) -> BTreeSet<String> {
    items.iter().map(|i| id(i).to_string()).collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[test]
fn pod_serves_http_on_its_ip_and_host_port_then_leaves_nothing() {
    let env = CriEnv::start();
    let host_port = free_port();
    let mut pod = env.pod_config("web");
    pod.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port: host_port as i32,
        host_ip: "127.0.0.1".into(),
    }];
    let pod_id = env.run_pod(&pod);

    let st = env.pod_status(&pod_id);
    assert_eq!(st.id, pod_id);
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(st.metadata, pod.metadata);
    assert_eq!(st.labels.get("app").map(String::as_str), Some("web"));
    assert!(st.created_at > 0);
    let ip = st
        .network
        .as_ref()
        .map(|n| n.ip.clone())
        .unwrap_or_default();
    assert!(
        ip.starts_with(&env.ip_prefix),
        "pod IP {ip:?} is not in {}",
        env.subnet
    );
    let ns = st
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.clone());
    let sent = pod
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    assert_eq!(ns, sent, "namespace options in PodSandboxStatus");

    let httpd = env.container_config(&pod, "httpd", "httpd", &[]);
    let cid = env.run_container(&pod_id, &pod, &httpd);
    let (code, body) = http_get_eventually(&ip, 8080);
    assert_eq!((code, body.as_str()), (200, HTTPD_PAGE), "GET {ip}:8080");
    let (code, body) = http_get_eventually("127.0.0.1", host_port);
    assert_eq!(
        (code, body.as_str()),
        (200, HTTPD_PAGE),
        "GET 127.0.0.1:{host_port} (port mapping to 8080)"
    );

    // What the pod holds on the host while it runs: the footprint check below must be able to
    // see it, or "nothing left" would prove nothing.
    let fp = env.footprint();
    assert_eq!(fp.netns.len(), 1, "one netns file: {fp:#?}");
    assert_eq!(fp.veths.len(), 1, "one veth on {}: {fp:#?}", env.bridge);
    assert_eq!(fp.ip_files, BTreeSet::from([env.ip_file(&ip)]), "{fp:#?}");
    assert!(
        fp.iptables.iter().any(|r| r.contains(&pod_id)),
        "no iptables rule names the pod (portmap DNAT): {fp:#?}"
    );
    assert!(
        !fp.cgroups.is_empty(),
        "no cgroups under the pod's cgroup_parent /{}/pod...: {fp:#?}",
        env.cgroup_root
    );

    env.stop_pod(&pod_id);
    env.stop_pod(&pod_id); // idempotent
    let st = env.pod_status(&pod_id);
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
    assert_eq!(
        env.container_status(&cid).state,
        ContainerState::ContainerExited as i32,
        "stopping a pod stops its containers"
    );
    assert!(
        http_get("127.0.0.1", host_port).is_err(),
        "host port still answers after StopPodSandbox"
    );
    assert!(!env.ip_file(&ip).exists(), "IP still allocated after stop");

    env.remove_pod(&pod_id);
    let err = env
        .block_on(env.cri.clone().pod_status(&pod_id))
        .expect_err("status of a removed pod");
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let err = env
        .block_on(env.cri.clone().container_status(&cid))
        .expect_err("RemovePodSandbox removes its containers");
    assert_eq!(err.code(), Code::NotFound, "{err}");
    env.remove_pod(&pod_id); // idempotent
    assert!(env.list_pods(None).is_empty());
    env.assert_no_footprint("after RemovePodSandbox");
}

#[test]
fn containers_of_a_pod_share_network_and_pod_pid_namespace() {
    let env = CriEnv::start();
    let mut pod = env.pod_config("shared");
    if let Some(ns) = pod
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.pid = NamespaceMode::Pod as i32;
    }
    let pod_id = env.run_pod(&pod);
    let ns = env
        .pod_status(&pod_id)
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .expect("namespace options in status");
    assert_eq!(ns.pid, NamespaceMode::Pod as i32);
    env.run_container(
        &pod_id,
        &pod,
        &env.container_config(&pod, "httpd", "httpd", &[]),
    );
    let side = env.run_container(
        &pod_id,
        &pod,
        &env.container_config(&pod, "side", "busybox", &["sleep", "3600"]),
    );
    let ip = env.pod_ip(&pod_id);
    http_get_eventually(&ip, 8080);

    let r = env.exec_sync(&side, &["wget", "-qO-", "http://127.0.0.1:8080"]);
    assert_eq!(
        (r.exit_code, String::from_utf8_lossy(&r.stdout).as_ref()),
        (0, HTTPD_PAGE),
        "wget from the second container: stderr {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let ps = env.exec_sync(&side, &["ps"]);
    let ps_out = String::from_utf8_lossy(&ps.stdout).into_owned();
    assert!(
        ps_out.contains("httpd -f"),
        "pid namespace POD: the side container does not see httpd:\n{ps_out}"
    );

    // The contrast: with PID namespace CONTAINER the same pair does not see each other.
    let pod2 = env.pod_config("isolated");
    let pod2_id = env.run_pod(&pod2);
    env.run_container(
        &pod2_id,
        &pod2,
        &env.container_config(&pod2, "httpd", "httpd", &[]),
    );
    let side2 = env.run_container(
        &pod2_id,
        &pod2,
        &env.container_config(&pod2, "side", "busybox", &["sleep", "3600"]),
    );
    http_get_eventually(&env.pod_ip(&pod2_id), 8080);
    let r = env.exec_sync(&side2, &["wget", "-qO-", "http://127.0.0.1:8080"]);
    assert_eq!(String::from_utf8_lossy(&r.stdout), HTTPD_PAGE);
    let ps_out = String::from_utf8_lossy(&env.exec_sync(&side2, &["ps"]).stdout).into_owned();
    assert!(
        !ps_out.contains("httpd"),
        "pid namespace CONTAINER: the side container sees httpd:\n{ps_out}"
    );

    for id in [&pod_id, &pod2_id] {
        env.stop_pod(id);
        env.remove_pod(id);
    }
    env.assert_no_footprint("after removing both pods");
}

#[test]
fn list_filters_and_exit_statuses() {
    let env = CriEnv::start();
    let mut a = env.pod_config("a");
    a.labels.insert("tier".into(), "web".into());
    let mut b = env.pod_config("b");
    b.labels.insert("tier".into(), "web".into());
    let a_id = env.run_pod(&a);
    let b_id = env.run_pod(&b);

    let sleeper = env.run_container(
        &a_id,
        &a,
        &env.container_config(&a, "sleeper", "busybox", &["sleep", "3600"]),
    );
    let failing_cfg = env.container_config(&a, "failing", "busybox", &["sh", "-c", "exit 3"]);
    let failing = env.run_container(&a_id, &a, &failing_cfg);
    let ok_cfg = env.container_config(&a, "ok", "busybox", &["true"]);
    let ok = env.run_container(&a_id, &a, &ok_cfg);
    let created_cfg = env.container_config(&b, "created", "busybox", &["true"]);
    let created = env
        .block_on(env.cri.clone().create_container(&b_id, &b, &created_cfg))
        .expect("create only");
    let b_sleeper = env.run_container(
        &b_id,
        &b,
        &env.container_config(&b, "sleeper", "busybox", &["sleep", "3600"]),
    );

    let st = env.wait_exited(&failing);
    assert_eq!(st.exit_code, 3, "{st:?}");
    assert_eq!(st.reason, "Error", "{st:?}");
    assert!(
        st.started_at > 0 && st.finished_at >= st.started_at,
        "{st:?}"
    );
    assert_eq!(st.metadata, failing_cfg.metadata);
    assert_eq!(
        st.log_path,
        env.log_file(&a, &failing_cfg).to_string_lossy(),
        "ContainerStatus.log_path is the full path"
    );
    let st = env.wait_exited(&ok);
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (0, "Completed"),
        "{st:?}"
    );
    let st = env.container_status(&created);
    assert_eq!(st.state, ContainerState::ContainerCreated as i32, "{st:?}");
    assert_eq!(st.started_at, 0, "{st:?}");
    let st = env.container_status(&sleeper);
    assert_eq!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
    assert!(st.started_at > 0 && st.finished_at == 0, "{st:?}");

    // ListPodSandbox
    let all = env.list_pods(None);
    assert_eq!(ids(&all, |p| &p.id), set(&[&a_id, &b_id]));
    let only = |f: PodSandboxFilter| ids(&env.list_pods(Some(f)), |p| &p.id);
    assert_eq!(
        only(PodSandboxFilter {
            id: a_id.clone(),
            ..Default::default()
        }),
        set(&[&a_id])
    );
    let labels = |kv: &[(&str, &str)]| {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        only(PodSandboxFilter {
            label_selector: labels(&[("tier", "web")]),
            ..Default::default()
        }),
        set(&[&a_id, &b_id])
    );
    assert_eq!(
        only(PodSandboxFilter {
            label_selector: labels(&[("tier", "web"), ("app", "b")]),
            ..Default::default()
        }),
        set(&[&b_id])
    );
    assert!(only(PodSandboxFilter {
        label_selector: labels(&[("app", "nobody")]),
        ..Default::default()
    })
    .is_empty());

    // ListContainers
    let only_c = |f: ContainerFilter| ids(&env.list_containers(Some(f)), |c| &c.id);
    assert_eq!(
        ids(&env.list_containers(None), |c| &c.id),
        set(&[&sleeper, &failing, &ok, &created, &b_sleeper])
    );
    assert_eq!(
        only_c(ContainerFilter {
            pod_sandbox_id: a_id.clone(),
            ..Default::default()
        }),
        set(&[&sleeper, &failing, &ok])
    );
    assert_eq!(
        only_c(ContainerFilter {
            id: failing.clone(),
            ..Default::default()
        }),
        set(&[&failing])
    );
    let state = |s: ContainerState| Some(ContainerStateValue { state: s as i32 });
    assert_eq!(
        only_c(ContainerFilter {
            state: state(ContainerState::ContainerRunning),
            ..Default::default()
        }),
        set(&[&sleeper, &b_sleeper])
    );
    assert_eq!(
        only_c(ContainerFilter {
            state: state(ContainerState::ContainerExited),
            ..Default::default()
        }),
        set(&[&failing, &ok])
    );
    assert_eq!(
        only_c(ContainerFilter {
            state: state(ContainerState::ContainerCreated),
            ..Default::default()
        }),
        set(&[&created])
    );
    assert_eq!(
        only_c(ContainerFilter {
            label_selector: labels(&[("container", "sleeper")]),
            ..Default::default()
        }),
        set(&[&sleeper, &b_sleeper])
    );
    assert_eq!(
        only_c(ContainerFilter {
            pod_sandbox_id: b_id.clone(),
            label_selector: labels(&[("container", "sleeper")]),
            ..Default::default()
        }),
        set(&[&b_sleeper])
    );
    let listed = env.list_containers(Some(ContainerFilter {
        id: sleeper.clone(),
        ..Default::default()
    }));
    assert_eq!(listed[0].pod_sandbox_id, a_id);
    assert_eq!(listed[0].state, ContainerState::ContainerRunning as i32);
    assert_eq!(
        listed[0].image.as_ref().map(|i| i.image.clone()),
        Some(env.image("busybox"))
    );

    // Stopping b: pod filter by state, and b's running container has exited.
    env.stop_pod(&b_id);
    assert_eq!(
        only(PodSandboxFilter {
            state: Some(PodSandboxStateValue {
                state: PodSandboxState::SandboxReady as i32
            }),
            ..Default::default()
        }),
        set(&[&a_id])
    );
    assert_eq!(
        only(PodSandboxFilter {
            state: Some(PodSandboxStateValue {
                state: PodSandboxState::SandboxNotready as i32
            }),
            ..Default::default()
        }),
        set(&[&b_id])
    );
    assert_eq!(
        env.container_status(&b_sleeper).state,
        ContainerState::ContainerExited as i32
    );

    for id in [&a_id, &b_id] {
        env.stop_pod(id);
        env.remove_pod(id);
    }
    assert!(env.list_containers(None).is_empty());
    env.assert_no_footprint("after removing both pods");
}
