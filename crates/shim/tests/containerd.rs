//! End-to-end: a throwaway containerd 1.6 with this shim first on its PATH,
//! driven by the real `ctr`, running real runc containers.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-berth-v2");
const RUNTIME: &str = "io.containerd.berth.v2";
const IMAGE: &str = "docker.io/library/busybox:latest";

/// A containerd of our own; Drop kills its shims and itself, unmounts, removes the dir.
struct Containerd {
    dir: PathBuf,
    daemon: Child,
}

impl Containerd {
    fn start() -> Containerd {
        // mkdtemp keeps socket paths short (sun_path is 108 bytes).
        let dir = tempfile::Builder::new()
            .prefix("bs")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(SHIM, bin.join("containerd-shim-berth-v2")).unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/c.sock\"\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .env("PATH", path)
            .env("BERTH_SHIM_SOCKET_DIR", dir.join("s"))
            .env("BERTH_SHIM_RUNTIME_ROOT", dir.join("runc"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Containerd { dir, daemon };
        wait_until(Duration::from_secs(20), || {
            c.ctr(&["version"]).status.success()
        });
        let out = c.ctr(&[
            "images",
            "import",
            test_images_dir().join("busybox-oci.tar").to_str().unwrap(),
        ]);
        assert!(out.status.success(), "import: {}", text(&out.stderr));
        c
    }

    fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(self.dir.join("c.sock")).args(args);
        cmd
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    fn run(&self, extra: &[&str], id: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["run", "--rm", "--runtime", RUNTIME];
        args.extend_from_slice(extra);
        args.push(IMAGE);
        args.push(id);
        args.extend_from_slice(cmd);
        self.ctr(&args)
    }

    /// (pid, status) of a task from `ctr task ls`.
    fn task(&self, id: &str) -> Option<(u32, String)> {
        let out = self.ctr(&["task", "ls"]);
        text(&out.stdout).lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| (f[1].parse().unwrap_or(0), f[2].to_string()))
        })
    }

    /// Pids of our shim binary serving container `id` in this containerd.
    fn shims(&self, id: &str) -> Vec<u32> {
        let marker = self.dir.join("bin").display().to_string();
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let ours = args.first().is_some_and(|a| a.starts_with(&marker));
            let has_id = args.windows(2).any(|w| w[0] == "-id" && w[1] == id);
            if ours && has_id {
                pids.push(pid);
            }
        }
        pids
    }

    fn mounts_under(&self) -> Vec<String> {
        let d = self.dir.display().to_string();
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .filter(|m| m.starts_with(&d))
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in self
            .ctr(&["task", "ls", "-q"])
            .stdout
            .split(|b| *b == b'\n')
        {
            let id = String::from_utf8_lossy(id).trim().to_string();
            if !id.is_empty() {
                let _ = self.ctr(&["task", "rm", "-f", &id]);
            }
        }
        for pid in self.shims("") {
            let _ = nix_kill(pid);
        }
        // Shims serving any id from our bin dir.
        let marker = self.dir.join("bin").display().to_string();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmd) = std::fs::read_to_string(e.path().join("cmdline")) {
                if cmd.starts_with(&marker) {
                    if let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() {
                        let _ = nix_kill(pid);
                    }
                }
            }
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let mut mounts = self.mounts_under();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // runc made `/default` cgroup parents for our containers; empty ones go (busy ones stay).
        if let Ok(ctls) = std::fs::read_dir("/sys/fs/cgroup") {
            for ctl in ctls.flatten() {
                let _ = std::fs::remove_dir(ctl.path().join("default"));
            }
        }
    }
}

fn nix_kill(pid: u32) -> std::io::Result<()> {
    Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .map(|_| ())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("condition not met within {timeout:?}");
}

fn host_uname() -> String {
    text(&Command::new("uname").arg("-a").output().unwrap().stdout)
        .trim()
        .to_string()
}

