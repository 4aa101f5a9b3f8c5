//! End-to-end task tests against Debian's containerd-shim-runc-v2 and runc (no berthd).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_runtime::{
    CreateTask, ErrorKind, EventSink, ExecProcess, Mount, RuntimeConfig, Status, TaskManager,
};
use prost::Message;

const RUNC: &str = "io.containerd.runc.v2";

#[derive(Default)]
struct Recorder(Mutex<Vec<(String, String, prost_types::Any)>>);

impl EventSink for Recorder {
    fn publish(&self, namespace: &str, topic: &str, event: prost_types::Any) {
        self.0
            .lock()
            .unwrap()
            .push((namespace.into(), topic.into(), event));
    }
}

impl Recorder {
    /// (exec id, pid, status) of every /tasks/exit for `container`.
    fn exits(&self, container: &str) -> Vec<(String, u32, u32)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, t, _)| t == "/tasks/exit")
            .filter_map(|(_, _, a)| {
                let e = TaskExit::decode(a.value.as_slice()).ok()?;
                (e.container_id == container).then_some((e.id, e.pid, e.exit_status))
            })
            .collect()
    }
}

/// containerd.events.TaskExit, decoded independently of the crate under test.
#[derive(Clone, PartialEq, prost::Message)]
struct TaskExit {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(string, tag = "2")]
    id: String,
    #[prost(uint32, tag = "3")]
    pid: u32,
    #[prost(uint32, tag = "4")]
    exit_status: u32,
}

/// containerd.runc.v1.Options: only `root`, so runc state stays in the test's temp dir.
#[derive(Clone, PartialEq, prost::Message)]
struct RuncOptions {
    #[prost(string, tag = "7")]
    root: String,
}

/// One test's world: temp dirs, a busybox rootfs, a manager. Drop removes whatever is left
/// (shims, containers, mounts), even when the test failed.
struct Harness {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    cfg: RuntimeConfig,
    ns: String,
    ids: Mutex<Vec<String>>,
}

