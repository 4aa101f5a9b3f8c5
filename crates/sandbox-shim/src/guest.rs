//! One running guest: its kernel process, the line to its agent, and what it holds on the host
//! (the sandbox directory, the tap in the pod's network namespace, cgroup directories).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_sandbox_proto::{Event, Request};
use serde_json::Value;

use crate::agent::Agent;
use crate::backend::{self, Backend};
use crate::config::{Config, MIN_MEMORY_MB};
use crate::error::{Error, Result};
use crate::{net, sys, vm};

pub struct Guest {
    backend: Box<dyn Backend>,
    pub pid: i32,
    pub dir: PathBuf,
    pub agent: Arc<Agent>,
    /// Maps the image's root to the kernel's host uid, for idmapped layers.
    pub idmap: OwnedFd,
    /// The network namespace the kernel lives in, and the CNI interface redirected to the tap.
    netns: Option<PathBuf>,
    host_if: Mutex<Option<String>>,
    cgroups: Mutex<Vec<PathBuf>>,
    /// Booted ahead of its pod (warm pool): the pod's network, cgroup and name come at adoption.
    waiting: AtomicBool,
    exited: AtomicBool,
}

/// When the guest learns its pod's network.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// CNI has configured the namespace: take its interface over at boot.
    Now,
    /// Booted for the warm pool: only the tap exists; `adopt` does the rest.
    Later,
}

/// Guest memory: the pod's memory limit when it has one (the CRI's sandbox-memory annotation,
/// the sum of its containers' limits, as VM runtimes read it), else the configured default.
fn memory_mb(cfg: &Config, spec: &Value) -> u64 {
    let limit = spec
        .pointer("/annotations/io.kubernetes.cri.sandbox-memory")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<i64>().ok())
        .or_else(|| {
            spec.pointer("/linux/resources/memory/limit")
                .and_then(Value::as_i64)
        })
        .filter(|l| *l > 0)
        .map(|l| (l as u64) >> 20);
    limit.unwrap_or(cfg.memory_mb).max(MIN_MEMORY_MB)
}

fn netns_path(spec: &Value) -> Option<PathBuf> {
    spec.pointer("/linux/namespaces")?
        .as_array()?
        .iter()
        .find(|n| n.get("type").and_then(Value::as_str) == Some("network"))?
        .get("path")?
        .as_str()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// Cgroup v1 hierarchies (or the v2 root) from mountinfo.
fn cgroup_roots() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v1 = Vec::new();
    let mut v2 = None;
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mp) = pre.split(' ').nth(4) else {
            continue;
        };
        match post.split(' ').next() {
            Some("cgroup") => v1.push(PathBuf::from(mp)),
            Some("cgroup2") if mp == "/sys/fs/cgroup" => v2 = Some(PathBuf::from(mp)),
            _ => {}
        }
    }
    if v1.is_empty() {
        v2.into_iter().collect()
    } else {
        v1
    }
}

/// The kernel joins the sandbox's cgroup (cgroupfs-style `cgroupsPath`), so the host's
/// accounting of the pod is the guest's memory and CPU.
fn cgroup_dirs(spec: &Value) -> Vec<PathBuf> {
    let Some(path) = spec
        .pointer("/linux/cgroupsPath")
        .and_then(Value::as_str)
        .filter(|p| p.starts_with('/') && !p.contains(".."))
    else {
        return Vec::new();
    };
    cgroup_roots()
        .into_iter()
        .filter_map(|root| {
            let dir = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).ok()?;
            inherit_cpuset(&root, &dir);
            Some(dir)
        })
        .collect()
}

/// A new v1 cpuset cgroup starts with no CPUs and no memory nodes, and joining it fails: each
/// level takes its parent's, as runc does.
fn inherit_cpuset(root: &Path, dir: &Path) {
    if !root.join("cpuset.cpus").exists() {
        return;
    }
    let Ok(rel) = dir.strip_prefix(root) else {
        return;
    };
    let mut parent = root.to_path_buf();
    for part in rel.components() {
        let child = parent.join(part);
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let mine = std::fs::read_to_string(child.join(f)).unwrap_or_default();
            if mine.trim().is_empty() {
                if let Ok(v) = std::fs::read_to_string(parent.join(f)) {
                    let _ = std::fs::write(child.join(f), v.trim());
                }
            }
        }
        parent = child;
    }
}

