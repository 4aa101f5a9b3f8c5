//! `berth run`, `task`, `container` and `events` against a real containerd 1.6 with Debian's
//! runc shim and the busybox test image. Each test owns its containerd and a namespace unique
//! to this test process (cgroup paths `/<ns>/<id>` are host-global).

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Containerd, BUSYBOX};

fn ns(name: &str) -> String {
    format!("bcli{}-{name}", std::process::id())
}

fn setup(name: &str) -> Option<(Containerd, String)> {
    let c = Containerd::start()?;
    let n = ns(name);
    if !c.import_busybox(&n) {
        return None;
    }
    Some((c, n))
}

#[test]
fn run_rm_prints_output_and_exits_with_the_container_code() {
    let Some((c, n)) = setup("rm") else { return };
    let out = c.berth(
        &n,
        &[
            "run",
            "--rm",
            BUSYBOX,
            "t1",
            "sh",
            "-c",
            "echo hi; echo oops >&2; exit 7",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    assert_eq!(out.status.code(), Some(7));
    // --rm: no task, no container, only the image's committed snapshot left.
    assert_eq!(c.json(&n, &["task", "ls"]), serde_json::json!([]));
    assert_eq!(c.json(&n, &["container", "ls"]), serde_json::json!([]));
    let snaps = c.json(&n, &["snapshot", "ls"]);
    assert!(
        snaps
            .as_array()
            .expect("array")
            .iter()
            .all(|s| s["kind"] == "Committed"),
        "{snaps}"
    );

    // Without --rm the task is deleted but the container stays (as ctr run does).
    let out = c.berth(&n, &["run", BUSYBOX, "t2", "true"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(c.json(&n, &["task", "ls"]), serde_json::json!([]));
    let info = c.json(&n, &["container", "info", "t2"]);
    assert_eq!(info["Image"], BUSYBOX);
    assert_eq!(info["Runtime"]["Name"], "io.containerd.runc.v2");
    assert_eq!(info["SnapshotKey"], "t2");
    assert_eq!(info["Spec"]["process"]["args"], serde_json::json!(["true"]));
    assert_eq!(info["Spec"]["linux"]["cgroupsPath"], format!("/{n}/t2"));
    c.ok(&n, &["container", "rm", "t2"]);
    assert_eq!(c.json(&n, &["container", "ls"]), serde_json::json!([]));

    // A missing image is a clean error.
    let out = c.berth(
        &n,
        &["run", "--rm", "docker.io/library/nope:1", "t3", "true"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("berth: "));
}

#[test]
fn env_cwd_user_are_visible_inside() {
    let Some((c, n)) = setup("env") else { return };
    let out = c.ok(
        &n,
        &[
            "run",
            "--rm",
            "--env",
            "FOO=bar",
            "--env",
            "PATH=/bin",
            "--cwd",
            "/tmp",
            "--user",
            "65534",
            BUSYBOX,
            "e1",
            "sh",
            "-c",
            "echo $FOO; echo $PATH; pwd; id -u",
        ],
    );
    assert_eq!(out, "bar\n/bin\n/tmp\n65534\n");
    // Names (and a bare uid's group) come from the image's /etc/passwd and /etc/group.
    let out = c.ok(
        &n,
        &[
            "run",
            "--rm",
            "--user",
            "nobody",
            BUSYBOX,
            "e2",
            "sh",
            "-c",
            "id -u; id -g",
        ],
    );
    assert_eq!(out, "65534\n65534\n");
    let out = c.berth(
        &n,
        &["run", "--rm", "--user", "nosuchuser", BUSYBOX, "e3", "true"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuchuser"));
    assert_eq!(c.json(&n, &["container", "ls"]), serde_json::json!([]));
}

#[test]
fn bind_mount_is_visible_read_only() {
    let Some((c, n)) = setup("mount") else { return };
    let host = c.dir.path().join("shared");
    std::fs::create_dir(&host).expect("mkdir");
    std::fs::write(host.join("f"), "from host\n").expect("write");
    let m = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        host.display()
    );
    let out = c.berth(
        &n,
        &[
            "run",
            "--rm",
            "--mount",
            &m,
            BUSYBOX,
            "m1",
            "sh",
            "-c",
            "cat /data/f; touch /data/x",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from host\n");
    assert_ne!(out.status.code(), Some(0), "the mount must be read-only");
    assert!(!host.join("x").exists());
}

#[test]
fn memory_limit_oom_kills_with_137() {
    let Some((c, n)) = setup("oom") else { return };
    let out = c.berth(
        &n,
        &[
            "run",
            "--rm",
            "--memory",
            "16m",
            BUSYBOX,
            "o1",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=64M",
            "count=1",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(137),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same allocation fits without the limit.
    let out = c.berth(
        &n,
        &[
            "run",
            "--rm",
            BUSYBOX,
            "o2",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=64M",
            "count=1",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn detached_task_lifecycle() {
    let Some((c, n)) = setup("detach") else {
        return;
    };
    let out = c.ok(
        &n,
        &[
            "run",
            "-d",
            "--env",
            "FROMRUN=1",
            "--memory",
            "32m",
            "--cpus",
            "0.5",
            BUSYBOX,
            "d1",
            "sleep",
            "300",
        ],
    );
    assert_eq!(out, "");
    let tasks = c.json(&n, &["task", "ls"]);
    assert_eq!(tasks[0]["task"], "d1");
    assert_eq!(tasks[0]["status"], "RUNNING");
    let pid = tasks[0]["pid"].as_u64().expect("pid");
    assert!(pid > 0);
    let table = c.ok(&n, &["task", "ls"]);
    assert!(
        table.starts_with("TASK") && table.contains("RUNNING"),
        "{table}"
    );

    // exec: its own exit code and output; the container's env is inherited.
    let out = c.berth(
        &n,
        &[
            "task",
            "exec",
            "--exec-id",
            "x1",
            "d1",
            "sh",
            "-c",
            "echo in; exit 3",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "in\n");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        c.ok(&n, &["task", "exec", "d1", "sh", "-c", "echo $FROMRUN"]),
        "1\n"
    );

    // ps: the init pid, and a running exec's pid tagged with its exec id.
    let mut bg = c
        .cmd(
            &n,
            &["task", "exec", "--exec-id", "slow", "d1", "sleep", "5"],
        )
        .spawn()
        .expect("exec");
    let deadline = Instant::now() + Duration::from_secs(10);
    let ps = loop {
        let ps = c.json(&n, &["task", "ps", "d1"]);
        if ps.as_array().map_or(0, Vec::len) >= 2 || Instant::now() > deadline {
            break ps;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let rows = ps.as_array().expect("array");
    assert!(rows.iter().any(|r| r["pid"] == pid), "{ps}");
    assert!(rows.iter().any(|r| r["info"] == "slow"), "{ps}");
    c.ok(
        &n,
        &["task", "kill", "--exec-id", "slow", "-s", "KILL", "d1"],
    );
    let st = bg.wait().expect("wait exec");
    assert_eq!(st.code(), Some(137));

    // metrics: cgroup v1 memory/cpu/pids from the shim.
    let m = c.json(&n, &["task", "metrics", "d1"]);
    let metrics = &m["metrics"];
    let usage = metrics["memory.usage_in_bytes"]
        .as_u64()
        .or(metrics["memory.usage"].as_u64());
    assert!(usage.expect("memory usage") > 0, "{m}");
    if let Some(limit) = metrics["memory.limit_in_bytes"].as_u64() {
        assert_eq!(limit, 32 << 20);
    }
    assert!(metrics["pids.current"].as_u64().expect("pids") >= 1, "{m}");
    let text = c.ok(&n, &["task", "metrics", "d1"]);
    assert!(
        text.contains("METRIC") && text.contains("pids.current"),
        "{text}"
    );

    // pause / resume.
    c.ok(&n, &["task", "pause", "d1"]);
    assert_eq!(c.task_status(&n, "d1").as_deref(), Some("PAUSED"));
    c.ok(&n, &["task", "resume", "d1"]);
    assert_eq!(c.task_status(&n, "d1").as_deref(), Some("RUNNING"));

    // A running container cannot be removed.
    let out = c.berth(&n, &["container", "rm", "d1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("non stopped"));

    // kill → STOPPED; then container rm deletes task, container and snapshot.
    c.ok(&n, &["task", "kill", "-s", "SIGKILL", "d1"]);
    c.wait_status(&n, "d1", "STOPPED");
    c.ok(&n, &["container", "rm", "d1"]);
    assert_eq!(c.json(&n, &["task", "ls"]), serde_json::json!([]));
    assert_eq!(c.json(&n, &["container", "ls"]), serde_json::json!([]));
    let snaps = c.json(&n, &["snapshot", "ls"]);
    assert!(
        !snaps
            .as_array()
            .expect("array")
            .iter()
            .any(|s| s["key"] == "d1"),
        "{snaps}"
    );
}

#[test]
fn task_rm_force_kills_a_running_task() {
    let Some((c, n)) = setup("taskrm") else {
        return;
    };
    c.ok(&n, &["run", "-d", BUSYBOX, "r1", "sleep", "300"]);
    let out = c.berth(&n, &["task", "rm", "r1"]);
    assert_eq!(out.status.code(), Some(1));
    let out = c.ok(&n, &["task", "rm", "-f", "r1"]);
    assert_eq!(out.trim(), "r1 137");
    assert_eq!(c.task_status(&n, "r1"), None);
    c.ok(&n, &["container", "rm", "r1"]);
}

#[test]
fn events_show_task_start_and_exit() {
    let Some((c, n)) = setup("events") else {
        return;
    };
    let mut ev = c
        .cmd(&n, &["--format", "json", "events"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("events");
    let stdout = ev.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Subscription is asynchronous: run until the stream has shown something.
    std::thread::sleep(Duration::from_millis(500));
    let out = c.berth(&n, &["run", "--rm", BUSYBOX, "ev1", "sh", "-c", "exit 4"]);
    assert_eq!(out.status.code(), Some(4));
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let done = |seen: &Vec<serde_json::Value>| {
        seen.iter()
            .any(|e| e["topic"] == "/tasks/start" && e["event"]["container_id"] == "ev1")
            && seen.iter().any(|e| {
                e["topic"] == "/tasks/exit"
                    && e["event"]["container_id"] == "ev1"
                    && e["event"]["exit_status"] == 4
            })
    };
    while !done(&seen) && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(serde_json::from_str(&l).expect("json event"));
        }
    }
    let _ = ev.kill();
    let _ = ev.wait();
    assert!(done(&seen), "{seen:?}");
    assert!(
        seen.iter().all(|e| e["namespace"] == n.as_str()),
        "{seen:?}"
    );
}
