//! Sandboxed pods: RuntimeClass handler `sandbox` runs a pod's containers under their own guest
//! kernel (User-Mode Linux, `containerd-shim-berth-sandbox-v2`), side by side with runc pods on
//! one berthd. Real UML, real CNI, real images from the test registry.

use std::time::{Duration, Instant};

use berth_tests::cri::*;
use berth_tests::host_kernel_release;
use berth_tests::spdy_client::PortForward;
use k8s_cri::v1::*;
use tonic::Code;

const SANDBOX: &str = "sandbox";

fn stdout(r: &ExecSyncResponse) -> String {
    String::from_utf8_lossy(&r.stdout).trim().to_string()
}

/// The guest kernel's host pid, as the sandbox shim records it beside the sandbox directory.
fn guest_pid(env: &CriEnv, pod_id: &str) -> i32 {
    let file = env
        .daemon()
        .state()
        .join("sandbox")
        .join(format!("k8s.io-{pod_id}.pid"));
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
        .trim()
        .parse()
        .expect("pid")
}

/// Field 19 of /proc/<pid>/stat (after the command, which may hold spaces).
fn nice(pid: i32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    rest.split(' ')
        .nth(16)
        .and_then(|v| v.parse().ok())
        .expect("nice")
}

fn alive(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.starts_with(b"linux.uml"))
        .unwrap_or(false)
}

fn sandbox_pod(env: &CriEnv, name: &str) -> (PodSandboxConfig, String) {
    let pod = env.pod_config(name);
    let id = env
        .try_run_pod(&pod, SANDBOX)
        .unwrap_or_else(|e| panic!("RunPodSandbox {name} with handler sandbox: {e}"));
    (pod, id)
}

/// Removes the pod and checks that nothing of it is left: no netns, veth, IP, mount, cgroup,
/// iptables rule — and no guest kernel process.
fn remove_and_check(env: &CriEnv, pod_id: &str, kernel_pid: i32) {
    env.stop_pod(pod_id);
    env.remove_pod(pod_id);
    wait_for("the guest kernel to end", Duration::from_secs(10), || {
        !alive(kernel_pid)
    });
    let dir = env.daemon().state().join("sandbox");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(pod_id))
        .collect();
    assert!(
        left.is_empty(),
        "sandbox files left in {}: {left:?}",
        dir.display()
    );
}