pub fn boot(
    cfg: &Config,
    namespace: &str,
    group: &str,
    spec: &Value,
    network: Network,
    on_event: Box<dyn Fn(Event) + Send + Sync>,
) -> Result<Guest> {
    let backend = backend::named(&cfg.backend)?;
    cfg.check_kernel()?;
    let agent_path = cfg.agent_path()?;
    let dir = cfg.state_dir.join(format!("{namespace}-{group}"));
    if dir.exists() {
        // Left by a shim that died: nothing of it may run any more.
        cleanup_dir(backend.as_ref(), &dir);
    }
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("mkdir {}", dir.display())))?;
    let netns = netns_path(spec);
    let pod_net = match (&netns, network) {
        (Some(ns), Network::Now) => net::inspect(ns)?,
        _ => None,
    };
    let tap = match (&netns, &pod_net, network) {
        (Some(_), Some(n), Network::Now) => Some((net::TAP.to_string(), n.guest.mac.clone())),
        (Some(_), _, Network::Later) => Some((net::TAP.to_string(), net::random_mac())),
        _ => None,
    };
    let cgroups = if network == Network::Now {
        cgroup_dirs(spec)
    } else {
        Vec::new()
    };
    let vspec = vm::VmSpec {
        dir: dir.clone(),
        kernel: cfg.kernel.clone(),
        agent: agent_path,
        memory_mb: memory_mb(cfg, spec),
        host_uid: cfg.host_uid,
        netns: netns.clone(),
        tap: tap.clone(),
        cgroup_procs: cgroups.iter().map(|d| d.join("cgroup.procs")).collect(),
        log: vm::sibling(&dir, "log"),
        nice: if network == Network::Later { 10 } else { 0 },
    };
    let mut undo = Undo {
        backend: backend.as_ref(),
        dir: dir.clone(),
        pid: 0,
        net: None,
        cgroups: cgroups.clone(),
    };
    backend.prepare(&vspec)?;
    if let (Some(ns), Some(_)) = (&netns, &tap) {
        undo.net = Some((ns.clone(), None));
        net::create_tap(ns, cfg.host_uid)?;
        if let Some(n) = &pod_net {
            undo.net = Some((ns.clone(), Some(n.host_if.clone())));
            net::redirect(ns, n)?;
        }
    }
    let idmap = sys::user_namespace(&[(0, cfg.host_uid, 65535), (65535, 0, 1)])?;
    let started = Instant::now();
    let v = backend.start(&vspec)?;
    undo.pid = v.pid;
    let _ = std::fs::write(vm::sibling(&dir, "pid"), v.pid.to_string());
    let agent = Agent::connect(
        v.from_guest,
        v.to_guest,
        Duration::from_secs(cfg.boot_timeout_secs),
        on_event,
    )
    .map_err(|e| {
        let log = std::fs::read_to_string(&vspec.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        Error::Other(format!(
            "{e} (kernel output: {})",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    })?;
    // Beside the pid file: the guest's agent answers (what a warm pool's readiness is).
    let _ = std::fs::write(vm::sibling(&dir, "ready"), &agent.kernel_release);
    log::info!(
        "sandbox guest {} ({}) booted in {} ms (kernel {})",
        v.pid,
        backend.name(),
        started.elapsed().as_millis(),
        agent.kernel_release
    );
    if let Some(n) = &pod_net {
        agent.call(
            &Request::ConfigureNetwork {
                interfaces: vec![n.guest.clone()],
                routes: n.routes.clone(),
                hostname: spec
                    .get("hostname")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            },
            Duration::from_secs(10),
        )?;
    }
    undo.net = None;
    undo.pid = 0;
    undo.cgroups.clear();
    undo.dir = PathBuf::new();
    drop(undo);
    Ok(Guest {
        backend,
        pid: v.pid,
        dir,
        agent,
        idmap,
        netns,
        host_if: Mutex::new(pod_net.map(|n| n.host_if)),
        cgroups: Mutex::new(cgroups),
        waiting: AtomicBool::new(network == Network::Later),
        exited: AtomicBool::new(false),
    })
}

/// Tears down a half-booted guest.
struct Undo<'a> {
    backend: &'a dyn Backend,
    dir: PathBuf,
    pid: i32,
    net: Option<(PathBuf, Option<String>)>,
    cgroups: Vec<PathBuf>,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.pid > 0 {
            self.backend.kill(self.pid);
            // SAFETY: reaps our own child (the server's reaper may race us; both are fine).
            unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
        }
        if let Some((ns, host_if)) = &self.net {
            net::disconnect(ns, host_if.as_deref());
        }
        if !self.dir.as_os_str().is_empty() {
            cleanup_dir(self.backend, &self.dir);
        }
        remove_cgroups(&self.cgroups);
    }
}

