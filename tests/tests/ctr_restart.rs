//! Tasks outlive berthd: SIGKILL the daemon, start it again, and find every container where it was;
//! a shim that dies is reported as an exit; an OOM kill is published.

use berth_tests::{berthd_with_busybox, wait_until, Berthd, CtrEvents};

const BUSYBOX: &str = "docker.io/library/busybox:latest";
const BERTH_SHIM: &str = "io.containerd.berth.v2";

fn tasks(d: &Berthd) -> Vec<(String, String, String)> {
    d.ctr(&d.unique_ns(), &["task", "ls"])
        .ok()
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            (c.len() >= 3).then(|| (c[0].to_string(), c[1].to_string(), c[2].to_string()))
        })
        .collect()
}

fn shim_pids(d: &Berthd) -> Vec<i32> {
    let state = d.state().display().to_string();
    std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let cwd = std::fs::read_link(e.path().join("cwd")).ok()?;
            (cmd.contains("containerd-shim") && cwd.starts_with(&state)).then_some(pid)
        })
        .collect()
}

fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn five_containers_survive_a_daemon_crash() {
    let mut d = berthd_with_busybox();
    for i in 0..5 {
        let id = format!("c{i}");
        d.ctr(
            &d.unique_ns(),
            &[
                "run",
                "-d",
                "--runtime",
                BERTH_SHIM,
                BUSYBOX,
                &id,
                "sleep",
                "1000",
            ],
        )
        .ok();
    }
    let before = tasks(&d);
    assert_eq!(before.len(), 5);
    assert!(before.iter().all(|t| t.2 == "RUNNING"), "{before:?}");

    d.kill9();
    // One container dies while berthd is down.
    let victim: i32 = before
        .iter()
        .find(|t| t.0 == "c3")
        .expect("c3")
        .1
        .parse()
        .expect("pid");
    kill(victim);
    std::thread::sleep(std::time::Duration::from_millis(300));
    d.spawn();

    let after = tasks(&d);
    for (id, pid, _) in &before {
        let now = after
            .iter()
            .find(|t| &t.0 == id)
            .unwrap_or_else(|| panic!("{id} lost: {after:?}"));
        assert_eq!(&now.1, pid, "{id} changed pid");
        let want = if id == "c3" { "STOPPED" } else { "RUNNING" };
        assert_eq!(now.2, want, "{id}: {after:?}");
    }
    let c3 = d.ctr(&d.unique_ns(), &["task", "rm", "c3"]).ok();
    assert!(
        c3.stdout.contains("137") || c3.stderr.contains("137") || c3.code == Some(0),
        "{}",
        c3.stdout
    );

    for i in 0..5 {
        let id = format!("c{i}");
        let _ = d.ctr(&d.unique_ns(), &["task", "kill", "-s", "SIGKILL", &id]);
    }
    wait_until("all stopped", || tasks(&d).iter().all(|t| t.2 == "STOPPED"));
    for i in 0..5 {
        let id = format!("c{i}");
        if i != 3 {
            d.ctr(&d.unique_ns(), &["task", "rm", &id]).ok();
        }
        d.ctr(&d.unique_ns(), &["containers", "rm", &id]).ok();
    }
    wait_until("no shim left", || shim_pids(&d).is_empty());
    let mounts = berth_tests::daemon::mounts_under(d.dir.path());
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
}

#[test]
fn shim_crash_is_an_exit() {
    let d = berthd_with_busybox();
    let events = CtrEvents::start(&d);
    d.ctr(
        &d.unique_ns(),
        &[
            "run",
            "-d",
            "--runtime",
            BERTH_SHIM,
            BUSYBOX,
            "victim",
            "sleep",
            "1000",
        ],
    )
    .ok();
    let shims = shim_pids(&d);
    assert_eq!(shims.len(), 1, "one shim expected: {shims:?}");
    kill(shims[0]);
    wait_until("task reported stopped", || {
        tasks(&d)
            .iter()
            .any(|t| t.0 == "victim" && t.2 == "STOPPED")
    });
    wait_until("exit published", || events.text().contains("/tasks/exit"));
    d.ctr(&d.unique_ns(), &["task", "rm", "victim"]).ok();
    d.ctr(&d.unique_ns(), &["containers", "rm", "victim"]).ok();
    wait_until("container process gone", || {
        tasks(&d).is_empty() && berth_tests::daemon::mounts_under(d.dir.path()).is_empty()
    });
}

#[test]
fn oom_kill_is_published() {
    let d = berthd_with_busybox();
    let events = CtrEvents::start(&d);
    let out = d.ctr(
        &d.unique_ns(),
        &[
            "run",
            "--rm",
            "--runtime",
            BERTH_SHIM,
            "--memory-limit",
            "16777216",
            BUSYBOX,
            "hog",
            "sh",
            "-c",
            "tail /dev/zero",
        ],
    );
    assert_eq!(
        out.code,
        Some(137),
        "not OOM-killed: {} {}",
        out.stdout,
        out.stderr
    );
    wait_until("oom event", || events.text().contains("/tasks/oom"));
}
