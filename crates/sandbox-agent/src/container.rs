//! CreateContainer, StartContainer and Exec: preparing a process's plan, forking it, and
//! learning from its error pipe whether it got as far as it should.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use berth_sandbox_proto::{Mount, Response, Stdio};

use crate::agent::{Agent, Post};
use crate::child::{
    self, ChildFds, ChildPlan, DevNodes, MountStep, Namespaces, PlanInfo, RootPlan, Stage,
    RECORD_LEN,
};
use crate::error::{sys, AgentError};
use crate::mountopts::{dirs_below, join_in_root, mounts_under, parse_options};
use crate::spec::{check_id, exec_candidates, rlimit_resource, Process};
use crate::state::{Container, Key, Proc, State};
use crate::stdio::{self, ProcIo, StdinMsg};
use crate::sys::{self as s, cpath, cstring};

/// Where containers live in the agent's namespace (on the guest's /run tmpfs).
pub const CONTAINERS_DIR: &str = "/run/c";

pub struct CreateArgs<'a> {
    pub id: &'a str,
    pub rootfs: &'a str,
    pub readonly_rootfs: bool,
    pub mounts: &'a [Mount],
    pub process: &'a serde_json::Value,
    pub hostname: &'a str,
    pub stdio: &'a Stdio,
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` on end of file before the first byte.
fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the pointer and length describe the unfilled part of `buf`.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            if got == 0 {
                return Ok(false);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "short record from child",
            ));
        }
        got += n as usize;
    }
    Ok(true)
}

/// The next record on a child's error pipe (`None`: the pipe closed, i.e. exec succeeded or
/// the child died).
fn next_record(err: &OwnedFd) -> Result<Option<(Stage, u32, i32)>, AgentError> {
    let mut rec = [0u8; RECORD_LEN];
    if !read_full(err, &mut rec).map_err(sys("read the child's error pipe"))? {
        return Ok(None);
    }
    child::decode(&rec)
        .map(Some)
        .ok_or_else(|| AgentError::Sys {
            what: "child sent an unknown record".into(),
            source: io::Error::from_raw_os_error(libc::EPROTO),
        })
}

struct Spawned {
    pid: i32,
    err: OwnedFd,
    start: Option<OwnedFd>,
}

/// Forks the process of `plan` and registers it (with `register`) before the reaper can see
/// it exit: the state stays locked from the fork until the registration.
fn spawn(
    agent: &Agent,
    plan: &ChildPlan,
    info: &PlanInfo,
    wait_start: bool,
    register: impl FnOnce(&mut State, i32),
) -> Result<Spawned, AgentError> {
    let (err_r, err_w) = s::pipe().map_err(sys("pipe"))?;
    let (pid_r, pid_w) = s::pipe().map_err(sys("pipe"))?;
    let start = if wait_start {
        Some(s::pipe().map_err(sys("pipe"))?)
    } else {
        None
    };
    let fds = ChildFds {
        err: err_w.as_raw_fd(),
        pid: pid_w.as_raw_fd(),
        start: start.as_ref().map_or(-1, |(r, _)| r.as_raw_fd()),
    };
    let mut st = agent.lock();
    let intermediate = child::fork_intermediate(plan, &fds).map_err(sys("fork"))?;
    st.ignored.insert(intermediate);
    drop(err_w);
    drop(pid_w);
    let start = start.map(|(_r, w)| w);
    let mut b = [0u8; 4];
    let got = read_full(&pid_r, &mut b).map_err(sys("read the child's pid"))?;
    if !got {
        drop(st);
        return Err(match next_record(&err_r)? {
            Some((stage, index, errno)) => child::describe(stage, index, errno, info),
            None => AgentError::Sys {
                what: "the forked child died before starting the process".into(),
                source: io::Error::from_raw_os_error(libc::ECHILD),
            },
        });
    }
    let pid = i32::from_ne_bytes(b);
    register(&mut st, pid);
    Ok(Spawned {
        pid,
        err: err_r,
        start,
    })
}

/// Argument vectors, identity, limits: what every process needs, container init or exec.
fn process_plan(
    p: &Process,
    ns: Namespaces,
    io: &ProcIo,
    root: Option<RootPlan>,
    info: &mut PlanInfo,
) -> Result<ChildPlan, AgentError> {
    let argv = p
        .args
        .iter()
        .map(|a| cstring(a, "argument"))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = p
        .env
        .iter()
        .map(|e| cstring(e, "environment entry"))
        .collect::<Result<Vec<_>, _>>()?;
    let candidates = exec_candidates(&p.args[0], p.path_var())
        .iter()
        .map(|c| cstring(c, "executable path"))
        .collect::<Result<Vec<_>, _>>()?;
    let cwd = cstring(&p.cwd, "cwd")?;
    let mut plan = ChildPlan::new(
        ns,
        io.child_fds(),
        io.console_fd(),
        root,
        argv,
        envp,
        cwd,
        candidates,
    );
    for r in &p.rlimits {
        let res = rlimit_resource(&r.kind)
            .ok_or_else(|| AgentError::InvalidArgument(format!("unknown rlimit {:?}", r.kind)))?;
        plan.rlimits.push((res, r.soft, r.hard));
        info.rlimits.push(r.kind.clone());
    }
    plan.winsize = p.console_size();
    plan.no_new_privs = p.no_new_privileges;
    plan.umask = p.user.umask.unwrap_or(0o022);
    plan.uid = p.user.uid;
    plan.gid = p.user.gid;
    plan.groups = p.user.additional_gids.clone();
    info.arg0 = p.args[0].clone();
    info.cwd = p.cwd.clone();
    info.uid = p.user.uid;
    info.gid = p.user.gid;
    info.groups = p.user.additional_gids.clone();
    Ok(plan)
}

/// A container's directory under /run/c, torn down on drop unless kept.
struct Workdir {
    dir: PathBuf,
    staged: Vec<PathBuf>,
    keep: bool,
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = teardown(&self.dir, &self.staged);
        }
    }
}

/// Unmounts (lazily) everything under a container's directory and removes the directories
/// the agent made. Only `rmdir`: a mount that did not go away keeps its contents.
pub fn teardown(dir: &Path, staged: &[PathBuf]) -> Vec<String> {
    let mut problems = Vec::new();
    match fs::read_to_string("/proc/self/mountinfo") {
        Ok(mi) => {
            for m in mounts_under(&mi, dir) {
                let r = cpath(&m)
                    .map_err(|e| e.to_string())
                    .and_then(|c| s::umount_lazy(&c).map_err(|e| e.to_string()));
                if let Err(e) = r {
                    problems.push(format!("unmount {}: {e}", m.display()));
                }
            }
        }
        Err(e) => problems.push(format!("read /proc/self/mountinfo: {e}")),
    }
    let mut dirs: Vec<PathBuf> = staged.iter().rev().cloned().collect();
    dirs.push(dir.join("m"));
    dirs.push(dir.join("rootfs"));
    dirs.push(dir.to_path_buf());
    for d in dirs {
        if let Err(e) = fs::remove_dir(&d) {
            if e.kind() != io::ErrorKind::NotFound {
                problems.push(format!("remove {}: {e}", d.display()));
            }
        }
    }
    problems
}

fn mount_hostfs(path: &str, target: &Path, flags: libc::c_ulong) -> Result<(), AgentError> {
    s::mount(
        Some(c"none"),
        &cpath(target)?,
        Some(c"hostfs"),
        flags,
        Some(&cstring(path, "hostfs path")?),
    )
    .map_err(sys(format!("mount hostfs {path} on {}", target.display())))
}

fn dev_nodes(dev: &Path) -> Result<DevNodes, AgentError> {
    let mut nodes = Vec::new();
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        nodes.push((cpath(&dev.join(name))?, libc::makedev(major, minor)));
    }
    let mut links = Vec::new();
    for (target, name) in [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ] {
        links.push((cstring(target, "link")?, cpath(&dev.join(name))?));
    }
    Ok(DevNodes { nodes, links })
}

fn cpaths(v: &[PathBuf]) -> Result<Vec<CString>, AgentError> {
    v.iter().map(|p| cpath(p)).collect()
}

/// One `Mount` as a child step; hostfs sources are mounted at their staging directory now.
fn mount_step(
    agent: &Agent,
    key: &Key,
    rootfs: &Path,
    work: &mut Workdir,
    m: &Mount,
    info: &mut PlanInfo,
) -> Result<Option<MountStep>, AgentError> {
    match m {
        Mount::Hostfs {
            destination,
            path,
            file,
            readonly,
        } => {
            let target = join_in_root(rootfs, destination)?;
            let staging = work.dir.join("m").join(work.staged.len().to_string());
            fs::create_dir_all(&staging).map_err(sys(format!("create {}", staging.display())))?;
            work.staged.push(staging.clone());
            mount_hostfs(path, &staging, 0)?;
            let source = match file {
                Some(f) if f.is_empty() || f.contains('/') || f == ".." => {
                    return Err(AgentError::InvalidArgument(format!(
                        "mount {destination}: bad file name {f:?}"
                    )))
                }
                Some(f) => staging.join(f),
                None => staging.clone(),
            };
            let shown = match file {
                Some(f) => format!("hostfs {path}/{f} on {destination}"),
                None => format!("hostfs {path} on {destination}"),
            };
            let meta = fs::metadata(&source).map_err(|e| AgentError::SysInvalid {
                what: format!("mount {shown}: source"),
                source: e,
            })?;
            let (dirs, is_file) = if meta.is_dir() {
                (dirs_below(rootfs, &target), false)
            } else {
                (dirs_below(rootfs, target.parent().unwrap_or(rootfs)), true)
            };
            info.mounts.push(shown);
            Ok(Some(MountStep {
                dirs: cpaths(&dirs)?,
                file: is_file,
                target: cpath(&target)?,
                source: Some(cpath(&source)?),
                fstype: None,
                flags: libc::MS_BIND | libc::MS_REC,
                data: None,
                remount_ro: *readonly,
                propagation: 0,
                devices: None,
            }))
        }
        Mount::Guest {
            destination,
            fstype,
            source,
            options,
        } => {
            if fstype == "cgroup" || fstype == "cgroup2" {
                agent.chan.log(format!(
                    "{}: {fstype} mount on {destination} skipped (no cgroups in the sandbox guest)",
                    key.describe()
                ));
                return Ok(None);
            }
            let target = join_in_root(rootfs, destination)?;
            let o = parse_options(options);
            let bind = o.flags & libc::MS_BIND != 0;
            let source = if source.is_empty() { fstype } else { source };
            let is_file = bind && fs::metadata(source).is_ok_and(|m| !m.is_dir());
            let dirs = if is_file {
                dirs_below(rootfs, target.parent().unwrap_or(rootfs))
            } else {
                dirs_below(rootfs, &target)
            };
            let devices = if fstype == "tmpfs" && target == rootfs.join("dev") {
                Some(dev_nodes(&target)?)
            } else {
                None
            };
            info.mounts.push(format!("{fstype} on {destination}"));
            Ok(Some(MountStep {
                dirs: cpaths(&dirs)?,
                file: is_file,
                target: cpath(&target)?,
                source: Some(cstring(source, "mount source")?),
                fstype: (!bind).then(|| cstring(fstype, "fstype")).transpose()?,
                flags: o.flags,
                data: (!o.data.is_empty() && !bind)
                    .then(|| cstring(&o.data, "mount options"))
                    .transpose()?,
                remount_ro: bind && o.flags & libc::MS_RDONLY != 0,
                propagation: o.propagation,
                devices,
            }))
        }
    }
}

fn pidns_of(pid: i32) -> Result<String, AgentError> {
    let link = format!("/proc/{pid}/ns/pid");
    fs::read_link(&link)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(sys(format!("readlink {link}")))
}

pub fn create(
    agent: &Arc<Agent>,
    a: CreateArgs<'_>,
    stdin: Option<Receiver<StdinMsg>>,
) -> Result<(Response, Post), AgentError> {
    let key = Key::init(a.id);
    let r = create_inner(agent, &a, &key, stdin);
    if r.is_err() {
        agent.drop_stdin(a.stdio.stdin);
    }
    r.map_err(|e| e.context(&key.describe()))
}

fn create_inner(
    agent: &Arc<Agent>,
    a: &CreateArgs<'_>,
    key: &Key,
    stdin: Option<Receiver<StdinMsg>>,
) -> Result<(Response, Post), AgentError> {
    check_id("container", a.id)?;
    let p = Process::parse(a.process)?;
    if agent.lock().containers.contains_key(a.id) {
        return Err(AgentError::AlreadyExists("container already exists".into()));
    }
    let dir = Path::new(CONTAINERS_DIR).join(a.id);
    fs::create_dir_all(CONTAINERS_DIR).map_err(sys(format!("create {CONTAINERS_DIR}")))?;
    fs::create_dir(&dir).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            AgentError::AlreadyExists(format!(
                "{} is left from an earlier container",
                dir.display()
            ))
        } else {
            sys(format!("create {}", dir.display()))(e)
        }
    })?;
    let mut work = Workdir {
        dir: dir.clone(),
        staged: Vec::new(),
        keep: false,
    };
    let rootfs = dir.join("rootfs");
    fs::create_dir(&rootfs).map_err(sys(format!("create {}", rootfs.display())))?;
    mount_hostfs(a.rootfs, &rootfs, 0)?;

    let mut info = PlanInfo {
        rootfs: a.rootfs.to_string(),
        hostname: a.hostname.to_string(),
        ..Default::default()
    };
    let mut steps = Vec::new();
    for m in a.mounts {
        if let Some(step) = mount_step(agent, key, &rootfs, &mut work, m, &mut info)? {
            steps.push(step);
        }
    }
    let cwd_dirs = dirs_below(&rootfs, &join_in_root(&rootfs, &p.cwd)?);
    let root = RootPlan {
        root: cpath(&rootfs)?,
        readonly: a.readonly_rootfs,
        mounts: steps,
        cwd_dirs: cpaths(&cwd_dirs)?,
        hostname: (!a.hostname.is_empty())
            .then(|| cstring(a.hostname, "hostname"))
            .transpose()?,
    };
    let terminal = a.stdio.terminal || p.terminal;
    let mut io = stdio::prepare(a.stdio, terminal)?;
    let ns = Namespaces::Unshare(
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC,
    );
    let plan = process_plan(&p, ns, &io, Some(root), &mut info)?;

    let outputs = io.output_count();
    let stdin_stream = a.stdio.stdin;
    let spawned = spawn(agent, &plan, &info, true, |st, pid| {
        let mut init = Proc::new(pid, stdin_stream);
        init.outputs_open = outputs;
        st.by_pid.insert(pid, key.clone());
        st.containers.insert(
            key.container.clone(),
            Container {
                init,
                execs: HashMap::new(),
                pidns: String::new(),
                started: false,
                start: None,
                info: PlanInfo::default(),
                dir: PathBuf::new(),
                staged: Vec::new(),
            },
        );
    })?;
    drop(plan);
    io.close_child_ends();
    let pid = spawned.pid;

    let ready = match next_record(&spawned.err) {
        Ok(Some((Stage::Ready, _, _))) => io.receive_terminal().and_then(|()| pidns_of(pid)),
        Ok(Some((stage, index, errno))) => Err(child::describe(stage, index, errno, &info)),
        Ok(None) => Err(AgentError::Sys {
            what: "the container's init exited during setup".into(),
            source: io::Error::from_raw_os_error(libc::ECHILD),
        }),
        Err(e) => Err(e),
    };
    let pidns = match ready {
        Ok(ns) => ns,
        Err(e) => {
            let _ = s::kill(pid, libc::SIGKILL);
            let mut st = agent.lock();
            st.containers.remove(&key.container);
            st.by_pid.remove(&pid);
            return Err(e);
        }
    };
    {
        let mut st = agent.lock();
        if let Some(c) = st.containers.get_mut(&key.container) {
            c.pidns = pidns;
            c.init.master = io.master.clone();
            c.start = spawned.start.map(|w| (w, spawned.err));
            c.info = info;
            c.dir = dir;
            c.staged = std::mem::take(&mut work.staged);
        }
    }
    work.keep = true;
    stdio::spawn_readers(agent, key, pid, std::mem::take(&mut io.outputs));
    if let (Some(fd), Some(rx)) = (io.stdin.take(), stdin) {
        stdio::spawn_writer(agent, key, fd, rx);
    }
    Ok((
        Response::Pid { pid: pid as u32 },
        Post::Announce(key.clone(), pid),
    ))
}

pub fn start(agent: &Agent, id: &str) -> Result<Response, AgentError> {
    let key = Key::init(id);
    let ctx = key.describe();
    let (start, err, info, pid) = {
        let mut st = agent.lock();
        let c = st
            .containers
            .get_mut(id)
            .ok_or_else(|| AgentError::NotFound(format!("{ctx}: no such container")))?;
        if c.started {
            return Err(AgentError::FailedPrecondition(format!(
                "{ctx}: already started"
            )));
        }
        if !c.init.running() {
            return Err(AgentError::FailedPrecondition(format!(
                "{ctx}: init exited before start"
            )));
        }
        let (start, err) = c.start.take().ok_or_else(|| {
            AgentError::FailedPrecondition(format!("{ctx}: not waiting for start"))
        })?;
        c.started = true;
        (start, err, c.info.clone(), c.init.pid)
    };
    let go = [1u8];
    // SAFETY: writes one byte from a valid buffer.
    if unsafe { libc::write(start.as_raw_fd(), go.as_ptr().cast(), 1) } != 1 {
        return Err(AgentError::FailedPrecondition(format!(
            "{ctx}: init exited before start"
        )));
    }
    drop(start);
    match next_record(&err).map_err(|e| e.context(&ctx))? {
        None => Ok(Response::Pid { pid: pid as u32 }),
        Some((stage, index, errno)) => {
            Err(child::describe(stage, index, errno, &info).context(&ctx))
        }
    }
}

/// The namespaces an exec joins, in the order it joins them (mount last: after it, /proc
/// paths of the agent's namespace are gone).
const EXEC_NAMESPACES: [&str; 4] = ["ipc", "uts", "pid", "mnt"];

pub fn exec(
    agent: &Arc<Agent>,
    id: &str,
    exec_id: &str,
    process: &serde_json::Value,
    stdio_req: &Stdio,
    stdin: Option<Receiver<StdinMsg>>,
) -> Result<(Response, Post), AgentError> {
    let key = Key {
        container: id.to_string(),
        exec: exec_id.to_string(),
    };
    let r = exec_inner(agent, &key, process, stdio_req, stdin);
    if r.is_err() {
        agent.drop_stdin(stdio_req.stdin);
    }
    r.map_err(|e| e.context(&key.describe()))
}

fn exec_inner(
    agent: &Arc<Agent>,
    key: &Key,
    process: &serde_json::Value,
    stdio_req: &Stdio,
    stdin: Option<Receiver<StdinMsg>>,
) -> Result<(Response, Post), AgentError> {
    check_id("container", &key.container)?;
    check_id("exec", &key.exec)?;
    let p = Process::parse(process)?;
    let init_pid = {
        let st = agent.lock();
        let c = st
            .containers
            .get(&key.container)
            .ok_or_else(|| AgentError::NotFound("no such container".into()))?;
        if !c.init.running() {
            return Err(AgentError::FailedPrecondition(
                "the container's init is not running".into(),
            ));
        }
        if c.execs.contains_key(&key.exec) {
            return Err(AgentError::AlreadyExists("exec id already in use".into()));
        }
        c.init.pid
    };
    let mut nsfds = Vec::new();
    for ns in EXEC_NAMESPACES {
        let path = format!("/proc/{init_pid}/ns/{ns}");
        let f = fs::File::open(&path).map_err(sys(format!("open {path}")))?;
        nsfds.push(OwnedFd::from(f));
    }
    let terminal = stdio_req.terminal || p.terminal;
    let mut io = stdio::prepare(stdio_req, terminal)?;
    let mut info = PlanInfo {
        namespaces: EXEC_NAMESPACES.to_vec(),
        ..Default::default()
    };
    let plan = process_plan(&p, Namespaces::Join(nsfds), &io, None, &mut info)?;
    let outputs = io.output_count();
    let spawned = spawn(agent, &plan, &info, false, |st, pid| {
        let mut proc_ = Proc::new(pid, stdio_req.stdin);
        proc_.outputs_open = outputs;
        st.register(key, proc_);
    })?;
    drop(plan);
    io.close_child_ends();
    let pid = spawned.pid;
    let failed = match next_record(&spawned.err) {
        Ok(None) => io.receive_terminal().err(),
        Ok(Some((stage, index, errno))) => Some(child::describe(stage, index, errno, &info)),
        Err(e) => Some(e),
    };
    if let Some(e) = failed {
        let _ = s::kill(pid, libc::SIGKILL);
        let mut st = agent.lock();
        if let Some(c) = st.containers.get_mut(&key.container) {
            c.execs.remove(&key.exec);
        }
        st.by_pid.remove(&pid);
        return Err(e);
    }
    if let Some(p) = agent.lock().proc_mut(key) {
        p.master = io.master.clone();
    }
    stdio::spawn_readers(agent, key, pid, std::mem::take(&mut io.outputs));
    if let (Some(fd), Some(rx)) = (io.stdin.take(), stdin) {
        stdio::spawn_writer(agent, key, fd, rx);
    }
    Ok((
        Response::Pid { pid: pid as u32 },
        Post::Announce(key.clone(), pid),
    ))
}
