//! Pods outlive berthd: after a SIGKILL and a fresh start, the daemon reports the same pods and
//! containers, the containers keep serving, and a pod stopped afterwards releases its network.

use berth_tests::cri::*;
use k8s_cri::v1::*;

fn sorted_pods(mut v: Vec<PodSandbox>) -> Vec<PodSandbox> {
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

fn sorted_containers(mut v: Vec<Container>) -> Vec<Container> {
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

#[test]
fn pods_survive_a_daemon_crash() {
    let mut env = CriEnv::start();
    let mut pods = Vec::new();
    for name in ["one", "two"] {
        let pod = env.pod_config(name);
        let pod_id = env.run_pod(&pod);
        let cid = env.run_container(
            &pod_id,
            &pod,
            &env.container_config(&pod, "httpd", "httpd", &[]),
        );
        let ip = env.pod_ip(&pod_id);
        http_get_eventually(&ip, 8080);
        pods.push((pod_id, cid, ip));
    }
    let before_pods = sorted_pods(env.list_pods(None));
    let before_containers = sorted_containers(env.list_containers(None));
    let before_status: Vec<_> = pods
        .iter()
        .map(|(p, c, _)| (env.pod_status(p), env.container_status(c)))
        .collect();
    assert_eq!(before_pods.len(), 2);
    assert_eq!(before_containers.len(), 2);

    env.daemon_mut().kill9();
    // While berthd is down the pods keep running.
    for (_, _, ip) in &pods {
        let (code, _) = http_get(ip, 8080).expect("httpd while berthd is down");
        assert_eq!(code, 200);
    }
    env.daemon_mut().spawn();
    env.reconnect();

    assert_eq!(
        sorted_pods(env.list_pods(None)),
        before_pods,
        "ListPodSandbox after restart"
    );
    assert_eq!(
        sorted_containers(env.list_containers(None)),
        before_containers,
        "ListContainers after restart"
    );
    for ((p, c, ip), (pod_st, ctr_st)) in pods.iter().zip(&before_status) {
        let st = env.pod_status(p);
        assert_eq!(
            st.network.as_ref().map(|n| n.ip.as_str()),
            Some(ip.as_str())
        );
        assert_eq!(&st, pod_st, "PodSandboxStatus {p} after restart");
        let cst = env.container_status(c);
        assert_eq!(
            (cst.state, cst.created_at, cst.started_at, &cst.log_path),
            (
                ctr_st.state,
                ctr_st.created_at,
                ctr_st.started_at,
                &ctr_st.log_path
            ),
            "ContainerStatus {c} after restart"
        );
        let (code, body) = http_get(ip, 8080).expect("httpd after restart");
        assert_eq!((code, body.as_str()), (200, HTTPD_PAGE));
    }

    // Stopping a pod after the restart tears its network down (CNI DEL from what was saved).
    let (first, first_cid, first_ip) = &pods[0];
    assert!(env.ip_file(first_ip).exists());
    env.stop_pod(first);
    assert!(
        !env.ip_file(first_ip).exists(),
        "host-local still holds {first_ip} after StopPodSandbox"
    );
    assert_eq!(
        env.container_status(first_cid).state,
        ContainerState::ContainerExited as i32
    );
    assert!(
        http_get(first_ip, 8080).is_err(),
        "the stopped pod still answers"
    );
    let (_, _, second_ip) = &pods[1];
    assert_eq!(http_get(second_ip, 8080).expect("other pod").0, 200);

    for (p, _, _) in &pods {
        env.stop_pod(p);
        env.remove_pod(p);
    }
    env.assert_no_footprint("after removing the pods");
}

/// A pod in which one container has already exited (its task deleted) while others run, and a
/// container created after that: all of them are still known correctly after a crash.
#[test]
fn pod_with_an_exited_container_survives_a_daemon_crash() {
    let mut env = CriEnv::start();
    let pod = env.pod_config("mixed");
    let pod_id = env.run_pod(&pod);
    let sleep = ["sleep", "3600"];
    let first = env.run_container(
        &pod_id,
        &pod,
        &env.container_config(&pod, "first", "busybox", &sleep),
    );
    let done = env.run_container(
        &pod_id,
        &pod,
        &env.container_config(&pod, "done", "busybox", &["true"]),
    );
    env.wait_exited(&done);
    let later = env.run_container(
        &pod_id,
        &pod,
        &env.container_config(&pod, "later", "busybox", &sleep),
    );
    let before: Vec<_> = [&first, &done, &later]
        .iter()
        .map(|c| env.container_status(c))
        .collect();
    assert_eq!(
        before.iter().map(|s| s.state).collect::<Vec<_>>(),
        [
            ContainerState::ContainerRunning as i32,
            ContainerState::ContainerExited as i32,
            ContainerState::ContainerRunning as i32
        ],
        "{before:#?}"
    );

    env.daemon_mut().kill9();
    env.daemon_mut().spawn();
    env.reconnect();

    for (id, was) in [&first, &done, &later].iter().zip(&before) {
        let st = env.container_status(id);
        assert_eq!(
            (st.state, st.exit_code, &st.reason, st.started_at),
            (was.state, was.exit_code, &was.reason, was.started_at),
            "ContainerStatus {id} after restart: {st:#?}"
        );
    }
    for id in [&first, &later] {
        let r = env
            .block_on(env.cri.clone().exec_sync(id, &["true"], 10))
            .unwrap_or_else(|e| panic!("ExecSync in running container {id} after restart: {e:?}"));
        assert_eq!(r.exit_code, 0);
    }
    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
    env.assert_no_footprint("after removing the pod");
}