#[test]
fn run_rm_prints_host_kernel_and_leaves_nothing() {
    let c = Containerd::start();
    let out = c.run(&[], "t1", &["uname", "-a"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let line = text(&out.stdout).trim().to_string();
    // Same kernel line; only the hostname field may differ.
    let strip_host = |s: &str| {
        let mut f: Vec<String> = s.split_whitespace().map(str::to_string).collect();
        if f.len() > 1 {
            f.remove(1);
        }
        f.join(" ")
    };
    assert_eq!(strip_host(&line), strip_host(&host_uname()));
    wait_until(Duration::from_secs(10), || c.shims("t1").is_empty());
    assert!(
        c.mounts_under().is_empty(),
        "mounts left: {:?}",
        c.mounts_under()
    );
}

#[test]
fn detached_task_exec_ps_metrics_pause_resume() {
    let c = Containerd::start();
    let out = c.ctr(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        IMAGE,
        "t2",
        "sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until(Duration::from_secs(10), || {
        c.task("t2").is_some_and(|(_, s)| s == "RUNNING")
    });
    let (pid, _) = c.task("t2").unwrap();
    assert!(pid > 0);

    let out = c.ctr(&["task", "exec", "--exec-id", "x", "t2", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));

    let out = c.ctr(&["task", "ps", "t2"]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains(&pid.to_string()),
        "{}",
        text(&out.stdout)
    );

    let out = c.ctr(&["task", "metrics", "t2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = text(&out.stdout);
    assert!(
        m.contains("memory.usage_in_bytes") || m.contains("memory.usage"),
        "{m}"
    );
    assert!(m.contains("pids.current"), "{m}");

    assert!(c.ctr(&["task", "pause", "t2"]).status.success());
    assert_eq!(c.task("t2").unwrap().1, "PAUSED");
    assert!(c.ctr(&["task", "resume", "t2"]).status.success());
    assert_eq!(c.task("t2").unwrap().1, "RUNNING");

    assert!(c
        .ctr(&["task", "kill", "-s", "SIGKILL", "t2"])
        .status
        .success());
    wait_until(Duration::from_secs(10), || {
        c.task("t2").is_some_and(|(_, s)| s == "STOPPED")
    });
    assert!(c.ctr(&["task", "rm", "t2"]).status.success());
    assert!(c.ctr(&["container", "rm", "t2"]).status.success());
    wait_until(Duration::from_secs(10), || c.shims("t2").is_empty());
    assert!(
        c.mounts_under().is_empty(),
        "mounts left: {:?}",
        c.mounts_under()
    );
}

#[test]
fn sigkill_gives_exit_status_137() {
    let c = Containerd::start();
    let mut run = c
        .ctr_cmd(&[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            IMAGE,
            "t3",
            "sleep",
            "1000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), || {
        c.task("t3").is_some_and(|(_, s)| s == "RUNNING")
    });
    assert!(c
        .ctr(&["task", "kill", "-s", "SIGKILL", "t3"])
        .status
        .success());
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(137));
    wait_until(Duration::from_secs(10), || c.shims("t3").is_empty());
    assert!(
        c.mounts_under().is_empty(),
        "mounts left: {:?}",
        c.mounts_under()
    );
}

#[test]
fn memory_limit_oom_kill_publishes_oom_event() {
    let c = Containerd::start();
    let mut events = c
        .ctr_cmd(&["events"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = c.run(
        &["--memory-limit", "16777216"],
        "t4",
        &["sh", "-c", "tail /dev/zero"],
    );
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    std::thread::sleep(Duration::from_millis(500));
    let _ = events.kill();
    let out = events.wait_with_output().unwrap();
    let ev = text(&out.stdout);
    assert!(
        ev.lines()
            .any(|l| l.contains("/tasks/oom") && l.contains("\"t4\"")),
        "{ev}"
    );
    // Exactly one exit event for the init process.
    let exits = ev
        .lines()
        .filter(|l| l.contains("/tasks/exit") && l.contains("\"t4\""))
        .count();
    assert_eq!(exits, 1, "{ev}");
}

#[test]
fn negative_oom_score_adj_is_clamped() {
    let c = Containerd::start();
    let b = c.dir.join("ub");
    let st = Command::new("umoci")
        .args([
            "unpack",
            "--image",
            &format!("{}:busybox", test_images_dir().join("oci").display()),
        ])
        .arg(&b)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    spec["process"]["args"] = serde_json::json!(["sh", "-c", "cat /proc/self/oom_score_adj"]);
    spec["process"]["oomScoreAdj"] = serde_json::json!(-500);
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["root"]["path"] = serde_json::json!(b.join("rootfs").display().to_string());
    let cfg = c.dir.join("neg.json");
    std::fs::File::create(&cfg)
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--config",
        cfg.to_str().unwrap(),
        "t6",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let own: i64 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let got: i64 = text(&out.stdout).trim().parse().unwrap();
    // Clamped to our own score (no CAP_SYS_RESOURCE), or honoured if we may lower it.
    assert!(got == own.max(-500) || got == -500, "got {got}, own {own}");
}

#[test]
fn runtime_failure_returns_runcs_own_message() {
    let c = Containerd::start();
    let out = c.run(&[], "t5", &["/no/such/binary"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("/no/such/binary"), "{err}");
    assert!(err.contains("no such file or directory"), "{err}");
    wait_until(Duration::from_secs(10), || c.shims("t5").is_empty());
    assert!(
        c.mounts_under().is_empty(),
        "mounts left: {:?}",
        c.mounts_under()
    );
}

/// The offline test images (`shared/testimages/make-test-images.sh`): `scripts/test.sh` builds them
/// and points `BERTH_TEST_IMAGES` at them.
fn test_images_dir() -> std::path::PathBuf {
    std::env::var_os("BERTH_TEST_IMAGES")
        .map(std::path::PathBuf::from)
        .expect("BERTH_TEST_IMAGES is not set: run ./scripts/test.sh, which builds the offline test images")
}