#[test]
fn sandboxed_and_runc_pods_run_side_by_side_with_different_kernels() {
    let env = CriEnv::start();
    let (spod, sid) = sandbox_pod(&env, "guest");
    let rpod = env.pod_config("native");
    let rid = env.run_pod(&rpod);
    let sc = env.run_container(
        &sid,
        &spod,
        &env.container_config(&spod, "box", "busybox", &["sleep", "3600"]),
    );
    let rc = env.run_container(
        &rid,
        &rpod,
        &env.container_config(&rpod, "box", "busybox", &["sleep", "3600"]),
    );
    // The spec's capabilities apply inside the guest as under runc.
    let caps = ["sh", "-c", "grep -E '^Cap(Eff|Bnd|Prm)' /proc/self/status"];
    let (sandboxed_caps, runc_caps) = (env.exec_sync(&sc, &caps), env.exec_sync(&rc, &caps));
    assert!(
        stdout(&sandboxed_caps).contains("CapEff"),
        "{sandboxed_caps:?}"
    );
    assert_eq!(stdout(&sandboxed_caps), stdout(&runc_caps));
    let mount = env.exec_sync(&sc, &["mount", "-t", "tmpfs", "none", "/mnt"]);
    assert_ne!(
        mount.exit_code, 0,
        "an unprivileged container mounted: {mount:?}"
    );
    let host = host_kernel_release();
    let guest = env.exec_sync(&sc, &["uname", "-r"]);
    let native = env.exec_sync(&rc, &["uname", "-r"]);
    assert_eq!(guest.exit_code, 0, "{guest:?}");
    assert_eq!(
        stdout(&native),
        host,
        "a runc container shares the host kernel"
    );
    assert!(
        !stdout(&guest).is_empty() && stdout(&guest) != host,
        "the sandboxed container must see its own kernel, got {:?} (host {host})",
        stdout(&guest)
    );
    // Both run at the same time.
    for c in [&sc, &rc] {
        assert_eq!(
            env.container_status(c).state,
            ContainerState::ContainerRunning as i32
        );
    }
    assert_eq!(
        env.pod_status(&sid).state,
        PodSandboxState::SandboxReady as i32
    );
    let pid = guest_pid(&env, &sid);
    assert!(alive(pid));
    // The guest kernel runs as an unprivileged host user that cannot gain privileges.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:"), vec!["1000000000"; 4], "{status}");
    assert_eq!(field("Gid:"), vec!["1000000000"; 4], "{status}");
    assert_eq!(field("NoNewPrivs:"), vec!["1"], "{status}");
    // Its root is the pod's sandbox directory (what the shim's `delete` finds it by, too).
    let inode = |p: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p)
            .map(|m| (m.dev(), m.ino()))
            .expect("stat")
    };
    let dir = env
        .daemon()
        .state()
        .join("sandbox")
        .join(format!("k8s.io-{sid}"));
    assert_eq!(
        inode(&format!("/proc/{pid}/root")),
        inode(&dir.to_string_lossy())
    );
    // Default guest memory (128 MiB) as the guest sees it.
    let mem = env.exec_sync(&sc, &["sh", "-c", "grep MemTotal /proc/meminfo"]);
    let kb: u64 = stdout(&mem)
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((80_000..=131_072).contains(&kb), "guest MemTotal {kb} kB");
    remove_and_check(&env, &sid, pid);
    env.stop_pod(&rid);
    env.remove_pod(&rid);
    env.assert_no_footprint("after removing both pods");
}

#[test]
fn sandboxed_container_exit_logs_exec_and_stop() {
    let env = CriEnv::start();
    let (pod, pod_id) = sandbox_pod(&env, "life");
    let pid = guest_pid(&env, &pod_id);

    // Exit code and both streams in the CRI log.
    let job = env.container_config(
        &pod,
        "job",
        "busybox",
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    let (code, lines) = env.run_to_exit(&pod_id, &pod, &job);
    assert_eq!(code, 3);
    assert_eq!(stream_text(&lines, "stdout").trim(), "out", "{lines:?}");
    assert_eq!(stream_text(&lines, "stderr").trim(), "err", "{lines:?}");

    // ExecSync: output and exit code. The container carries 12 KiB of environment: its
    // CreateContainer is far larger than the 4 KiB the guest's console takes in one go.
    let mut cri = env.cri.clone();
    let mut svc_cfg = env.container_config(
        &pod,
        "svc",
        "busybox",
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 1; done",
        ],
    );
    svc_cfg.envs = (0..200)
        .map(|i| KeyValue {
            key: format!("BIG_{i}"),
            value: format!("{i:0>50}"),
        })
        .collect();
    let svc = env.run_container(&pod_id, &pod, &svc_cfg);
    let r = env.exec_sync(&svc, &["sh", "-c", "echo $BIG_199"]);
    assert_eq!(stdout(&r), format!("{:0>50}", 199), "{r:?}");
    let r = env.exec_sync(&svc, &["sh", "-c", "echo hi; echo oops >&2; exit 5"]);
    assert_eq!((r.exit_code, stdout(&r)), (5, "hi".to_string()));
    assert_eq!(String::from_utf8_lossy(&r.stderr).trim(), "oops");
    // Guest root owns the image's files: it writes into them and creates new ones.
    let r = env.exec_sync(
        &svc,
        &["sh", "-c", "echo extra:x:4242:4242::/:/bin/sh >> /etc/passwd && echo new > /made && id -u && cat /made && tail -n1 /etc/passwd"],
    );
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert_eq!(stdout(&r), "0\nnew\nextra:x:4242:4242::/:/bin/sh", "{r:?}");
    // Stats: the guest kernel's memory and CPU as the host accounts them.
    let stats = env
        .rt
        .block_on(cri.runtime.container_stats(ContainerStatsRequest {
            container_id: svc.clone(),
        }))
        .expect("ContainerStats")
        .into_inner()
        .stats
        .expect("stats");
    let mem = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map_or(0, |v| v.value);
    let cpu = stats
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .map_or(0, |v| v.value);
    assert!(mem > 1 << 20, "memory working set {mem}");
    assert!(cpu > 0, "cpu usage {cpu}");

    // StopContainer: SIGTERM first (the trap exits 0)...
    env.rt
        .block_on(cri.runtime.stop_container(StopContainerRequest {
            container_id: svc.clone(),
            timeout: 10,
        }))
        .expect("stop svc");
    let st = env.container_status(&svc);
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 0, "SIGTERM reached the trap: {st:?}");

    // ...then SIGKILL after the timeout for a process that ignores SIGTERM.
    let stubborn = env.run_container(
        &pod_id,
        &pod,
        &env.container_config(
            &pod,
            "stubborn",
            "busybox",
            &["sh", "-c", "trap '' TERM; while true; do sleep 1; done"],
        ),
    );
    let started = Instant::now();
    env.rt
        .block_on(cri.runtime.stop_container(StopContainerRequest {
            container_id: stubborn.clone(),
            timeout: 2,
        }))
        .expect("stop stubborn");
    let took = started.elapsed();
    let st = env.container_status(&stubborn);
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 137, "killed after the timeout: {st:?}");
    assert!(
        took >= Duration::from_secs(2),
        "SIGKILL came before the timeout ({took:?})"
    );

    remove_and_check(&env, &pod_id, pid);
    env.assert_no_footprint("after removing the sandboxed pod");
}

