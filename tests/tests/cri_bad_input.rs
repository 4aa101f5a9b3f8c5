//! Bad CRI requests get the right gRPC code and a message naming the culprit, and a RunPodSandbox
//! that fails part way leaves nothing that stops a retry.

use berth_tests::cri::*;
use k8s_cri::v1::*;
use tonic::Code;

#[test]
fn missing_metadata_is_invalid_argument() {
    let env = CriEnv::start();
    let mut pod = env.pod_config("nometa");
    pod.metadata = None;
    let err = env.try_run_pod(&pod, "").expect_err("pod without metadata");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = env
        .block_on(
            env.cri
                .clone()
                .runtime
                .run_pod_sandbox(RunPodSandboxRequest::default()),
        )
        .expect_err("RunPodSandbox without a config");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    env.assert_no_footprint("after the refused pods");

    let pod = env.pod_config("good");
    let pod_id = env.run_pod(&pod);
    let mut c = env.container_config(&pod, "nometa", "busybox", &["true"]);
    c.metadata = None;
    let err = env
        .block_on(env.cri.clone().create_container(&pod_id, &pod, &c))
        .expect_err("container without metadata");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = env
        .block_on(
            env.cri
                .clone()
                .runtime
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: pod_id.clone(),
                    config: None,
                    sandbox_config: Some(pod.clone()),
                }),
        )
        .expect_err("CreateContainer without a config");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(env.list_containers(None).is_empty());
    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
}

#[test]
fn duplicate_pod_name_names_the_holder() {
    let env = CriEnv::start();
    let pod = env.pod_config("dup");
    let first = env.run_pod(&pod);
    let err = env
        .try_run_pod(&pod, "")
        .expect_err("second pod with the same name");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(
        err.message().contains(&first),
        "the error does not name the holder {first}: {err:?}"
    );
    assert_eq!(env.list_pods(None).len(), 1);
    assert_eq!(
        env.footprint().ip_files.len(),
        1,
        "the refused pod took an IP"
    );
    // Once the holder is gone the name is free.
    env.stop_pod(&first);
    env.remove_pod(&first);
    let second = env.run_pod(&pod);
    assert_ne!(second, first);
    env.stop_pod(&second);
    env.remove_pod(&second);
    env.assert_no_footprint("after the pods");
}

#[test]
fn pod_failing_midway_can_be_retried() {
    let env = CriEnv::start();
    // A sysctl the kernel does not have: the sandbox fails when the runtime starts it, after its
    // network namespace and CNI network were set up.
    let mut bad = env.pod_config("retry");
    bad.linux
        .as_mut()
        .expect("linux")
        .sysctls
        .insert("net.ipv4.berth_no_such_sysctl".into(), "1".into());
    let err = env
        .try_run_pod(&bad, "")
        .expect_err("pod with a bogus sysctl");
    eprintln!("bogus sysctl: {err:?}");
    assert!(
        err.message().contains("berth_no_such_sysctl"),
        "the error does not name the sysctl: {err:?}"
    );
    env.assert_no_footprint("after the failed RunPodSandbox");

    let mut good = bad.clone();
    good.linux.as_mut().expect("linux").sysctls.clear();
    let pod_id = env.run_pod(&good);
    let ip = env.pod_ip(&pod_id);
    assert!(ip.starts_with(&env.ip_prefix), "{ip:?}");
    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
    env.assert_no_footprint("after the retried pod");
}

#[test]
fn bad_sandbox_image_then_good_config_retry() {
    let mut env = CriEnv::start();
    let good_image = env.image("pause");
    let missing = format!("{}/no-such-pause:latest", env.registry.host());
    env.set_sandbox_image(&missing);
    let pod = env.pod_config("image-retry");
    let err = env
        .try_run_pod(&pod, "")
        .expect_err("pod with a missing sandbox image");
    assert!(
        err.message().contains("no-such-pause"),
        "the error does not name the sandbox image: {err:?}"
    );
    env.assert_no_footprint("after the failed RunPodSandbox");

    env.set_sandbox_image(&good_image);
    let pod_id = env.run_pod(&pod);
    assert_eq!(
        env.pod_status(&pod_id).state,
        PodSandboxState::SandboxReady as i32
    );
    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
    env.assert_no_footprint("after the retried pod");
}