fn unpack_busybox(into: &Path) {
    let oci = test_images_dir().join("oci");
    let blob = |d: &str| {
        oci.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "busybox")
        .unwrap_or(&index["manifests"][0]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(m["digest"].as_str().unwrap())).unwrap())
            .unwrap();
    std::fs::create_dir_all(into).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let st = Command::new("tar")
            .arg("-xf")
            .arg(blob(layer["digest"].as_str().unwrap()))
            .arg("-C")
            .arg(into)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Harness {
    fn new(tag: &str) -> Harness {
        let dir = tempfile::Builder::new()
            .prefix("berth-rt-")
            .tempdir()
            .unwrap();
        let rootfs = dir.path().join("image-rootfs");
        unpack_busybox(&rootfs);
        let cfg = RuntimeConfig {
            shim_env: Vec::new(),
            state_dir: dir.path().join("state"),
            root_dir: dir.path().join("root"),
            address: dir.path().join("berthd.sock"),
            ttrpc_address: dir.path().join("berthd.sock.ttrpc"),
            shim_dirs: vec![],
        };
        Harness {
            dir,
            rootfs,
            cfg,
            ns: format!("t-{tag}"),
            ids: Mutex::new(vec![]),
        }
    }

    async fn manager(&self, sink: Arc<Recorder>) -> Arc<TaskManager> {
        TaskManager::new(self.cfg.clone(), sink).await.unwrap()
    }

    fn runc_root(&self) -> PathBuf {
        self.dir.path().join("runc")
    }

    fn bundle(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join(&self.ns).join(id)
    }

    fn spec(&self, id: &str, args: &[&str]) -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "cwd": "/",
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": false},
            "hostname": "berth",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]}
            ],
            "linux": {
                "cgroupsPath": format!("/berth-rt-test/{}-{}", self.ns, id),
                "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                               {"type": "mount"}, {"type": "network"}]
            }
        })
    }

    fn request(&self, id: &str, spec: serde_json::Value) -> CreateTask {
        self.ids.lock().unwrap().push(id.to_string());
        let opts = RuncOptions {
            root: self.runc_root().display().to_string(),
        };
        CreateTask {
            id: id.into(),
            spec: serde_json::to_vec(&spec).unwrap(),
            runtime: RUNC.into(),
            runtime_options: Some(prost_types::Any {
                type_url: "containerd.runc.v1.Options".into(),
                value: opts.encode_to_vec(),
            }),
            rootfs: vec![Mount {
                r#type: "bind".into(),
                source: self.rootfs.display().to_string(),
                target: String::new(),
                options: vec!["rbind".into(), "rw".into()],
            }],
            ..Default::default()
        }
    }

    fn shim_pid(&self, id: &str) -> u32 {
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.bundle(id).join("berth.json")).unwrap())
                .unwrap();
        let pid = meta["shim_pid"].as_u64().unwrap() as u32;
        assert!(pid > 0);
        pid
    }

    /// Mounts under our temp dir that are still there.
    fn leftover_mounts(&self) -> Vec<String> {
        let root = self.dir.path().display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&root))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for id in self.ids.lock().unwrap().iter() {
            let b = self.bundle(id);
            let meta = std::fs::read(b.join("berth.json")).ok();
            let meta = meta.and_then(|m| serde_json::from_slice::<serde_json::Value>(&m).ok());
            if let Some(p) = meta.and_then(|m| m["shim_pid"].as_i64()) {
                if let Ok(p) = i32::try_from(p) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            // The runc shim keeps runc state in <root>/<namespace>.
            let _ = Command::new("runc")
                .arg("--root")
                .arg(self.runc_root().join(&self.ns))
                .args(["delete", "--force", id])
                .output();
            if let Ok(a) = std::fs::read_to_string(b.join("address")) {
                if let Some(p) = a.trim().strip_prefix("unix://") {
                    let _ = std::fs::remove_file(p);
                }
            }
            let _ = nix::mount::umount2(&b.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
        }
        // Processes still in a test cgroup die; then the cgroups go.
        for id in self.ids.lock().unwrap().iter() {
            let leaf = format!("berth-rt-test/{}-{}", self.ns, id);
            let procs = Path::new("/sys/fs/cgroup/pids")
                .join(&leaf)
                .join("cgroup.procs");
            for p in std::fs::read_to_string(procs).unwrap_or_default().lines() {
                if let Ok(p) = p.trim().parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
                for c in rd.flatten() {
                    let _ = std::fs::remove_dir(c.path().join(&leaf));
                    // Shared by parallel tests: removing it fails while others use it.
                    let _ = std::fs::remove_dir(c.path().join("berth-rt-test"));
                }
            }
        }
        for m in self.leftover_mounts() {
            if let Some(target) = m.split(' ').nth(4) {
                let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !matches!(
            s.rfind(')')
                .and_then(|i| s[i + 1..].trim_start().chars().next()),
            Some('Z') | Some('X')
        ),
        Err(_) => false,
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn process_spec(args: &[&str]) -> prost_types::Any {
    let p = serde_json::json!({
        "terminal": false, "user": {"uid": 0, "gid": 0}, "args": args,
        "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "cwd": "/"
    });
    prost_types::Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
        value: serde_json::to_vec(&p).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_start_wait_delete() {
    let h = Harness::new("life");
    let sink = Arc::new(Recorder::default());
    let tm = h.manager(sink.clone()).await;
    let id = "life1";
    let pid = tm
        .create(&h.ns, h.request(id, h.spec(id, &["sh", "-c", "exit 7"])))
        .await
        .unwrap();
    assert!(pid > 0);
    let st = tm.state(&h.ns, id, "").await.unwrap();
    assert_eq!(st.status, Status::Created);
    assert_eq!(tm.list(&h.ns).await.unwrap().len(), 1);
    let again = tm
        .create(&h.ns, h.request(id, h.spec(id, &["true"])))
        .await
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyExists);
    assert_eq!(tm.start(&h.ns, id, "").await.unwrap(), pid);
    let exit = tm.wait(&h.ns, id, "").await.unwrap();
    assert_eq!(exit.status, 7);
    assert_eq!(exit.pid, pid);
    let st = tm.state(&h.ns, id, "").await.unwrap();
    assert_eq!(st.status, Status::Stopped);
    assert_eq!(st.exit_status, 7);
    let shim = h.shim_pid(id);
    eventually("exit event", || !sink.exits(id).is_empty()).await;
    let d = tm.delete(&h.ns, id).await.unwrap();
    assert_eq!(d.status, 7);
    assert!(!alive(shim), "shim {shim} still running");
    assert!(!h.bundle(id).exists());
    assert!(h.leftover_mounts().is_empty(), "{:?}", h.leftover_mounts());
    assert_eq!(sink.exits(id), vec![(id.to_string(), pid, 7)]);
    assert_eq!(
        tm.state(&h.ns, id, "").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(tm.list(&h.ns).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_exec_pids_pause_stats() {
    let h = Harness::new("ops");
    let sink = Arc::new(Recorder::default());
    let tm = h.manager(sink.clone()).await;
    let id = "ops1";
    let pid = tm
        .create(&h.ns, h.request(id, h.spec(id, &["sleep", "1000"])))
        .await
        .unwrap();
    tm.start(&h.ns, id, "").await.unwrap();
    assert_eq!(
        tm.state(&h.ns, id, "").await.unwrap().status,
        Status::Running
    );
    // Exec.
    tm.exec(
        &h.ns,
        id,
        ExecProcess {
            exec_id: "e1".into(),
            spec: process_spec(&["sh", "-c", "exit 3"]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let epid = tm.start(&h.ns, id, "e1").await.unwrap();
    assert!(epid > 0 && epid != pid);
    assert_eq!(tm.wait(&h.ns, id, "e1").await.unwrap().status, 3);
    assert_eq!(tm.delete_process(&h.ns, id, "e1").await.unwrap().status, 3);
    // Pids.
    let pids = tm.pids(&h.ns, id).await.unwrap();
    assert!(pids.iter().any(|p| p.pid == pid), "{pids:?}");
    // Pause / resume.
    tm.pause(&h.ns, id).await.unwrap();
    assert_eq!(
        tm.state(&h.ns, id, "").await.unwrap().status,
        Status::Paused
    );
    tm.resume(&h.ns, id).await.unwrap();
    assert_eq!(
        tm.state(&h.ns, id, "").await.unwrap().status,
        Status::Running
    );
    // Stats.
    let stats = tm.stats(&h.ns, id).await.unwrap().expect("stats Any");
    assert!(stats.type_url.contains("Metrics"), "{}", stats.type_url);
    // Update: resources as the OCI LinuxResources JSON Any, as ctr sends them.
    let res = prost_types::Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
        value: br#"{"pids":{"limit":123}}"#.to_vec(),
    };
    tm.update(&h.ns, id, Some(res), HashMap::new())
        .await
        .unwrap();
    // Delete of a running task is refused.
    let e = tm.delete(&h.ns, id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    // SIGKILL → 137.
    tm.kill(&h.ns, id, "", 9, false).await.unwrap();
    let exit = tm.wait(&h.ns, id, "").await.unwrap();
    assert_eq!(exit.status, 137);
    let shim = h.shim_pid(id);
    tm.delete(&h.ns, id).await.unwrap();
    assert!(!alive(shim));
    assert!(!alive(pid));
    assert!(h.leftover_mounts().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_runtime_binary_is_named() {
    let h = Harness::new("nobin");
    let tm = h.manager(Arc::new(Recorder::default())).await;
    let mut req = h.request("nb", h.spec("nb", &["true"]));
    req.runtime = "io.containerd.nosuchthing.v2".into();
    let e = tm.create(&h.ns, req).await.unwrap_err();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::NotFound | ErrorKind::FailedPrecondition
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("containerd-shim-nosuchthing-v2"),
        "{e}"
    );
    assert!(!h.bundle("nb").exists());
    let mut req = h.request("ck", h.spec("ck", &["true"]));
    req.checkpoint = Some("sha256:abc".into());
    let e = tm.create(&h.ns, req).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unimplemented, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_oom_score_is_clamped() {
    let h = Harness::new("oom");
    let tm = h.manager(Arc::new(Recorder::default())).await;
    let id = "oom1";
    let mut spec = h.spec(id, &["sh", "-c", "cat /proc/self/oom_score_adj; exit 0"]);
    spec["process"]["oomScoreAdj"] = serde_json::json!(-999);
    tm.create(&h.ns, h.request(id, spec)).await.unwrap();
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.bundle(id).join("config.json")).unwrap()).unwrap();
    assert!(written["process"]["oomScoreAdj"].as_i64().unwrap() >= 0);
    tm.start(&h.ns, id, "").await.unwrap();
    assert_eq!(tm.wait(&h.ns, id, "").await.unwrap().status, 0);
    tm.delete(&h.ns, id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_spec_reports_runc_message_and_leaves_nothing() {
    let h = Harness::new("bad");
    let tm = h.manager(Arc::new(Recorder::default())).await;
    let id = "bad1";
    let res = tm
        .create(&h.ns, h.request(id, h.spec(id, &["/no/such/binary"])))
        .await;
    // runc fails at create (exec is looked up then) in current versions; accept start too.
    let err = match res {
        Err(e) => e,
        Ok(_) => {
            let e = tm.start(&h.ns, id, "").await.unwrap_err();
            let _ = tm.delete(&h.ns, id).await;
            e
        }
    };
    let msg = err.to_string();
    assert!(msg.contains("/no/such/binary"), "{msg}");
    assert!(
        msg.contains("no such file") || msg.contains("not found"),
        "{msg}"
    );
    assert!(!h.bundle(id).exists(), "bundle left behind");
    assert!(h.leftover_mounts().is_empty(), "{:?}", h.leftover_mounts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shim_death_stops_task_and_publishes_exit_once() {
    let h = Harness::new("death");
    let sink = Arc::new(Recorder::default());
    let tm = h.manager(sink.clone()).await;
    let id = "dead1";
    let pid = tm
        .create(&h.ns, h.request(id, h.spec(id, &["sleep", "1000"])))
        .await
        .unwrap();
    tm.start(&h.ns, id, "").await.unwrap();
    let shim = h.shim_pid(id);
    let tm2 = tm.clone();
    let ns = h.ns.clone();
    let waiter = tokio::spawn(async move { tm2.wait(&ns, "dead1", "").await });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(exit.status == 137 || exit.status == 255, "{exit:?}");
    let st = tm.state(&h.ns, id, "").await.unwrap();
    assert_eq!(st.status, Status::Stopped);
    assert_eq!(st.exit_status, exit.status);
    eventually("container process gone", || !alive(pid)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.exits(id).len(), 1, "{:?}", sink.exits(id));
    assert!(h.leftover_mounts().is_empty(), "{:?}", h.leftover_mounts());
    let d = tm.delete(&h.ns, id).await.unwrap();
    assert_eq!(d.status, exit.status);
    assert!(!h.bundle(id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_after_daemon_kill() {
    let h = Harness::new("recover");
    let sink1 = Arc::new(Recorder::default());
    let tm = h.manager(sink1.clone()).await;
    let mut pids = vec![];
    for id in ["keep", "gone"] {
        let pid = tm
            .create(&h.ns, h.request(id, h.spec(id, &["sleep", "1000"])))
            .await
            .unwrap();
        tm.start(&h.ns, id, "").await.unwrap();
        pids.push(pid);
    }
    let shims = [h.shim_pid("keep"), h.shim_pid("gone")];
    // berthd "SIGKILLed": the manager goes away without stopping anything.
    drop(tm);
    tokio::time::sleep(Duration::from_millis(200)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[1] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("killed task gone", || !alive(pids[1])).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let sink2 = Arc::new(Recorder::default());
    let tm = h.manager(sink2.clone()).await;
    let report = tm.recover().await.unwrap();
    assert_eq!(report.reconnected.len(), 2, "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    let keep = tm.state(&h.ns, "keep", "").await.unwrap();
    assert_eq!(keep.status, Status::Running);
    assert_eq!(keep.pid, pids[0]);
    let gone = tm.state(&h.ns, "gone", "").await.unwrap();
    assert_eq!(gone.status, Status::Stopped);
    assert_eq!(gone.exit_status, 137);
    assert_eq!(gone.pid, pids[1]);
    // The shim may retry its own exit event against the new socket: still only one.
    eventually("exit published", || sink2.exits("gone").len() == 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sink2.exits("gone").len(), 1, "{:?}", sink2.exits("gone"));
    assert!(sink2.exits("keep").is_empty());
    // A second recover finds nothing new and publishes nothing.
    let again = tm.recover().await.unwrap();
    assert!(again.reconnected.is_empty() && again.cleaned.is_empty());
    assert_eq!(sink2.exits("gone").len(), 1);

    tm.kill(&h.ns, "keep", "", 9, false).await.unwrap();
    assert_eq!(tm.wait(&h.ns, "keep", "").await.unwrap().status, 137);
    tm.delete(&h.ns, "keep").await.unwrap();
    tm.delete(&h.ns, "gone").await.unwrap();
    for s in shims {
        assert!(!alive(s), "shim {s} left");
    }
    assert!(h.leftover_mounts().is_empty(), "{:?}", h.leftover_mounts());
    assert!(tm.list(&h.ns).await.unwrap().is_empty());
}

/// The offline test images (`shared/testimages/make-test-images.sh`): `scripts/test.sh` builds them
/// and points `BERTH_TEST_IMAGES` at them.
fn test_images_dir() -> std::path::PathBuf {
    std::env::var_os("BERTH_TEST_IMAGES")
        .map(std::path::PathBuf::from)
        .expect("BERTH_TEST_IMAGES is not set: run ./scripts/test.sh, which builds the offline test images")
}