#[test]
fn escape_attempts_from_the_sandbox_fail() {
    let env = CriEnv::start();
    // Privileged, so that it holds every capability its guest gives: the guest kernel, not
    // the container's capabilities, must be what stops it.
    let mut pod = env.pod_config("jail");
    if let Some(sc) = pod.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.privileged = true;
    }
    let pod_id = env.try_run_pod(&pod, SANDBOX).expect("RunPodSandbox jail");
    let pid = guest_pid(&env, &pod_id);
    let mut cfg = env.container_config(&pod, "box", "busybox", &["sleep", "3600"]);
    if let Some(sc) = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.privileged = true;
    }
    let c = env.run_container(&pod_id, &pod, &cfg);
    let host_shadow = std::fs::read_to_string("/etc/shadow").expect("host /etc/shadow");
    let host_passwd_line = std::fs::read_to_string("/etc/passwd")
        .expect("host /etc/passwd")
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();

    // Every hostfs source the guest may try, including climbing out with `..` and a symlink
    // the guest plants in its own rootfs pointing at the host's /etc.
    let rootfs = format!("/c/{c}/rootfs");
    let attempts = [
        "/etc".to_string(),
        "/../../../../../etc".to_string(),
        "//etc/./".to_string(),
        format!("{rootfs}/../../../../etc"),
        format!("{rootfs}/escape"),
    ];
    let script = format!(
        "ln -s /etc /escape; mkdir -p /mnt/x; for src in {}; do \
           if mount -t hostfs none /mnt/x -o \"$src\" 2>/dev/null; then \
             echo \"== $src\"; cat /mnt/x/shadow /mnt/x/passwd 2>/dev/null; umount /mnt/x; \
           else echo \"refused $src\"; fi; \
         done; cat /etc/shadow 2>/dev/null; cat /proc/1/root/etc/shadow 2>/dev/null; \
         mount -t hostfs none /mnt/x -o '{rootfs}' && ls /mnt/x/bin/busybox && umount /mnt/x",
        attempts
            .iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let r = env.exec_sync(&c, &["sh", "-c", &script]);
    let out = String::from_utf8_lossy(&r.stdout).to_string();
    eprintln!(
        "guest output:\n{out}\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
    // hostfs works from inside (the container's own rootfs mounts), so the failures below are
    // the confinement, not a guest that cannot mount at all.
    assert!(
        r.exit_code == 0 && out.contains("/mnt/x/bin/busybox"),
        "{r:?}"
    );
    for a in &attempts {
        assert!(
            out.contains(&format!(" {a}\n")),
            "attempt {a} did not run:\n{out}"
        );
    }
    for line in host_shadow.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            !out.contains(line),
            "host /etc/shadow line {line:?} seen in the guest:\n{out}"
        );
    }
    assert!(
        host_passwd_line.is_empty() || !out.contains(&host_passwd_line),
        "host /etc/passwd seen in the guest:\n{out}"
    );

    // Host processes are invisible: a host process with a unique command line.
    let mut marker = std::process::Command::new("sleep")
        .arg("987654")
        .spawn()
        .expect("spawn marker");
    let r = env.exec_sync(
        &c,
        &[
            "sh",
            "-c",
            "grep -l 98765[4] /proc/[0-9]*/cmdline 2>/dev/null; ls /proc | grep -c '^[0-9]'",
        ],
    );
    let _ = marker.kill();
    let _ = marker.wait();
    let out = stdout(&r);
    assert!(
        !out.contains("/proc/"),
        "a host process is visible in the guest:\n{out}"
    );
    let guest_procs: usize = out.lines().last().unwrap_or("0").parse().unwrap_or(0);
    assert!(
        guest_procs > 0 && guest_procs < 20,
        "guest sees {guest_procs} processes"
    );

    remove_and_check(&env, &pod_id, pid);
    env.assert_no_footprint("after the escape attempts");
}

