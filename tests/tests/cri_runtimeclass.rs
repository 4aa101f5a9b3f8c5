//! RuntimeClass: RunPodSandbox's runtime_handler picks the OCI runtime (berthd's default handlers
//! `runc` and `crun`); an unknown handler is refused by name.
//!
//! crun 1.8 refuses hosts whose cgroup v2 hierarchy has controllers while v1 is in use ("hybrid
//! mode"). Whether crun works here is decided by running it directly on a one-binary bundle (the
//! probe below), so the crun test asserts success exactly when crun itself can run a container
//! with a cgroup on this host, and otherwise asserts that berthd reports the failure and cleans up.

use std::process::Command;

use berth_tests::cri::*;
use k8s_cri::v1::*;
use tonic::Code;

/// The runtimes' state root as berth's shim uses it (`<root>/<namespace>`).
fn runtime_root() -> String {
    let root =
        std::env::var("BERTH_SHIM_RUNTIME_ROOT").unwrap_or_else(|_| "/run/containerd/runc".into());
    format!("{root}/k8s.io")
}

/// `<runtime> state <id>` succeeds: the container was created by that runtime (runc keeps
/// state.json, crun a status file; neither reads the other's).
fn created_by(runtime: &str, id: &str) -> bool {
    Command::new(runtime)
        .args(["--root", &runtime_root(), "state", id])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Ok when crun can run a container with a cgroup here; Err(crun's own message) otherwise.
fn crun_works_here() -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("berth-crun-probe-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let bundle = dir.path();
    std::fs::create_dir_all(bundle.join("rootfs/bin")).map_err(|e| e.to_string())?;
    std::fs::copy("/bin/busybox", bundle.join("rootfs/bin/busybox")).map_err(|e| e.to_string())?;
    let spec = Command::new("crun")
        .arg("spec")
        .current_dir(bundle)
        .output()
        .map_err(|e| format!("crun spec: {e}"))?;
    if !spec.status.success() {
        return Err(String::from_utf8_lossy(&spec.stderr).into_owned());
    }
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let cgroup = format!("berth-crun-probe-{}", std::process::id());
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = serde_json::json!(["/bin/busybox", "true"]);
    config["linux"]["cgroupsPath"] = format!("/{cgroup}/probe").into();
    std::fs::write(&path, config.to_string()).map_err(|e| e.to_string())?;
    let out = Command::new("crun")
        .arg("--root")
        .arg(bundle.join("state"))
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(format!("berth-crun-probe-{}", std::process::id()))
        .output()
        .map_err(|e| format!("crun run: {e}"));
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = std::fs::remove_dir(h.path().join(&cgroup).join("probe"));
        let _ = std::fs::remove_dir(h.path().join(&cgroup));
    }
    let out = out?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The same pod (httpd) under `handler`: Ok(pod id) with HTTP checked, or the RunPodSandbox /
/// container error.
fn run_web_pod(env: &CriEnv, name: &str, handler: &str) -> Result<String, tonic::Status> {
    let pod = env.pod_config(name);
    let pod_id = env.try_run_pod(&pod, handler)?;
    let httpd = env.container_config(&pod, "httpd", "httpd", &[]);
    let mut cri = env.cri.clone();
    env.block_on(cri.run_container(&pod_id, &pod, &httpd))?;
    let st = env.pod_status(&pod_id);
    assert_eq!(
        st.runtime_handler, handler,
        "PodSandboxStatus.runtime_handler"
    );
    let ip = st.network.map(|n| n.ip).unwrap_or_default();
    assert!(ip.starts_with(&env.ip_prefix), "pod IP {ip:?}");
    let (code, body) = http_get_eventually(&ip, 8080);
    assert_eq!((code, body.as_str()), (200, HTTPD_PAGE));
    Ok(pod_id)
}

#[test]
fn runc_handler() {
    let env = CriEnv::start();
    let pod_id = run_web_pod(&env, "on-runc", "runc").expect("pod under runc");
    assert!(
        created_by("runc", &pod_id),
        "`runc --root {} state {pod_id}` fails: the sandbox was not created by runc",
        runtime_root()
    );
    let listed = env.list_pods(None);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].runtime_handler, "runc");
    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
    env.assert_no_footprint("after removing the runc pod");
}

#[test]
fn crun_handler_works_where_crun_does() {
    let host = crun_works_here();
    let env = CriEnv::start();
    let result = run_web_pod(&env, "on-crun", "crun");
    match (host, result) {
        (Ok(()), Ok(pod_id)) => {
            assert!(
                created_by("crun", &pod_id) && !created_by("runc", &pod_id),
                "the crun pod {pod_id} was not created by crun"
            );
            env.stop_pod(&pod_id);
            env.remove_pod(&pod_id);
        }
        (Ok(()), Err(e)) => panic!("crun works on this host but the crun pod failed: {e:?}"),
        (Err(why), Ok(pod_id)) => panic!(
            "crun cannot run containers here ({why}), yet the crun pod {pod_id} runs: \
             berthd did not use crun"
        ),
        (Err(why), Err(e)) => {
            eprintln!("crun cannot run here: {why}\nberthd answered: {e:?}");
            // berthd passes crun's own reason on.
            assert!(
                e.message().contains(why.trim()),
                "the error does not carry crun's reason {why:?}: {e:?}"
            );
            // A failed pod leaves nothing; kubelet removes what a failed RunPodSandbox returned
            // an id for, here there is none.
            for p in env.list_pods(None) {
                assert_ne!(p.state, PodSandboxState::SandboxReady as i32, "{p:?}");
                env.stop_pod(&p.id);
                env.remove_pod(&p.id);
            }
            env.assert_no_footprint("after the failed crun pod");
        }
    }
    // runc still works in the same daemon afterwards.
    let pod_id = run_web_pod(&env, "after", "runc").expect("runc pod after crun");
    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
    env.assert_no_footprint("after all pods");
}

#[test]
fn unknown_handler_is_invalid_argument() {
    let env = CriEnv::start();
    let pod = env.pod_config("nope");
    let err = env
        .try_run_pod(&pod, "nope")
        .expect_err("RunPodSandbox with handler nope");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("nope"), "{err:?}");
    assert!(env.list_pods(None).is_empty());
    env.assert_no_footprint("after the refused pod");
}
