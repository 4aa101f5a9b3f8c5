//! containerd's `ctr` running containers through berthd, with berth's own shim and with Debian's
//! `containerd-shim-runc-v2`: the lifecycle, exec, pause/resume, metrics, events, kill, removal.

use std::process::Command;

use berth_tests::{berthd_with_busybox, wait_until, Berthd, CtrEvents};

const BERTH_SHIM: &str = "io.containerd.berth.v2";
const RUNC_SHIM: &str = "io.containerd.runc.v2";
const BUSYBOX: &str = "docker.io/library/busybox:latest";

/// Row of `ctr task ls` for `id`: (pid, status).
fn task_row(d: &Berthd, id: &str) -> Option<(String, String)> {
    let ls = d.ctr(&d.unique_ns(), &["task", "ls"]).ok();
    ls.stdout.lines().skip(1).find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.first() == Some(&id)).then(|| (cols[1].to_string(), cols[2].to_string()))
    })
}

fn host_kernel_release() -> String {
    String::from_utf8(
        Command::new("uname")
            .arg("-r")
            .output()
            .expect("uname")
            .stdout,
    )
    .expect("utf8")
    .trim()
    .to_string()
}

fn run_rm_prints_host_kernel(runtime: &str) {
    let d = berthd_with_busybox();
    let out = d
        .ctr(
            &d.unique_ns(),
            &[
                "run",
                "--rm",
                "--runtime",
                runtime,
                BUSYBOX,
                "k1",
                "uname",
                "-r",
            ],
        )
        .ok();
    assert_eq!(out.stdout.trim(), host_kernel_release());
    let out = d
        .ctr(
            &d.unique_ns(),
            &[
                "run",
                "--rm",
                "--runtime",
                runtime,
                BUSYBOX,
                "k2",
                "uname",
                "-a",
            ],
        )
        .ok();
    assert!(
        out.stdout.starts_with("Linux ") && out.stdout.contains(&host_kernel_release()),
        "{}",
        out.stdout
    );
    // --rm left nothing: no container, no task, no snapshot.
    assert!(d
        .ctr(&d.unique_ns(), &["containers", "ls", "-q"])
        .ok()
        .stdout
        .trim()
        .is_empty());
    assert!(d
        .ctr(&d.unique_ns(), &["task", "ls", "-q"])
        .ok()
        .stdout
        .trim()
        .is_empty());
    let snaps = d.ctr(&d.unique_ns(), &["snapshots", "ls"]).ok().stdout;
    assert!(!snaps.contains("k1") && !snaps.contains("k2"), "{snaps}");
}

#[test]
fn run_rm_prints_host_kernel_berth_shim() {
    run_rm_prints_host_kernel(BERTH_SHIM);
}

#[test]
fn run_rm_prints_host_kernel_runc_shim() {
    run_rm_prints_host_kernel(RUNC_SHIM);
}