#[test]
fn httpd_in_a_sandboxed_pod_answers_on_its_pod_ip() {
    let env = CriEnv::start();
    // A pod that says how much memory it needs gets a guest that size.
    let mut pod = env.pod_config("web");
    if let Some(l) = pod.linux.as_mut() {
        l.resources = Some(LinuxContainerResources {
            memory_limit_in_bytes: 256 << 20,
            ..Default::default()
        });
    }
    let pod_id = env.try_run_pod(&pod, SANDBOX).expect("RunPodSandbox web");
    let pid = guest_pid(&env, &pod_id);
    let c = env.run_container(
        &pod_id,
        &pod,
        &env.container_config(&pod, "httpd", "httpd", &[]),
    );
    let mem = env.exec_sync(&c, &["sh", "-c", "grep MemTotal /proc/meminfo"]);
    let kb: u64 = stdout(&mem)
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((200_000..=262_144).contains(&kb), "guest MemTotal {kb} kB");
    let ip = env.pod_ip(&pod_id);
    assert!(ip.starts_with(&env.ip_prefix), "pod ip {ip}");
    let (code, body) = http_get_eventually(&ip, 8080);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("hello from busybox httpd"), "{body}");

    // kubectl port-forward reaches it too (SPDY portforward.k8s.io, as kubectl speaks it).
    let mut rt = env.cri.runtime.clone();
    let url = env
        .block_on(rt.port_forward(PortForwardRequest {
            pod_sandbox_id: pod_id.clone(),
            port: vec![8080],
        }))
        .expect("PortForward")
        .into_inner()
        .url;
    let (answer, error) = env.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            let pf = PortForward::connect(&url).await.expect("SPDY upgrade");
            let f = pf.forward(8080, 0).await.expect("forward");
            f.exchange(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .await
                .expect("exchange")
        })
        .await
        .expect("port-forward timed out")
    });
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(error, "", "error stream");
    assert!(answer.contains("hello from busybox httpd"), "{answer}");
    remove_and_check(&env, &pod_id, pid);
    env.assert_no_footprint("after removing the web pod");
}

#[test]
fn killing_the_guest_kernel_stops_the_pods_tasks() {
    let env = CriEnv::start();
    let (pod, pod_id) = sandbox_pod(&env, "doomed");
    let pid = guest_pid(&env, &pod_id);
    let c = env.run_container(
        &pod_id,
        &pod,
        &env.container_config(&pod, "box", "busybox", &["sleep", "3600"]),
    );
    // SAFETY: kill(2) of the guest kernel this test's berthd started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let st = env.wait_exited(&c);
    assert_eq!(st.exit_code, 137, "{st:?}");
    wait_for("the pod to be not ready", Duration::from_secs(10), || {
        env.pod_status(&pod_id).state == PodSandboxState::SandboxNotready as i32
    });
    remove_and_check(&env, &pod_id, pid);
    env.assert_no_footprint("after the guest kernel was killed");
}

