//! One berthd per test, on its own temp root, state and socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{berthd_bin, Run};

pub struct Berthd {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Berthd {
    pub fn start() -> Berthd {
        Berthd::start_with_config("")
    }

    /// A berthd reading `config` (TOML) as its config file.
    pub fn start_with_config(config: &str) -> Berthd {
        let dir = tempfile::Builder::new()
            .prefix("berth-e2e-")
            .tempdir()
            .expect("temp dir");
        if !config.is_empty() {
            std::fs::write(dir.path().join("config.toml"), config).expect("write config");
        }
        let mut d = Berthd { dir, child: None };
        d.spawn();
        d
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("berth.sock")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("berthd running").id()
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "berthd already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("berthd.log"))
            .expect("log file");
        let mut cmd = Command::new(berthd_bin());
        let config = self.dir.path().join("config.toml");
        if config.exists() {
            cmd.arg("--config").arg(config);
        } else {
            // Never read the machine's /etc/berth/config.toml in a test.
            cmd.arg("--config").arg("/dev/null");
        }
        let child = cmd
            .arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.state())
            .arg("--address")
            .arg(self.socket())
            .arg("--log-level")
            .arg("debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn berthd");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("berthd exited at start ({status}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("berthd did not listen within 20s:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("berthd.log")).unwrap_or_default()
    }

    /// SIGKILL: the crash case.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: the clean shutdown; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Runs containerd's own `ctr` against this berthd.
    pub fn ctr(&self, ns: &str, args: &[&str]) -> Run {
        Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .arg("--namespace")
            .arg(ns)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr (apt-get install containerd)")
            .into()
    }

    /// Runs berth's CLI against this berthd.
    pub fn berth(&self, ns: &str, args: &[&str]) -> Run {
        Command::new(crate::berth_bin())
            .arg("--address")
            .arg(self.socket())
            .arg("--namespace")
            .arg(ns)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run berth")
            .into()
    }

    pub async fn channel(&self) -> tonic::transport::Channel {
        containerd_client::connect(self.socket())
            .await
            .expect("connect to berthd")
    }
}

/// Everything mounted under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

pub fn unmount_all_under(dir: &Path) {
    for m in mounts_under(dir) {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Every process whose command line mentions `needle`, and all their descendants.
fn process_trees(needle: &str) -> Vec<i32> {
    let mut parent = std::collections::HashMap::new();
    let mut roots = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) {
            // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
            if let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1))
            {
                parent.insert(pid, ppid.parse::<i32>().unwrap_or(0));
            }
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd)
            .replace('\0', " ")
            .contains(needle)
        {
            roots.push(pid);
        }
    }
    let mut out = roots.clone();
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent.iter().filter(|(_, &pp)| pp == p).map(|(&c, _)| c));
        i += 1;
    }
    out
}

/// The ttrpc sockets (`-socket unix://...`) of the shims started for `daemon_socket`.
fn shim_sockets(daemon_socket: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.iter().any(|a| a == daemon_socket) {
            continue;
        }
        if let Some(i) = args.iter().position(|a| a == "-socket") {
            if let Some(path) = args.get(i + 1).and_then(|a| a.strip_prefix("unix://")) {
                out.push(PathBuf::from(path));
            }
        }
    }
    out
}

impl Berthd {
    /// A namespace no other test uses (runc state and cgroups are keyed by namespace and id).
    pub fn unique_ns(&self) -> String {
        let name = self
            .dir
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("e2e");
        name.trim_start_matches("berth-")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect()
    }

    /// Tasks outlive berthd by design; a test's do not outlive the test.
    fn remove_tasks(&self) {
        for socket in shim_sockets(self.socket().to_str().unwrap_or("")) {
            let _ = std::fs::remove_file(socket);
        }
        for pid in process_trees(self.socket().to_str().unwrap_or("")) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let runtime = self.state().join("runtime");
        for ns in std::fs::read_dir(&runtime).into_iter().flatten().flatten() {
            let ns_name = ns.file_name().to_string_lossy().into_owned();
            for task in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                let id = task.file_name().to_string_lossy().into_owned();
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(format!("/run/containerd/runc/{ns_name}"))
                    .args(["delete", "--force", &id])
                    .output();
                for ctl in std::fs::read_dir("/sys/fs/cgroup")
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let _ = std::fs::remove_dir(ctl.path().join(&ns_name).join(&id));
                }
            }
            if ns_name != "default" {
                let _ = std::fs::remove_dir(format!("/run/containerd/runc/{ns_name}"));
                for ctl in std::fs::read_dir("/sys/fs/cgroup")
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let _ = std::fs::remove_dir(ctl.path().join(&ns_name));
                }
            }
        }
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        self.kill9();
        self.remove_tasks();
        unmount_all_under(self.dir.path());
        if std::thread::panicking() {
            eprintln!(
                "--- berthd log ({}) ---\n{}",
                self.dir.path().display(),
                self.log()
            );
        }
    }
}