fn lifecycle(runtime: &str) {
    let d = berthd_with_busybox();
    let events = CtrEvents::start(&d);
    d.ctr(
        &d.unique_ns(),
        &[
            "run",
            "-d",
            "--runtime",
            runtime,
            BUSYBOX,
            "web",
            "sleep",
            "1000",
        ],
    )
    .ok();
    let (pid, status) = task_row(&d, "web").expect("task listed");
    assert_eq!(status, "RUNNING");
    assert!(pid.parse::<u32>().expect("pid") > 1);
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} is not a live process"
    );

    let exec = d.ctr(
        &d.unique_ns(),
        &[
            "task",
            "exec",
            "--exec-id",
            "x3",
            "web",
            "sh",
            "-c",
            "exit 3",
        ],
    );
    assert_eq!(exec.code, Some(3), "exec exit code: {}", exec.stderr);

    let ps = d.ctr(&d.unique_ns(), &["task", "ps", "web"]).ok();
    assert!(
        ps.stdout
            .lines()
            .any(|l| l.split_whitespace().next() == Some(pid.as_str())),
        "{}",
        ps.stdout
    );

    let metrics = d.ctr(&d.unique_ns(), &["task", "metrics", "web"]).ok();
    assert!(
        metrics.stdout.contains("memory.usage_in_bytes") || metrics.stdout.contains("memory.usage"),
        "{}",
        metrics.stdout
    );

    d.ctr(&d.unique_ns(), &["task", "pause", "web"]).ok();
    assert_eq!(task_row(&d, "web").expect("task").1, "PAUSED");
    d.ctr(&d.unique_ns(), &["task", "resume", "web"]).ok();
    assert_eq!(task_row(&d, "web").expect("task").1, "RUNNING");

    // Starting a running task is a precondition failure; killing an unknown one is not found.
    let again = d.ctr(&d.unique_ns(), &["task", "start", "-d", "web"]);
    assert_ne!(again.code, Some(0));
    let unknown = d.ctr(&d.unique_ns(), &["task", "kill", "nosuch"]);
    assert_ne!(unknown.code, Some(0));
    assert!(unknown.stderr.contains("not found"), "{}", unknown.stderr);

    // ctr refuses to remove a container whose task runs; a task that runs cannot be deleted.
    let rm_running = d.ctr(&d.unique_ns(), &["containers", "rm", "web"]);
    assert_ne!(
        rm_running.code,
        Some(0),
        "container removed while its task runs"
    );
    let del_running = d.ctr(&d.unique_ns(), &["task", "rm", "web"]);
    assert_ne!(del_running.code, Some(0), "running task deleted");

    d.ctr(&d.unique_ns(), &["task", "kill", "-s", "SIGKILL", "web"])
        .ok();
    wait_until("task stopped", || {
        task_row(&d, "web").map(|r| r.1) == Some("STOPPED".into())
    });
    d.ctr(&d.unique_ns(), &["task", "rm", "web"]).ok();
    d.ctr(&d.unique_ns(), &["containers", "rm", "web"]).ok();
    assert!(task_row(&d, "web").is_none());

    wait_until("lifecycle events", || {
        let t = events.text();
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/paused",
            "/tasks/resumed",
            "/tasks/exit",
            "/tasks/delete",
            "/containers/create",
            "/containers/delete",
        ]
        .iter()
        .all(|topic| t.contains(topic))
    });
    assert_no_shim_left(&d);
}

#[test]
fn lifecycle_berth_shim() {
    lifecycle(BERTH_SHIM);
}

#[test]
fn lifecycle_runc_shim() {
    lifecycle(RUNC_SHIM);
}

/// No shim process started for this daemon's bundles remains, and nothing is mounted under its dirs.
fn assert_no_shim_left(d: &Berthd) {
    let state = d.state();
    wait_until("shims gone", || {
        std::fs::read_dir("/proc")
            .expect("proc")
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains("containerd-shim"))
            .all(|c| {
                !c.contains(state.to_str().expect("utf8"))
                    && !c.contains(d.socket().to_str().expect("utf8"))
            })
    });
    let mounts = berth_tests::daemon::mounts_under(d.dir.path());
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
}

#[test]
fn missing_runtime_binary_is_named() {
    let d = berthd_with_busybox();
    let out = d.ctr(
        &d.unique_ns(),
        &[
            "run",
            "--rm",
            "--runtime",
            "io.containerd.nope.v1",
            BUSYBOX,
            "m1",
            "true",
        ],
    );
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("containerd-shim-nope-v1"),
        "{}",
        out.stderr
    );
}

#[test]
fn runc_failure_carries_runc_message() {
    let d = berthd_with_busybox();
    for runtime in [BERTH_SHIM, RUNC_SHIM] {
        let out = d.ctr(
            &d.unique_ns(),
            &[
                "run",
                "--rm",
                "--runtime",
                runtime,
                BUSYBOX,
                "f1",
                "/no/such/binary",
            ],
        );
        assert_ne!(out.code, Some(0));
        assert!(
            out.stderr.contains("no such file or directory") || out.stderr.contains("not found"),
            "{runtime}: {}",
            out.stderr
        );
        let _ = d.ctr(&d.unique_ns(), &["task", "rm", "-f", "f1"]);
        let _ = d.ctr(&d.unique_ns(), &["containers", "rm", "f1"]);
    }
}