#[test]
fn a_missing_guest_kernel_is_a_clear_error() {
    let env = CriEnv::start_with(Options {
        extra_config: "[sandbox]\nkernel = \"/nonexistent/linux.uml\"\n".into(),
        ..Default::default()
    });
    let pod = env.pod_config("nokernel");
    let e = env.try_run_pod(&pod, SANDBOX).expect_err("no guest kernel");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(
        e.message().contains("/nonexistent/linux.uml") && e.message().contains("sandbox"),
        "{}",
        e.message()
    );
    env.assert_no_footprint("after the refused pod");
}

/// Warm guests waiting in the pool: (id, kernel pid) from the pid files their shims' guests
/// write beside their directories.
fn warm_guests(env: &CriEnv) -> Vec<(String, i32)> {
    let dir = env.daemon().state().join("sandbox");
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name
                .strip_prefix("k8s.io-")?
                .strip_suffix(".pid")?
                .to_string();
            let pid = std::fs::read_to_string(e.path())
                .ok()?
                .trim()
                .parse()
                .ok()?;
            id.starts_with("warm-").then_some((id, pid))
        })
        .collect()
}

#[test]
fn a_sandboxed_pod_takes_a_warm_guest_and_the_pool_refills() {
    let mut env = CriEnv::start_with(Options {
        extra_config: "[sandbox]\npool_size = 1\n".into(),
        ..Default::default()
    });
    let mut first = None;
    wait_for("a warm guest", Duration::from_secs(60), || {
        first = warm_guests(&env).into_iter().find(|(_, pid)| alive(*pid));
        first.is_some()
    });
    let (warm_id, warm_pid) = first.expect("warm guest");

    let (pod, pod_id) = sandbox_pod(&env, "warm");
    let c = env.run_container(
        &pod_id,
        &pod,
        &env.container_config(&pod, "httpd", "httpd", &[]),
    );
    // The pod runs in the warm kernel: no guest of its own was booted.
    assert!(
        !env.daemon()
            .state()
            .join("sandbox")
            .join(format!("k8s.io-{pod_id}.pid"))
            .exists(),
        "a cold guest was booted for the pod"
    );
    assert!(alive(warm_pid));
    let r = env.exec_sync(&c, &["uname", "-r"]);
    assert_ne!(stdout(&r), host_kernel_release());
    // It took the pod's network over: its server answers on the pod IP.
    let ip = env.pod_ip(&pod_id);
    let (code, body) = http_get_eventually(&ip, 8080);
    assert_eq!(code, 200, "{body}");
    // The pool boots a replacement.
    let mut refill = None;
    wait_for("the pool to refill", Duration::from_secs(60), || {
        refill = warm_guests(&env)
            .into_iter()
            .find(|(id, pid)| *id != warm_id && alive(*pid));
        refill.is_some()
    });
    let (_, refill_pid) = refill.expect("refill");
    // A waiting guest boots and idles at a low priority; the pod's runs at the normal one.
    assert_eq!(nice(refill_pid), 10);
    assert_eq!(nice(warm_pid), 0);

    env.stop_pod(&pod_id);
    env.remove_pod(&pod_id);
    wait_for("the adopted guest to end", Duration::from_secs(10), || {
        !alive(warm_pid)
    });
    // Stopping berthd stops the guest nobody took, and leaves nothing behind.
    assert!(alive(refill_pid));
    env.daemon_mut().terminate();
    wait_for("the waiting guest to end", Duration::from_secs(10), || {
        !alive(refill_pid)
    });
    assert!(warm_guests(&env).is_empty(), "{:?}", warm_guests(&env));
    env.assert_no_footprint("after berthd stopped with a warm guest");
}
