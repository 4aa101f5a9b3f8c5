//! Boots real User-Mode Linux with the static agent as init and drives it over the protocol,
//! as the sandbox shim does. The agent comes from `BERTH_SANDBOX_AGENT` (built by
//! scripts/build-sandbox-agent.sh); the test fails without it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File};
use std::io::{BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio as PStdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use berth_sandbox_proto::{
    read_frame, read_frame_after_magic, sync_to_magic, write_frame, ErrorCode, Event, Frame, Kind,
    Mount, Request, Response, Route, Stdio, PROTOCOL_VERSION,
};
use serde_json::json;

const UML: &str = "/usr/bin/linux.uml";
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "uname", "id", "ls", "hostname", "mount", "stty", "grep",
    "touch", "pwd", "tty", "env", "true", "ping",
];
const CALL: Duration = Duration::from_secs(15);

fn agent_binary() -> PathBuf {
    let p = std::env::var_os("BERTH_SANDBOX_AGENT").expect(
        "BERTH_SANDBOX_AGENT must name the static agent (scripts/build-sandbox-agent.sh prints it)",
    );
    let p = PathBuf::from(p);
    assert!(
        p.is_file(),
        "BERTH_SANDBOX_AGENT={} is not a file",
        p.display()
    );
    p
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A booted guest. Dropping it kills UML's whole process group and removes the directory.
struct Guest {
    uml: Child,
    to_guest: Option<File>,
    frames: Receiver<Frame>,
    /// Every frame that is not a response, in arrival order.
    seen: Vec<Frame>,
    next_id: u32,
    kernel_release: String,
    log: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Drop for Guest {
    fn drop(&mut self) {
        let pgid = self.uml.id() as i32;
        if self.uml.try_wait().ok().flatten().is_none() {
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
            let _ = self.uml.wait();
        }
        // UML's helper processes share its process group.
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
        if std::thread::panicking() {
            if let Ok(log) = fs::read_to_string(&self.log) {
                eprintln!("--- UML output ---\n{log}");
            }
        }
        drop(self.dir.take());
    }
}

/// `<tmp>/guest` (the guest root: the agent as /init and empty mount points) and
/// `<tmp>/c` (a busybox rootfs and two directories for hostfs mounts).
fn lay_out(tmp: &Path) {
    let g = tmp.join("guest");
    for d in ["proc", "sys", "dev", "run", "tmp"] {
        fs::create_dir_all(g.join(d)).unwrap();
    }
    fs::copy(agent_binary(), g.join("init")).unwrap();
    let root = tmp.join("c/rootfs");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for a in APPLETS {
        symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    fs::write(root.join("etc/marker"), "rootfs marker\n").unwrap();
    fs::create_dir_all(tmp.join("c/m0")).unwrap();
    fs::write(tmp.join("c/m0/extra"), "file mount\n").unwrap();
    fs::create_dir_all(tmp.join("c/m1")).unwrap();
    fs::write(tmp.join("c/m1/hello"), "dir mount\n").unwrap();
    fs::create_dir_all(tmp.join("uml")).unwrap();
    fs::create_dir_all(tmp.join("uml-tmp")).unwrap();
}

/// A network namespace with a tap device for the guest's eth0; deleted on drop.
struct Netns {
    name: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("bsa-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&[
            "-n", &ns.name, "tuntap", "add", "dev", "tap0", "mode", "tap",
        ]);
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            "10.200.0.1/24",
            "dev",
            "tap0",
        ]);
        ip(&["-n", &ns.name, "link", "set", "tap0", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

impl Guest {
    fn boot() -> Guest {
        Guest::boot_in(None, &[])
    }

    /// Boots UML in network namespace `netns` (if any) with extra kernel arguments.
    fn boot_in(netns: Option<&Netns>, extra: &[&str]) -> Guest {
        agent_binary();
        assert!(Path::new(UML).is_file(), "{UML} missing (user-mode-linux)");
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().to_path_buf();
        lay_out(&tmp);
        let log = tmp.join("uml.log");
        let logf = File::create(&log).unwrap();
        let (in_r, in_w) = pipe();
        let (out_r, out_w) = pipe();
        let (in_fd, out_fd) = (in_r.as_raw_fd(), out_w.as_raw_fd());
        let ns_file = netns.map(|n| File::open(format!("/run/netns/{}", n.name)).unwrap());
        let ns_fd = ns_file.as_ref().map_or(-1, |f| f.as_raw_fd());
        let mut cmd = Command::new(UML);
        cmd.args([
            "mem=128M",
            "rootfstype=hostfs",
            "rootflags=/guest",
            &format!("hostfs={}", tmp.display()),
            "rw",
            "init=/init",
            "selinux=0",
            "apparmor=0",
            "lsm=",
            "loglevel=0",
            "quiet",
            "con=null",
            "con0=null",
            "con1=fd:3,fd:4",
            &format!("uml_dir={}", tmp.join("uml").display()),
        ])
        .args(extra)
        .env("TMPDIR", tmp.join("uml-tmp"))
        .stdin(PStdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .process_group(0);
        unsafe {
            cmd.pre_exec(move || {
                // UML goes with the test, even when the test process is killed.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Out of the way of 3 and 4 first, then into place (dup2 clears CLOEXEC).
                let a = libc::fcntl(in_fd, libc::F_DUPFD_CLOEXEC, 10);
                let b = libc::fcntl(out_fd, libc::F_DUPFD_CLOEXEC, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if ns_fd >= 0 && libc::setns(ns_fd, libc::CLONE_NEWNET) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let uml = cmd.spawn().unwrap();
        drop(ns_file);
        drop(in_r);
        drop(out_w);
        let (tx, frames) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(File::from(out_r));
            if sync_to_magic(&mut r).is_err() {
                return;
            }
            let Ok(first) = read_frame_after_magic(&mut r) else {
                return;
            };
            let _ = tx.send(first);
            loop {
                match read_frame(&mut r) {
                    Ok(f) => {
                        if tx.send(f).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        if e.kind() != std::io::ErrorKind::UnexpectedEof {
                            eprintln!("reading the guest's frames: {e}");
                        }
                        return;
                    }
                }
            }
        });
        let mut g = Guest {
            uml,
            to_guest: Some(File::from(in_w)),
            frames,
            seen: Vec::new(),
            next_id: 1,
            kernel_release: String::new(),
            log,
            dir: Some(dir),
        };
        let first = g
            .next_frame(Duration::from_secs(20))
            .expect("no Ready from the guest");
        assert_eq!(first.kind, Kind::Event);
        match first.parse::<Event>().unwrap() {
            Event::Ready { kernel_release } => g.kernel_release = kernel_release,
            other => panic!("first frame is {other:?}, not Ready"),
        }
        g
    }

    fn next_frame(&mut self, timeout: Duration) -> Option<Frame> {
        match self.frames.recv_timeout(timeout) {
            Ok(f) => Some(f),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    fn send(&mut self, f: &Frame) {
        write_frame(self.to_guest.as_mut().unwrap(), f).unwrap();
    }

    fn call(&mut self, req: &Request) -> Response {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&Frame::request(id, req));
        let deadline = Instant::now() + CALL;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = self
                .next_frame(left)
                .unwrap_or_else(|| panic!("no answer to {req:?}"));
            if f.kind == Kind::Response {
                assert_eq!(f.id, id, "answer to another request");
                return f.parse().unwrap();
            }
            self.seen.push(f);
        }
    }

    /// Waits until `pred` holds for a frame seen (already or from now on); returns its index.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&Frame) -> bool) -> usize {
        let deadline = Instant::now() + CALL;
        loop {
            if let Some(i) = self.seen.iter().position(&pred) {
                return i;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let f = self.next_frame(left).unwrap_or_else(|| {
                panic!("timed out waiting for {what}; seen {:?}", self.events())
            });
            assert_ne!(f.kind, Kind::Response, "unrequested response");
            self.seen.push(f);
        }
    }

    fn events(&self) -> Vec<Event> {
        self.seen
            .iter()
            .filter(|f| f.kind == Kind::Event)
            .map(|f| f.parse().unwrap())
            .collect()
    }

    /// The `Exited` of a process: (index among frames, pid, status).
    fn exited(&mut self, id: &str, exec_id: &str) -> (usize, u32, u32) {
        let is = |f: &Frame| {
            f.kind == Kind::Event
                && matches!(f.parse::<Event>(), Ok(Event::Exited { id: i, exec_id: e, .. }) if i == id && e == exec_id)
        };
        let i = self.wait_for(&format!("Exited of {id}/{exec_id}"), is);
        match self.seen[i].parse().unwrap() {
            Event::Exited { pid, status, .. } => (i, pid, status),
            _ => unreachable!(),
        }
    }

    /// Index of the `Close` of a stream.
    fn closed(&mut self, stream: u32) -> usize {
        self.wait_for(&format!("Close of stream {stream}"), |f| {
            f.kind == Kind::Close && f.id == stream
        })
    }

    fn output(&self, stream: u32) -> String {
        let mut v = Vec::new();
        for f in &self.seen {
            if f.kind == Kind::Data && f.id == stream {
                v.extend_from_slice(&f.payload);
            }
        }
        String::from_utf8_lossy(&v).into_owned()
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(st) = self.uml.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// After UML exited: nothing of its process group is left (its helpers, killed as it
    /// exits, may take a moment to be reaped by the host's init).
    fn assert_no_leftovers(&self) {
        let pgid = self.uml.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(3);
        while unsafe { libc::killpg(pgid, 0) } == 0 {
            if Instant::now() > deadline {
                let ps = Command::new("ps")
                    .args(["-o", "pid,ppid,stat,args", "-g", &pgid.to_string()])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                panic!("processes of UML's group are left:\n{ps}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn process(args: &[&str]) -> serde_json::Value {
    json!({"args": args, "env": ["PATH=/bin"], "cwd": "/"})
}

fn std_mounts() -> Vec<Mount> {
    let guest = |dest: &str, fstype: &str, opts: &[&str]| Mount::Guest {
        destination: dest.into(),
        fstype: fstype.into(),
        source: fstype.into(),
        options: opts.iter().map(|s| s.to_string()).collect(),
    };
    vec![
        guest("/proc", "proc", &["nosuid", "noexec", "nodev"]),
        guest(
            "/dev",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        guest(
            "/dev/pts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        ),
        guest("/sys/fs/cgroup", "cgroup2", &["nosuid", "noexec", "nodev"]),
        Mount::Hostfs {
            destination: "/etc/extra.conf".into(),
            path: "/c/m0".into(),
            file: Some("extra".into()),
            readonly: false,
        },
        Mount::Hostfs {
            destination: "/data".into(),
            path: "/c/m1".into(),
            file: None,
            readonly: true,
        },
    ]
}

fn create(id: &str, process: serde_json::Value, stdio: Stdio) -> Request {
    Request::CreateContainer {
        id: id.into(),
        rootfs: "/c/rootfs".into(),
        readonly_rootfs: false,
        mounts: std_mounts(),
        process,
        hostname: format!("{id}-host"),
        stdio,
    }
}

fn pid_of(r: Response) -> u32 {
    match r {
        Response::Pid { pid } => pid,
        other => panic!("expected a pid, got {other:?}"),
    }
}

fn error_of(r: Response) -> (ErrorCode, String) {
    match r {
        Response::Error { code, message } => (code, message),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn out_err(stdout: u32, stderr: u32) -> Stdio {
    Stdio {
        stdin: 0,
        stdout,
        stderr,
        terminal: false,
    }
}

fn host_release() -> String {
    let out = Command::new("uname").arg("-r").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn containers_in_a_real_guest() {
    let started = Instant::now();
    let mut g = Guest::boot();

    // Info: the guest's own kernel.
    match g.call(&Request::Info) {
        Response::Info {
            kernel_release,
            agent_version,
            protocol,
        } => {
            assert_eq!(kernel_release, g.kernel_release);
            assert_ne!(kernel_release, host_release());
            assert_eq!(protocol, PROTOCOL_VERSION);
            assert!(!agent_version.is_empty());
        }
        other => panic!("Info answered {other:?}"),
    }

    // Network: lo up, a route on it, the guest's hostname; a missing device is NotFound.
    let r = g.call(&Request::ConfigureNetwork {
        interfaces: vec![],
        routes: vec![Route {
            destination: "10.123.4.0/16".into(),
            gateway: String::new(),
            device: "lo".into(),
        }],
        hostname: "guest-h".into(),
    });
    assert_eq!(r, Response::Ok);
    let r = g.call(&Request::ConfigureNetwork {
        interfaces: vec![berth_sandbox_proto::Interface {
            name: "nope0".into(),
            addresses: vec!["10.9.0.2/24".into()],
            ..Default::default()
        }],
        routes: vec![],
        hostname: String::new(),
    });
    let (code, msg) = error_of(r);
    assert_eq!(code, ErrorCode::NotFound, "{msg}");
    assert!(msg.contains("nope0"), "{msg}");

    // Output on both streams, Close before Exited, exit code.
    let pid = pid_of(g.call(&create(
        "c1",
        process(&["sh", "-c", "echo out; echo err >&2; exit 7"]),
        out_err(1, 2),
    )));
    assert_eq!(
        pid_of(g.call(&Request::StartContainer { id: "c1".into() })),
        pid
    );
    let (at, epid, status) = g.exited("c1", "");
    assert_eq!((epid, status), (pid, 7));
    assert!(g.closed(1) < at && g.closed(2) < at, "Close after Exited");
    assert_eq!(g.output(1), "out\n");
    assert_eq!(g.output(2), "err\n");
    let (code, _) = error_of(g.call(&Request::StartContainer { id: "c1".into() }));
    assert_eq!(code, ErrorCode::FailedPrecondition);
    assert_eq!(
        g.call(&Request::RemoveContainer { id: "c1".into() }),
        Response::Ok
    );
    // The cgroup2 mount was skipped with a word to the host.
    assert!(g
        .events()
        .iter()
        .any(|e| matches!(e, Event::Log { message } if message.contains("cgroup2"))));

    // Root, mounts, hostname, device nodes, the guest's network, the pid namespace.
    let script = "cat /etc/marker /etc/extra.conf /data/hello; \
        touch /data/x 2>/dev/null && echo data-writable || echo data-readonly; \
        touch /rootfile 2>/dev/null && echo root-writable || echo root-readonly; \
        hostname; echo pid $$; ls /dev/null /dev/zero /dev/ptmx; \
        grep -c 00007B0A /proc/net/route; [ -e /init ] && echo leak || echo isolated; exit 0";
    let mut req = create("c2", process(&["sh", "-c", script]), out_err(3, 4));
    if let Request::CreateContainer {
        readonly_rootfs, ..
    } = &mut req
    {
        *readonly_rootfs = true;
    }
    g.call(&req);
    g.call(&Request::StartContainer { id: "c2".into() });
    let (_, _, status) = g.exited("c2", "");
    g.closed(3);
    assert_eq!(status, 0, "stderr: {}", g.output(4));
    assert_eq!(
        g.output(3),
        "rootfs marker\nfile mount\ndir mount\ndata-readonly\nroot-readonly\nc2-host\npid 1\n\
         /dev/null\n/dev/ptmx\n/dev/zero\n1\nisolated\n",
        "stderr: {}",
        g.output(4)
    );
    assert_eq!(
        g.call(&Request::RemoveContainer { id: "c2".into() }),
        Response::Ok
    );

    // User, groups, environment, a cwd that did not exist.
    let p = json!({
        "args": ["sh", "-c", "echo $(id -u) $(id -g) $(id -G) \"$GREETING\" $(pwd)"],
        "env": ["PATH=/bin", "GREETING=hi there"],
        "cwd": "/home/u",
        "user": {"uid": 1000, "gid": 1001, "additionalGids": [1002]},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 256, "soft": 128}]
    });
    g.call(&create("c3", p, out_err(5, 6)));
    g.call(&Request::StartContainer { id: "c3".into() });
    let (_, _, status) = g.exited("c3", "");
    g.closed(5);
    assert_eq!(status, 0, "stderr: {}", g.output(6));
    assert_eq!(g.output(5), "1000 1001 1001 1002 hi there /home/u\n");
    g.call(&Request::RemoveContainer { id: "c3".into() });

    // Stdin through cat, then its Close.
    let stdio = Stdio {
        stdin: 7,
        stdout: 8,
        stderr: 9,
        terminal: false,
    };
    g.call(&create("c4", process(&["cat"]), stdio));
    g.send(&Frame::data(7, b"hello "));
    g.call(&Request::StartContainer { id: "c4".into() });
    g.send(&Frame::data(7, b"through stdin\n"));
    // Every byte value, both ways through the raw line (NUL, XON/XOFF, CR, DEL, 0xff...),
    // within what the line takes at once (see `a_burst_of_4k_is_reported`).
    let blob: Vec<u8> = (0..2048u32).map(|i| (i * 7 + i / 256) as u8).collect();
    g.send(&Frame::data(7, &blob));
    g.send(&Frame::close(7));
    let (_, _, status) = g.exited("c4", "");
    assert_eq!(status, 0);
    let mut echoed = Vec::new();
    for f in g.seen.iter().filter(|f| f.kind == Kind::Data && f.id == 8) {
        echoed.extend_from_slice(&f.payload);
    }
    let mut want = b"hello through stdin\n".to_vec();
    want.extend_from_slice(&blob);
    assert!(echoed == want, "bytes changed on the way: {echoed:?}");
    g.call(&Request::RemoveContainer { id: "c4".into() });

    // A terminal from the container's devpts: its size, a resize, input, output on the
    // stdout stream.
    let p = json!({"args": ["sh", "-c", "tty; stty size; read x; stty size"], "env": ["PATH=/bin"],
                   "terminal": true, "consoleSize": {"height": 33, "width": 101}});
    let stdio = Stdio {
        stdin: 20,
        stdout: 10,
        stderr: 0,
        terminal: true,
    };
    g.call(&create("c5", p, stdio));
    g.call(&Request::StartContainer { id: "c5".into() });
    g.wait_for("the first stty size", |f| {
        f.kind == Kind::Data && String::from_utf8_lossy(&f.payload).contains("33 101")
    });
    let resize = Request::ResizePty {
        id: "c5".into(),
        exec_id: String::new(),
        width: 120,
        height: 40,
    };
    assert_eq!(g.call(&resize), Response::Ok);
    g.send(&Frame::data(20, b"go\r"));
    let (_, _, status) = g.exited("c5", "");
    g.closed(10);
    let out = g.output(10);
    assert_eq!(status, 0, "{out}");
    assert!(out.starts_with("/dev/pts/0\r\n33 101\r\n"), "{out:?}");
    assert!(out.ends_with("40 120\r\n"), "{out:?}");
    g.call(&Request::RemoveContainer { id: "c5".into() });

    // A missing binary fails CreateContainer and leaves nothing behind.
    let (code, msg) = error_of(g.call(&create("c6", process(&["/nope"]), out_err(0, 0))));
    assert_eq!(code, ErrorCode::InvalidArgument);
    assert!(
        msg.contains("exec /nope: No such file or directory"),
        "{msg}"
    );
    let (code, _) = error_of(g.call(&Request::Pids { id: "c6".into() }));
    assert_eq!(code, ErrorCode::NotFound);

    // A running container: exec, pids, signals, delete, remove.
    let init = pid_of(g.call(&create("run", process(&["sleep", "1000"]), out_err(0, 0))));
    g.call(&Request::StartContainer { id: "run".into() });
    let e1 = pid_of(g.call(&Request::Exec {
        id: "run".into(),
        exec_id: "e1".into(),
        process: process(&["uname", "-r"]),
        stdio: out_err(11, 12),
    }));
    let (_, pid, status) = g.exited("run", "e1");
    assert_eq!((pid, status), (e1, 0));
    g.closed(11);
    assert_eq!(g.output(11).trim(), g.kernel_release);
    assert_eq!(
        g.call(&Request::DeleteProcess {
            id: "run".into(),
            exec_id: "e1".into()
        }),
        Response::Ok
    );
    let e2 = pid_of(g.call(&Request::Exec {
        id: "run".into(),
        exec_id: "e2".into(),
        process: process(&["sleep", "1000"]),
        stdio: out_err(0, 0),
    }));
    match g.call(&Request::Pids { id: "run".into() }) {
        Response::Pids { pids } => assert_eq!(pids, vec![init, e2]),
        other => panic!("Pids answered {other:?}"),
    }
    let (code, _) = error_of(g.call(&Request::DeleteProcess {
        id: "run".into(),
        exec_id: "e2".into(),
    }));
    assert_eq!(code, ErrorCode::FailedPrecondition);
    let sig = |exec: &str, signal: u32| Request::Signal {
        id: "run".into(),
        exec_id: exec.into(),
        signal,
        all: false,
    };
    assert_eq!(g.call(&sig("e2", 15)), Response::Ok);
    let (_, _, status) = g.exited("run", "e2");
    assert_eq!(status, 143);
    let (code, msg) = error_of(g.call(&sig("e2", 15)));
    assert_eq!(code, ErrorCode::FailedPrecondition);
    assert!(msg.contains("process already finished"), "{msg}");
    assert_eq!(g.call(&sig("e2", 9)), Response::Ok);
    let (code, _) = error_of(g.call(&sig("nope", 15)));
    assert_eq!(code, ErrorCode::NotFound);
    let (code, msg) = error_of(g.call(&Request::Exec {
        id: "run".into(),
        exec_id: "e3".into(),
        process: process(&["/nope"]),
        stdio: out_err(13, 14),
    }));
    assert_eq!(code, ErrorCode::InvalidArgument);
    assert!(
        msg.contains("exec /nope: No such file or directory"),
        "{msg}"
    );
    // An exec with a terminal.
    g.call(&Request::Exec {
        id: "run".into(),
        exec_id: "e4".into(),
        process: process(&["tty"]),
        stdio: Stdio {
            stdin: 0,
            stdout: 15,
            stderr: 0,
            terminal: true,
        },
    });
    g.exited("run", "e4");
    g.closed(15);
    assert!(g.output(15).starts_with("/dev/pts/"), "{}", g.output(15));
    // A child that keeps the output open: Exited comes after the grace period, before the
    // stream's Close.
    let t0 = Instant::now();
    g.call(&Request::Exec {
        id: "run".into(),
        exec_id: "e5".into(),
        process: process(&["sh", "-c", "sleep 3 & exit 3"]),
        stdio: out_err(16, 0),
    });
    let (at, _, status) = g.exited("run", "e5");
    assert_eq!(status, 3);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2900),
        "Exited after {waited:?}"
    );
    assert!(!g.seen[..at]
        .iter()
        .any(|f| f.kind == Kind::Close && f.id == 16));
    let all = Request::Signal {
        id: "run".into(),
        exec_id: String::new(),
        signal: 9,
        all: true,
    };
    assert_eq!(g.call(&all), Response::Ok);
    let (_, pid, status) = g.exited("run", "");
    assert_eq!((pid, status), (init, 137));
    assert_eq!(
        g.call(&Request::RemoveContainer { id: "run".into() }),
        Response::Ok
    );
    let (code, _) = error_of(g.call(&sig("", 9)));
    assert_eq!(code, ErrorCode::NotFound);
    // Nothing said about the failed exec's streams.
    assert!(!g.seen.iter().any(|f| f.id == 13 && f.kind != Kind::Event));

    // Shutdown powers the guest off.
    assert_eq!(g.call(&Request::Shutdown), Response::Ok);
    let st = g
        .wait_exit(Duration::from_secs(10))
        .expect("UML still runs after Shutdown");
    assert!(st.success(), "UML exited with {st}");
    g.assert_no_leftovers();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn network_in_a_real_guest() {
    let ns = Netns::new("net");
    let mut g = Guest::boot_in(Some(&ns), &["eth0=tuntap,tap0"]);
    let r = g.call(&Request::ConfigureNetwork {
        interfaces: vec![berth_sandbox_proto::Interface {
            name: "eth0".into(),
            addresses: vec!["10.200.0.2/24".into(), "fd00:200::2/64".into()],
            mac: "02:42:0a:c8:00:02".into(),
            mtu: 1400,
        }],
        routes: vec![Route {
            destination: "default".into(),
            gateway: "10.200.0.1".into(),
            device: "eth0".into(),
        }],
        hostname: "pod-h".into(),
    });
    assert_eq!(r, Response::Ok);
    assert!(g
        .events()
        .iter()
        .any(|e| matches!(e, Event::Log { message } if message.contains("fd00:200::2/64"))));
    // A container shares the guest's network: it sees the MAC, the MTU, the default route,
    // and reaches the host's side of the tap.
    let script = "cat /sys/class/net/eth0/address /sys/class/net/eth0/mtu; \
        grep -c '^eth0\t00000000\t0100C80A' /proc/net/route; \
        ping -c 1 -W 5 10.200.0.1 >/dev/null && echo reached";
    let mut mounts = std_mounts();
    mounts.push(Mount::Guest {
        destination: "/sys".into(),
        fstype: "sysfs".into(),
        source: "sysfs".into(),
        options: vec![
            "nosuid".into(),
            "noexec".into(),
            "nodev".into(),
            "ro".into(),
        ],
    });
    mounts.push(Mount::Guest {
        destination: "/dev/mqueue".into(),
        fstype: "mqueue".into(),
        source: "mqueue".into(),
        options: vec!["nosuid".into(), "noexec".into(), "nodev".into()],
    });
    let req = Request::CreateContainer {
        id: "n1".into(),
        rootfs: "/c/rootfs".into(),
        readonly_rootfs: false,
        mounts,
        process: process(&["sh", "-c", script]),
        hostname: String::new(),
        stdio: out_err(1, 2),
    };
    pid_of(g.call(&req));
    g.call(&Request::StartContainer { id: "n1".into() });
    let (_, _, status) = g.exited("n1", "");
    g.closed(1);
    assert_eq!(
        status,
        0,
        "stdout {:?} stderr {:?}",
        g.output(1),
        g.output(2)
    );
    assert_eq!(g.output(1), "02:42:0a:c8:00:02\n1400\n1\nreached\n");
    // The host's side learned the guest's address at the MAC it was given.
    let out = Command::new("ip")
        .args(["-n", &ns.name, "neigh", "show", "10.200.0.2"])
        .output()
        .unwrap();
    let neigh = String::from_utf8_lossy(&out.stdout);
    assert!(neigh.contains("02:42:0a:c8:00:02"), "{neigh}");
    assert_eq!(g.call(&Request::Shutdown), Response::Ok);
    g.wait_exit(Duration::from_secs(10))
        .expect("UML still runs after Shutdown");
    g.assert_no_leftovers();
}

/// A request of 20 kB: the guest's console throttles the line.
fn big_request() -> Request {
    Request::Exec {
        id: "none".into(),
        exec_id: "e".into(),
        process: json!({"args": ["x"], "env": [format!("BIG={}", "y".repeat(20_000))]}),
        stdio: Stdio::default(),
    }
}

#[test]
fn a_burst_of_4k_is_reported() {
    let mut g = Guest::boot();
    let (code, _) = error_of(g.call(&big_request()));
    assert_eq!(code, ErrorCode::NotFound);
    g.wait_for("a Log about the throttled line", |f| {
        matches!(f.parse::<Event>(), Ok(Event::Log { message }) if message.contains("throttled"))
    });
}

/// After a burst, UML's console driver no longer reads the host's descriptor
/// (line_throttle deactivates it; line_unthrottle only drains once). With the protocol's flow
/// control — pieces of LINE_PIECE, at most LINE_WINDOW unreported — a request several times
/// that size goes through, and the line still works afterwards.
#[test]
fn a_large_request_goes_through_with_flow_control() {
    let mut g = Guest::boot();
    let frame = Frame::request(77, &big_request());
    let bytes = frame.encode();
    assert!(bytes.len() > 3 * berth_sandbox_proto::LINE_WINDOW as usize);
    let (mut sent, mut consumed) = (0u64, 0u64);
    for piece in bytes.chunks(berth_sandbox_proto::LINE_PIECE) {
        while sent + piece.len() as u64 - consumed > berth_sandbox_proto::LINE_WINDOW {
            let f = g.next_frame(CALL).expect("no Consumed from the agent");
            if let Ok(Event::Consumed { bytes }) = f.parse::<Event>() {
                consumed = bytes;
            }
        }
        g.to_guest.as_mut().unwrap().write_all(piece).unwrap();
        sent += piece.len() as u64;
    }
    loop {
        let f = g.next_frame(CALL).expect("no answer to the large request");
        if f.kind == Kind::Response {
            assert_eq!(f.id, 77);
            // `none` is no container: the agent read and parsed all of it.
            assert_eq!(error_of(f.parse().unwrap()).0, ErrorCode::NotFound);
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(matches!(g.call(&Request::Info), Response::Info { .. }));
}

#[test]
fn a_closed_line_powers_the_guest_off() {
    let mut g = Guest::boot();
    drop(g.to_guest.take());
    g.wait_exit(Duration::from_secs(10))
        .expect("UML still runs after the host closed the line");
    g.assert_no_leftovers();
}

#[test]
fn a_malformed_frame_is_logged_then_the_guest_powers_off() {
    let mut g = Guest::boot();
    // A bad JSON request is only refused.
    let mut bad = Frame::request(1, &Request::Info);
    bad.payload = b"{\"op\":\"fly\"}".to_vec();
    g.send(&bad);
    let f = g.next_frame(CALL).expect("no answer to a bad request");
    assert_eq!((f.kind, f.id), (Kind::Response, 1));
    let (code, _) = error_of(f.parse().unwrap());
    assert_eq!(code, ErrorCode::InvalidArgument);
    // A frame without its magic is not.
    g.to_guest
        .as_mut()
        .unwrap()
        .write_all(b"XXXX\x01\0\0\0\x01\0\0\0\0")
        .unwrap();
    g.wait_for("a Log about the frame", |f| {
        matches!(f.parse::<Event>(), Ok(Event::Log { message }) if message.contains("malformed frame"))
    });
    g.wait_exit(Duration::from_secs(10))
        .expect("UML still runs after a malformed frame");
    g.assert_no_leftovers();
}
