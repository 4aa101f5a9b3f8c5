//! CRI container security contexts take effect in the running process: user, read-only rootfs,
//! dropped capabilities, seccomp. Every restriction is shown next to a control run without it, so
//! a test cannot pass because the command fails for another reason.

use std::process::Command;

use berth_tests::cri::*;
use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::*;

fn sec(c: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// Runs `cmd` in a new container of the pod: (exit code, stdout+stderr text).
fn run(
    env: &CriEnv,
    pod_id: &str,
    pod: &PodSandboxConfig,
    name: &str,
    cmd: &[&str],
    adjust: impl FnOnce(&mut ContainerConfig),
) -> (i32, String) {
    let mut c = env.container_config(pod, name, "busybox", cmd);
    adjust(&mut c);
    let (code, lines) = env.run_to_exit(pod_id, pod, &c);
    let text = format!(
        "{}{}",
        stream_text(&lines, "stdout"),
        stream_text(&lines, "stderr")
    );
    (code, text)
}

#[test]
fn run_as_user() {
    let env = CriEnv::start();
    let pod = env.pod_config("user");
    let pod_id = env.run_pod(&pod);
    let (code, out) = run(&env, &pod_id, &pod, "root", &["id", "-u"], |_| {});
    assert_eq!((code, out.as_str()), (0, "0\n"), "the image's default user");
    let (code, out) = run(&env, &pod_id, &pod, "user", &["id", "-u"], |c| {
        sec(c).run_as_user = Some(Int64Value { value: 1234 });
    });
    assert_eq!((code, out.as_str()), (0, "1234\n"));
    let (code, out) = run(&env, &pod_id, &pod, "group", &["id", "-g"], |c| {
        sec(c).run_as_user = Some(Int64Value { value: 1234 });
        sec(c).run_as_group = Some(Int64Value { value: 4321 });
    });
    assert_eq!((code, out.as_str()), (0, "4321\n"));
    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
}

#[test]
fn readonly_rootfs() {
    let env = CriEnv::start();
    let pod = env.pod_config("ro");
    let pod_id = env.run_pod(&pod);
    let (code, out) = run(&env, &pod_id, &pod, "rw", &["touch", "/x"], |_| {});
    assert_eq!(code, 0, "touch /x on a writable rootfs: {out}");
    let (code, out) = run(&env, &pod_id, &pod, "ro", &["touch", "/x"], |c| {
        sec(c).readonly_rootfs = true;
    });
    assert_ne!(code, 0, "touch /x succeeded on a read-only rootfs");
    assert!(out.contains("Read-only file system"), "{out}");
    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
}

#[test]
fn dropping_net_raw_breaks_ping() {
    // Precondition, checked on the host: busybox ping uses a raw socket as root and has no
    // fallback, so without CAP_NET_RAW it fails whatever ping_group_range says.
    let host_ping = |drop_net_raw: bool| {
        let ping = "ip link set lo up && /bin/busybox ping -c1 -W2 127.0.0.1";
        let script = if drop_net_raw {
            ping.replace("&& /bin/", "&& setpriv --bounding-set=-net_raw /bin/")
        } else {
            ping.to_string()
        };
        Command::new("unshare")
            .args(["--net", "sh", "-c", &script])
            .output()
            .expect("unshare --net")
    };
    let with = host_ping(false);
    assert!(
        with.status.success(),
        "busybox ping fails on this host even with CAP_NET_RAW: {}",
        String::from_utf8_lossy(&with.stderr)
    );
    let without = host_ping(true);
    assert!(
        !without.status.success(),
        "busybox ping works without CAP_NET_RAW on this host; the test would prove nothing"
    );

    let env = CriEnv::start();
    let pod = env.pod_config("ping");
    let pod_id = env.run_pod(&pod);
    let ping = ["ping", "-c1", "-W2", "127.0.0.1"];
    let (code, out) = run(&env, &pod_id, &pod, "default", &ping, |_| {});
    assert_eq!(code, 0, "ping with the default capabilities: {out}");
    let (code, out) = run(&env, &pod_id, &pod, "dropped", &ping, |c| {
        sec(c).capabilities = Some(Capability {
            drop_capabilities: vec!["NET_RAW".into()],
            ..Default::default()
        });
    });
    assert_ne!(code, 0, "ping worked with NET_RAW dropped: {out}");
    assert!(out.contains("permission denied"), "{out}");
    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
}

#[test]
fn seccomp_runtime_default_blocks_unshare() {
    // Precondition: an unprivileged user may create a user namespace on this host, so the
    // Unconfined run below can succeed.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/bin/busybox",
            "unshare",
            "-U",
            "true",
        ])
        .output()
        .expect("setpriv");
    assert!(
        out.status.success(),
        "unprivileged user namespaces do not work on this host: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let env = CriEnv::start();
    let pod = env.pod_config("seccomp");
    let pod_id = env.run_pod(&pod);
    let cmd = ["unshare", "-U", "true"];
    let profile = |t: ProfileType| {
        Some(SecurityProfile {
            profile_type: t as i32,
            localhost_ref: String::new(),
        })
    };
    let (code, out) = run(&env, &pod_id, &pod, "unconfined", &cmd, |c| {
        sec(c).seccomp = profile(ProfileType::Unconfined);
    });
    assert_eq!(code, 0, "unshare -U under seccomp Unconfined: {out}");
    let (code, out) = run(&env, &pod_id, &pod, "default", &cmd, |c| {
        sec(c).seccomp = profile(ProfileType::RuntimeDefault);
    });
    assert_ne!(
        code, 0,
        "unshare -U worked under seccomp RuntimeDefault: {out}"
    );
    assert!(out.contains("Operation not permitted"), "{out}");
    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
}