#[test]
fn bad_container_configs() {
    let env = CriEnv::start();

    // A relative log directory: refused with InvalidArgument, by RunPodSandbox or, at the latest,
    // by CreateContainer (which joins it with the container's log_path).
    let mut rel = env.pod_config("rel-logs");
    rel.log_directory = "relative/logs".into();
    match env.try_run_pod(&rel, "") {
        Err(err) => {
            assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
            assert!(err.message().contains("relative/logs"), "{err:?}");
        }
        Ok(rel_id) => {
            let c = env.container_config(&rel, "c", "busybox", &["true"]);
            let err = env
                .block_on(env.cri.clone().create_container(&rel_id, &rel, &c))
                .expect_err("container logging to a relative directory");
            assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
            assert!(err.message().contains("relative/logs"), "{err:?}");
            env.stop_pod(&rel_id);
            env.remove_pod(&rel_id);
        }
    }

    let pod = env.pod_config("bad-containers");
    let pod_id = env.run_pod(&pod);

    let missing = env.dir.path().join("no/such/host/dir");
    let mut c = env.container_config(&pod, "mount", "busybox", &["true"]);
    c.mounts.push(Mount {
        container_path: "/data".into(),
        host_path: missing.to_string_lossy().into_owned(),
        ..Default::default()
    });
    let err = env
        .block_on(env.cri.clone().create_container(&pod_id, &pod, &c))
        .expect_err("mount of a missing host path");
    assert!(
        err.message().contains(&*missing.to_string_lossy()),
        "the error does not name {}: {err:?}",
        missing.display()
    );

    let absent = format!("{}/library/absent:1", env.registry.host());
    let mut c = env.container_config(&pod, "noimage", "busybox", &["true"]);
    c.image = Some(ImageSpec {
        image: absent.clone(),
        ..Default::default()
    });
    let err = env
        .block_on(env.cri.clone().create_container(&pod_id, &pod, &c))
        .expect_err("container of an image that was never pulled");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains(&absent), "{err:?}");

    assert!(
        env.list_containers(None).is_empty(),
        "a refused container was recorded: {:?}",
        env.list_containers(None)
    );
    // The pod is unharmed: a good container still runs in it.
    let ok = env.container_config(&pod, "ok", "busybox", &["true"]);
    let (code, _) = env.run_to_exit(&pod_id, &pod, &ok);
    assert_eq!(code, 0);
    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
    env.assert_no_footprint("after the pods");
}

/// A container whose command does not exist fails to start with StartError, and the pod's
/// shared shim keeps serving the pod's other containers (before and after).
#[test]
fn failed_start_leaves_the_pod_working() {
    let env = CriEnv::start();
    let pod = env.pod_config("failstart");
    let pod_id = env.run_pod(&pod);
    let good = env.run_container(
        &pod_id,
        &pod,
        &env.container_config(&pod, "good", "busybox", &["sleep", "1000"]),
    );
    let bad_cfg = env.container_config(&pod, "bad", "busybox", &["/no/such/binary"]);
    let mut cri = env.cri.clone();
    let bad = env
        .block_on(cri.create_container(&pod_id, &pod, &bad_cfg))
        .expect("CreateContainer");
    let err = env
        .block_on(cri.start_container(&bad))
        .expect_err("a missing binary cannot start");
    assert!(
        err.message().contains("/no/such/binary"),
        "{}",
        err.message()
    );
    let st = env.container_status(&bad);
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!(st.reason, "StartError");
    let r = env.exec_sync(&good, &["echo", "still here"]);
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "still here");
    let later = env.run_container(
        &pod_id,
        &pod,
        &env.container_config(&pod, "later", "busybox", &["sleep", "1000"]),
    );
    assert_eq!(
        env.container_status(&later).state,
        ContainerState::ContainerRunning as i32
    );
    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
    env.assert_no_footprint("after removing the pod");
}
