//! A private containerd 1.6 on a temp dir for the CLI's end-to-end tests. On drop it deletes
//! every task and container it ran (so their shims exit), kills containerd and any shim still
//! serving its socket, unmounts, and removes the cgroups made for its namespaces.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Containerd {
    child: Child,
    pub dir: tempfile::TempDir,
    namespaces: std::sync::Mutex<Vec<String>>,
}

pub const BUSYBOX: &str = "docker.io/library/busybox:latest";

impl Containerd {
    /// Always `Some`: a machine without containerd fails these tests rather than skipping them
    /// (`scripts/install-deps.sh` installs it).
    pub fn start() -> Option<Self> {
        for bin in ["/usr/bin/containerd", "/usr/bin/containerd-shim-runc-v2"] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: run ./scripts/install-deps.sh"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-cli-test")
            .tempdir()
            .expect("tempdir");
        let d = dir.path().display();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/c.sock\"\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n"
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("config");
        let log = std::fs::File::create(dir.path().join("log")).expect("log");
        let child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let c = Containerd {
            child,
            dir,
            namespaces: Default::default(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !c.socket().exists() {
            assert!(Instant::now() < deadline, "containerd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(c)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    pub fn cmd(&self, ns: &str, args: &[&str]) -> Command {
        {
            let mut n = self.namespaces.lock().expect("lock");
            if !n.iter().any(|x| x == ns) {
                n.push(ns.to_string());
            }
        }
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.arg("--address")
            .arg(self.socket())
            .args(["-n", ns])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    pub fn berth(&self, ns: &str, args: &[&str]) -> Output {
        self.cmd(ns, args).output().expect("run berth")
    }

    pub fn ok(&self, ns: &str, args: &[&str]) -> String {
        let out = self.berth(ns, args);
        assert!(
            out.status.success(),
            "berth {args:?} failed ({:?}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    pub fn json(&self, ns: &str, args: &[&str]) -> Value {
        let mut a = vec!["--format", "json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(ns, &a)).expect("json output")
    }

    /// Imports the busybox test image into `ns`; `false` (skip) if the image is unavailable.
    pub fn import_busybox(&self, ns: &str) -> bool {
        let p = test_images_dir().join("busybox-oci.tar");
        assert!(p.exists(), "{} is missing", p.display());
        self.ok(ns, &["image", "import", p.to_str().expect("path")]);
        true
    }

    /// The status of task `id` in `ns` (None: no such task).
    pub fn task_status(&self, ns: &str, id: &str) -> Option<String> {
        let tasks = self.json(ns, &["task", "ls"]);
        tasks
            .as_array()
            .expect("array")
            .iter()
            .find(|t| t["task"] == id)
            .map(|t| t["status"].as_str().expect("status").to_string())
    }

    pub fn wait_status(&self, ns: &str, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.task_status(ns, id);
            if s.as_deref() == Some(want) {
                return;
            }
            assert!(Instant::now() < deadline, "task {id} is {s:?}, want {want}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn cleanup_namespace(&self, ns: &str) {
        let list = |what: &str, key: &str| -> Vec<String> {
            let out = self.berth(ns, &["--format", "json", what, "ls"]);
            serde_json::from_slice::<Value>(&out.stdout)
                .ok()
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|t| t[key].as_str().map(str::to_string))
                .collect()
        };
        for t in list("task", "task") {
            let _ = self.berth(ns, &["task", "rm", "-f", &t]);
        }
        for c in list("container", "container") {
            let _ = self.berth(ns, &["container", "rm", &c]);
        }
        // The runc shim keeps per-namespace state and cgroup directories; they are ours to remove.
        let _ = std::fs::remove_dir(format!("/run/containerd/runc/{ns}"));
        if let Ok(ctls) = std::fs::read_dir("/sys/fs/cgroup") {
            for ctl in ctls.flatten() {
                let _ = std::fs::remove_dir(ctl.path().join(ns));
            }
        }
    }
}

/// Shims started for this containerd (their command line names our socket).
fn our_shims(socket: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("containerd-shim") && cmd.contains(socket) {
            pids.push(pid);
        }
    }
    pids
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let namespaces = self
            .namespaces
            .lock()
            .map(|n| n.clone())
            .unwrap_or_default();
        for ns in &namespaces {
            self.cleanup_namespace(ns);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let socket = self.socket().to_string_lossy().into_owned();
        for pid in our_shims(&socket) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        // Snapshot and shim mounts under our root must go before the directory can.
        let root = self.dir.path().to_string_lossy().into_owned();
        if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
            let mut targets: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(1))
                .filter(|t| t.starts_with(&root))
                .collect();
            targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
            for t in targets {
                let _ = Command::new("umount").arg("-l").arg(t).status();
            }
        }
        // runc made /<ns>/<id> under each v1 controller; the containers' dirs are gone with
        // their tasks, the namespace dirs are ours to remove.
        if let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") {
            for c in ctrls.flatten() {
                for ns in &namespaces {
                    let d = c.path().join(ns);
                    if let Ok(children) = std::fs::read_dir(&d) {
                        for ch in children.flatten() {
                            if ch.path().is_dir() {
                                let _ = std::fs::remove_dir(ch.path());
                            }
                        }
                    }
                    let _ = std::fs::remove_dir(&d);
                }
            }
        }
    }
}

/// The offline test images (`shared/testimages/make-test-images.sh`): `scripts/test.sh` builds them
/// and points `BERTH_TEST_IMAGES` at them.
pub fn test_images_dir() -> std::path::PathBuf {
    std::env::var_os("BERTH_TEST_IMAGES")
        .map(std::path::PathBuf::from)
        .expect("BERTH_TEST_IMAGES is not set: run ./scripts/test.sh, which builds the offline test images")
}
