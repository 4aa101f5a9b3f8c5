//! Twenty pods set up and torn down at once: every one gets its own IP and serves HTTP, and
//! nothing is left afterwards.

use std::collections::BTreeSet;

use berth_tests::cri::*;

const PODS: usize = 20;

#[test]
fn twenty_parallel_pods() {
    let env = CriEnv::start();
    let pods: Vec<_> = (0..PODS)
        .map(|i| {
            let pod = env.pod_config(&format!("scale-{i}"));
            let httpd = env.container_config(&pod, "httpd", "httpd", &[]);
            (pod, httpd)
        })
        .collect();

    let tasks: Vec<_> = pods
        .iter()
        .cloned()
        .map(|(pod, httpd)| {
            let mut cri = env.cri.clone();
            env.rt.spawn(async move {
                let name = pod.metadata.as_ref().map(|m| m.name.clone());
                let pod_id = cri
                    .run_pod(&pod, "")
                    .await
                    .map_err(|e| format!("RunPodSandbox {name:?}: {e:?}"))?;
                cri.run_container(&pod_id, &pod, &httpd)
                    .await
                    .map_err(|e| format!("httpd in {name:?}: {e:?}"))?;
                let ip = cri
                    .pod_status(&pod_id)
                    .await
                    .map_err(|e| format!("PodSandboxStatus {name:?}: {e:?}"))?
                    .network
                    .map(|n| n.ip)
                    .unwrap_or_default();
                Ok::<_, String>((pod_id, ip))
            })
        })
        .collect();
    let results: Vec<Result<(String, String), String>> = env.block_on(async {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap_or_else(|e| Err(format!("task: {e}"))));
        }
        out
    });
    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        errors.is_empty(),
        "{} of {PODS} pods failed: {errors:#?}",
        errors.len()
    );
    let running: Vec<(String, String)> = results.into_iter().flatten().collect();

    let ips: BTreeSet<&str> = running.iter().map(|(_, ip)| ip.as_str()).collect();
    assert_eq!(ips.len(), PODS, "pod IPs are not distinct: {running:#?}");
    for (pod_id, ip) in &running {
        assert!(
            ip.starts_with(&env.ip_prefix),
            "pod {pod_id} IP {ip:?} not in {}",
            env.subnet
        );
        let (code, body) = http_get_eventually(ip, 8080);
        assert_eq!(
            (code, body.as_str()),
            (200, HTTPD_PAGE),
            "pod {pod_id} at {ip}"
        );
    }
    let fp = env.footprint();
    assert_eq!(fp.netns.len(), PODS, "{fp:#?}");
    assert_eq!(fp.veths.len(), PODS, "{fp:#?}");
    assert_eq!(fp.ip_files.len(), PODS, "{fp:#?}");
    assert_eq!(env.list_pods(None).len(), PODS);

    let tasks: Vec<_> = running
        .iter()
        .map(|(pod_id, _)| {
            let mut cri = env.cri.clone();
            let pod_id = pod_id.clone();
            env.rt.spawn(async move {
                cri.stop_pod(&pod_id)
                    .await
                    .map_err(|e| format!("StopPodSandbox {pod_id}: {e:?}"))?;
                cri.remove_pod(&pod_id)
                    .await
                    .map_err(|e| format!("RemovePodSandbox {pod_id}: {e:?}"))
            })
        })
        .collect();
    let errors: Vec<String> = env.block_on(async {
        let mut out = Vec::new();
        for t in tasks {
            if let Err(e) = t.await.unwrap_or_else(|e| Err(format!("task: {e}"))) {
                out.push(e);
            }
        }
        out
    });
    assert!(errors.is_empty(), "teardown failed: {errors:#?}");
    assert!(env.list_pods(None).is_empty());
    assert!(env.list_containers(None).is_empty());
    env.assert_no_footprint("after tearing down all pods");
}

/// Pods of four containers each, stopped in parallel: every StopPodSandbox kills four containers
/// whose exits race their own exit watchers. Each must finish well inside the kubelet's default
/// runtime request timeout (2 min); berthd's own bound on one container's SIGKILL is 30 s.
#[test]
fn pods_of_four_containers_stop_in_parallel() {
    const N: usize = 6;
    let env = CriEnv::start();
    let mut pods = Vec::new();
    for i in 0..N {
        let pod = env.pod_config(&format!("quad-{i}"));
        let pod_id = env.run_pod(&pod);
        for c in 0..4 {
            let cfg = env.container_config(&pod, &format!("c{c}"), "busybox", &["sleep", "1000"]);
            env.run_container(&pod_id, &pod, &cfg);
        }
        pods.push(pod_id);
    }
    let stops: Vec<_> = pods
        .iter()
        .cloned()
        .map(|id| {
            let mut cri = env.cri.clone();
            env.rt.spawn(async move {
                let started = std::time::Instant::now();
                let r = cri.stop_pod(&id).await.map_err(|e| format!("{id}: {e:?}"));
                (r, started.elapsed())
            })
        })
        .collect();
    let results: Vec<_> = env.block_on(async {
        let mut out = Vec::new();
        for s in stops {
            out.push(s.await.expect("join"));
        }
        out
    });
    for (r, took) in &results {
        assert!(r.is_ok(), "StopPodSandbox: {r:?} after {took:?}");
    }
    for id in &pods {
        let exited = env.list_containers(Some(k8s_cri::v1::ContainerFilter {
            pod_sandbox_id: id.clone(),
            ..Default::default()
        }));
        assert!(exited
            .iter()
            .all(|c| c.state == k8s_cri::v1::ContainerState::ContainerExited as i32));
        env.remove_pod(id);
    }
    env.assert_no_footprint("after removing the pods");
}