/// Removes a sandbox directory (its mounts first) and the files beside it.
pub fn cleanup_dir(backend: &dyn Backend, dir: &Path) {
    if let Err(e) = backend.remove(dir) {
        log::warn!("{e}");
    }
    let _ = std::fs::remove_file(vm::sibling(dir, "log"));
    let _ = std::fs::remove_file(vm::sibling(dir, "pid"));
    let _ = std::fs::remove_file(vm::sibling(dir, "ready"));
}

fn remove_cgroups(dirs: &[PathBuf]) {
    for d in dirs {
        // Retried briefly: the kernel's processes leave the cgroup as they are reaped.
        for _ in 0..50 {
            match std::fs::remove_dir(d) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break,
            }
        }
    }
}

impl Guest {
    pub fn mark_exited(&self) {
        self.exited.store(true, Ordering::SeqCst);
    }

    pub fn exited(&self) -> bool {
        self.exited.load(Ordering::SeqCst)
    }

    pub fn kill(&self) {
        if !self.exited() {
            self.backend.kill(self.pid);
        }
    }

    pub fn wait_exited(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.exited() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// After the kernel is gone: the tap, the directory and its mounts, the cgroups.
    pub fn cleanup(&self) {
        self.kill();
        self.wait_exited(Duration::from_secs(5));
        if let Some(ns) = &self.netns {
            let host_if = self.host_if.lock().ok().and_then(|g| g.clone());
            net::disconnect(ns, host_if.as_deref());
        }
        cleanup_dir(self.backend.as_ref(), &self.dir);
        let cgroups = self.cgroups.lock().map(|g| g.clone()).unwrap_or_default();
        remove_cgroups(&cgroups);
    }

    /// A warm guest becomes the pod's: CNI has configured the namespace it was booted in, so
    /// the interface is taken over now; the kernel's processes join the pod's cgroup.
    pub fn adopt(&self, spec: &Value) -> Result<()> {
        if !self.waiting.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let t0 = Instant::now();
        if netns_path(spec) != self.netns {
            return Err(Error::FailedPrecondition(format!(
                "the warm sandbox guest lives in network namespace {:?}, the pod asks for {:?}",
                self.netns,
                netns_path(spec)
            )));
        }
        let dirs = cgroup_dirs(spec);
        for pid in namespace_pids(self.pid) {
            // Booted at a low priority while it waited; the pod's guest runs at the normal one.
            // SAFETY: setpriority(2) on a process of our guest.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, 0) };
            for d in &dirs {
                if let Err(e) = std::fs::write(d.join("cgroup.procs"), pid.to_string()) {
                    log::warn!("move guest process {pid} into {}: {e}", d.display());
                }
            }
        }
        if let Ok(mut g) = self.cgroups.lock() {
            *g = dirs;
        }
        let hostname = spec
            .get("hostname")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let Some(ns) = &self.netns else {
            return Ok(());
        };
        let Some(n) = net::inspect(ns)? else {
            return Ok(());
        };
        if let Ok(mut g) = self.host_if.lock() {
            *g = Some(n.host_if.clone());
        }
        let t1 = Instant::now();
        net::redirect(ns, &n)?;
        let t2 = Instant::now();
        self.agent.call(
            &Request::ConfigureNetwork {
                interfaces: vec![n.guest.clone()],
                routes: n.routes.clone(),
                hostname,
            },
            Duration::from_secs(10),
        )?;
        log::info!(
            "warm guest {} adopted: cgroup and inspect {} ms, redirect {} ms, guest network {} ms",
            self.pid,
            (t1 - t0).as_millis(),
            (t2 - t1).as_millis(),
            t2.elapsed().as_millis()
        );
        Ok(())
    }
}

/// Every process in the PID namespace whose init is `pid` (the kernel and its helpers).
fn namespace_pids(pid: i32) -> Vec<i32> {
    let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/pid")) else {
        return Vec::new();
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/ns/pid"))
                .ok()
                .as_ref()
                == Some(&ns)
        })
        .collect()
}
