//! Shared helpers for tests against the real plugins in /usr/lib/cni: unique names,
//! a throw-away network (config + bridge + subnet) that cleans up after itself, and
//! ways to talk to a network namespace from the test process.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_cni::{Cni, Config};

pub const PLUGIN_DIR: &str = "/usr/lib/cni";

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn next() -> u32 {
    COUNTER.fetch_add(1, Ordering::SeqCst)
}

/// Runs a command, panicking with its output when it fails.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Like `sh` but returns None on failure.
pub fn try_sh(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// A container id unique to this process and call.
pub fn container_id(tag: &str) -> String {
    format!("t{}-{}-{tag}", std::process::id(), next())
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Tracks users of portmap in this process. portmap creates shared top-level chains
/// (CNI-HOSTPORT-*) and never deletes them; the last network of this process to go
/// removes them, but only if they did not exist before this process touched them.
struct PortmapUsers {
    users: usize,
    preexisting: Option<bool>,
}

static PORTMAP: Mutex<PortmapUsers> = Mutex::new(PortmapUsers {
    users: 0,
    preexisting: None,
});

const TOP_CHAINS: [&str; 3] = [
    "CNI-HOSTPORT-DNAT",
    "CNI-HOSTPORT-SETMARK",
    "CNI-HOSTPORT-MASQ",
];

fn nat_rules() -> String {
    sh("iptables-save", &["-t", "nat"])
}

fn chain_exists(chain: &str) -> bool {
    nat_rules()
        .lines()
        .any(|l| l.starts_with(&format!(":{chain} ")))
}

fn portmap_enter() {
    let mut p = PORTMAP.lock().unwrap_or_else(|e| e.into_inner());
    if p.preexisting.is_none() {
        p.preexisting = Some(chain_exists(TOP_CHAINS[0]));
    }
    p.users += 1;
}

fn portmap_leave() {
    let mut p = PORTMAP.lock().unwrap_or_else(|e| e.into_inner());
    p.users -= 1;
    if p.users == 0 && p.preexisting == Some(false) {
        // Other processes (the CRI end-to-end tests) may have started using the chains
        // meanwhile; leave them while anyone has a port mapping.
        let rules = nat_rules();
        let in_use = rules
            .lines()
            .any(|l| l.starts_with("-A CNI-HOSTPORT-DNAT ") || l.starts_with(":CNI-DN-"));
        if !in_use {
            remove_top_chains();
        }
        p.preexisting = None;
    }
}

fn remove_top_chains() {
    for line in nat_rules().lines() {
        let Some(rule) = line.strip_prefix("-A ") else {
            continue;
        };
        let builtin = ["PREROUTING ", "OUTPUT ", "POSTROUTING "]
            .iter()
            .any(|c| rule.starts_with(c));
        if builtin
            && TOP_CHAINS
                .iter()
                .any(|c| rule.ends_with(&format!("-j {c}")))
        {
            delete_rule(rule);
        }
    }
    for chain in TOP_CHAINS {
        let _ = try_sh("iptables", &["-t", "nat", "-F", chain]);
        let _ = try_sh("iptables", &["-t", "nat", "-X", chain]);
    }
}

/// Deletes a rule given as iptables-save prints it (without the leading `-A `).
fn delete_rule(rule: &str) {
    let mut args = vec!["-t".to_string(), "nat".to_string(), "-D".to_string()];
    args.extend(split_words(rule));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _ = try_sh("iptables", &args);
}

/// Splits iptables-save output into words: double quotes group, backslash escapes.
fn split_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// nat-table lines that mention a container id (portmap tags its rules with it).
pub fn iptables_lines_for(container_id: &str) -> Vec<String> {
    let needle = format!("id: \\\"{container_id}\\\"");
    nat_rules()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// Removes portmap's per-container rules and chains for `container_id`, for tests that
/// failed before their teardown ran.
fn remove_container_rules(container_id: &str) {
    let mut chains = Vec::new();
    for line in iptables_lines_for(container_id) {
        let Some(rule) = line.strip_prefix("-A ") else {
            continue;
        };
        let words = split_words(rule);
        if let Some(pos) = words.iter().position(|w| w == "-j") {
            if let Some(target) = words.get(pos + 1) {
                if target.starts_with("CNI-DN-") {
                    chains.push(target.clone());
                }
            }
        }
        delete_rule(rule);
    }
    for chain in chains {
        let _ = try_sh("iptables", &["-t", "nat", "-F", &chain]);
        let _ = try_sh("iptables", &["-t", "nat", "-X", &chain]);
    }
}

/// Host-wide reservation of test subnets, shared with the CRI end-to-end tests
/// (tests/src/cri.rs): one flock'ed file per /24, so concurrent test processes never
/// pick the same subnet. This crate takes 10.150-199.x, theirs 10.200-254.x.
const SLOT_DIR: &str = "/tmp/berth-cri-test-nets";

fn reserve_slot(in_use: &str) -> (nix::fcntl::Flock<std::fs::File>, String, String) {
    std::fs::create_dir_all(SLOT_DIR).unwrap();
    let pid = std::process::id();
    for step in 0..(50 * 250) {
        let n = next();
        let second = 150 + (pid + step) % 50;
        let third = (pid / 50 + n) % 250;
        let prefix = format!("10.{second}.{third}");
        let bridge = format!("bc{pid}x{n}");
        if link_exists(&bridge) || in_use.contains(&format!("{prefix}.")) {
            continue;
        }
        let Ok(file) = std::fs::File::create(format!("{SLOT_DIR}/{prefix}.lock")) else {
            continue;
        };
        if let Ok(lock) = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        {
            return (lock, bridge, prefix);
        }
    }
    panic!("no free test subnet in 10.150-199.x.0/24");
}

/// A throw-away CNI network: its own conf dir, state dir, IPAM data dir, bridge name
/// and /24. Dropping it deletes the bridge, every netns file left in its state dir and
/// every iptables rule tagged with one of the container ids it handed out.
pub struct TestNet {
    pub dir: tempfile::TempDir,
    pub name: String,
    pub bridge: String,
    /// First three octets, e.g. "10.212.7".
    pub prefix: String,
    ids: Mutex<Vec<String>>,
    /// Host links a test saw created (e.g. bandwidth's ifb devices), deleted on drop.
    links: Mutex<Vec<String>>,
    _slot: nix::fcntl::Flock<std::fs::File>,
}

impl TestNet {
    pub fn new(tag: &str) -> Self {
        portmap_enter();
        let pid = std::process::id();
        let in_use = sh("ip", &["-o", "-4", "addr"]) + &sh("ip", &["-4", "route"]);
        let (slot, bridge, prefix) = reserve_slot(&in_use);
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-cni-{tag}-"))
            .tempdir()
            .unwrap();
        for sub in ["conf", "state", "ipam", "bin"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let net = TestNet {
            dir,
            name: format!("{tag}-{pid}-{bridge}"),
            bridge,
            prefix,
            ids: Mutex::new(Vec::new()),
            links: Mutex::new(Vec::new()),
            _slot: slot,
        };
        net.write_config(&[net.portmap_plugin()]);
        net
    }

    pub fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn subnet(&self) -> String {
        format!("{}.0/24", self.prefix)
    }

    pub fn config(&self) -> Config {
        Config {
            conf_dir: self.conf_dir(),
            bin_dirs: vec![PLUGIN_DIR.into()],
            state_dir: self.state_dir(),
        }
    }

    pub fn cni(&self) -> Cni {
        Cni::new(self.config())
    }

    /// A container id registered for cleanup.
    pub fn container_id(&self, tag: &str) -> String {
        let id = container_id(tag);
        self.ids.lock().unwrap().push(id.clone());
        id
    }

    /// Registers a host link for deletion when the network is dropped.
    pub fn track_link(&self, name: &str) {
        self.links.lock().unwrap().push(name.to_string());
    }

    pub fn bridge_plugin(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet()}]],
                "dataDir": self.ipam_dir(),
            }
        })
    }

    pub fn portmap_plugin(&self) -> serde_json::Value {
        serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}})
    }

    /// Writes `10-<name>.conflist` with the bridge plugin followed by `more`.
    pub fn write_config(&self, more: &[serde_json::Value]) {
        let mut plugins = vec![self.bridge_plugin()];
        plugins.extend(more.iter().cloned());
        self.write_raw_config(serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": plugins,
        }));
    }

    pub fn write_raw_config(&self, list: serde_json::Value) {
        let path = self.conf_dir().join("10-test.conflist");
        std::fs::write(path, serde_json::to_vec_pretty(&list).unwrap()).unwrap();
    }

    /// Names of links enslaved to this network's bridge (the pods' host-side veths).
    pub fn bridge_ports(&self) -> Vec<String> {
        if !link_exists(&self.bridge) {
            return Vec::new();
        }
        sh("ip", &["-o", "link", "show", "master", &self.bridge])
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .collect()
    }

    /// IPs host-local currently holds for this network.
    pub fn allocated_ips(&self) -> Vec<String> {
        let dir = self.ipam_dir().join(&self.name);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut ips: Vec<String> = entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<IpAddr>().is_ok())
            .collect();
        ips.sort();
        ips
    }

    pub fn cache_file(&self, container_id: &str) -> PathBuf {
        self.state_dir().join("cni-cache").join(container_id)
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.state_dir().join("netns")) {
            for e in entries.flatten() {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_file(e.path());
            }
        }
        for link in self.links.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if link_exists(link) {
                let _ = try_sh("ip", &["link", "del", link]);
            }
        }
        if link_exists(&self.bridge) {
            let _ = try_sh("ip", &["link", "del", &self.bridge]);
        }
        for id in self.ids.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            remove_container_rules(id);
        }
        portmap_leave();
    }
}

/// `ip -o <args>` run inside the namespace at `netns`.
pub fn ip_in(netns: &Path, args: &[&str]) -> String {
    let net = format!("--net={}", netns.display());
    let mut all = vec![net.as_str(), "ip", "-o"];
    all.extend_from_slice(args);
    sh("nsenter", &all)
}

/// Moves the calling thread into the namespace at `netns`. Only for threads made for it.
fn enter(netns: &Path) {
    let f = std::fs::File::open(netns).unwrap();
    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
}

/// A TCP server inside a namespace answering every connection with `marker`.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(netns: &Path, port: u16, marker: &str) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let (netns, marker, flag) = (netns.to_path_buf(), marker.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            // The socket belongs to the namespace it was created in; this thread exists
            // only to create it there and serve it.
            enter(&netns);
            let listener = TcpListener::bind(("0.0.0.0", port)).unwrap();
            listener.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.write_all(marker.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Server {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects to `addr` and reads until EOF, retrying for a few seconds.
pub fn fetch(addr: SocketAddr) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let attempt =
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut buf = String::new();
                s.read_to_string(&mut buf)?;
                Ok(buf)
            });
        match attempt {
            Ok(body) => return Ok(body),
            Err(e) if Instant::now() > deadline => return Err(format!("{addr}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// One connection attempt, for checking that something is no longer reachable.
pub fn fetch_once(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf)
}

/// `fetch` from inside the namespace at `netns` (on a thread made for it).
pub fn fetch_in(netns: &Path, addr: SocketAddr) -> Result<String, String> {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        enter(&netns);
        fetch(addr)
    })
    .join()
    .unwrap()
}

#[test]
fn split_words_handles_iptables_quoting() {
    let w = split_words(
        r#"CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"n\" id: \"c1\"" -j CNI-DN-1"#,
    );
    assert_eq!(
        w,
        [
            "CNI-HOSTPORT-DNAT",
            "-p",
            "tcp",
            "-m",
            "comment",
            "--comment",
            r#"dnat name: "n" id: "c1""#,
            "-j",
            "CNI-DN-1"
        ]
    );
}
