//! CreateContainer, StartContainer and Exec: the requests that make processes.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use berth_sandbox_proto::{Mount, Response, Stdio};

use crate::agent::{Agent, Post};
use crate::child::{self, Namespaces, PlanInfo, RootPlan, Stage};
use crate::error::{sys, AgentError};
use crate::mountopts::{dirs_below, join_in_root};
use crate::rootfs::{cpaths, mount_hostfs, mount_step, Workdir, CONTAINERS_DIR};
use crate::spawn::{next_record, process_plan, spawn};
use crate::spec::{check_id, Process};
use crate::state::{Container, Key, Proc};
use crate::stdio::{self, StdinMsg};
use crate::sys::{self as s, cpath, cstring};

pub struct CreateArgs<'a> {
    pub id: &'a str,
    pub rootfs: &'a str,
    pub readonly_rootfs: bool,
    pub mounts: &'a [Mount],
    pub process: &'a serde_json::Value,
    pub hostname: &'a str,
    pub stdio: &'a Stdio,
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
    started(agent, key, pid, &mut io, stdin)
}

/// A process exists: its output is read and its stdin written from now on; the host hears of
/// its pid (and, later, of its exit).
fn started(
    agent: &Arc<Agent>,
    key: &Key,
    pid: i32,
    io: &mut stdio::ProcIo,
    stdin: Option<Receiver<StdinMsg>>,
) -> Result<(Response, Post), AgentError> {
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

/// The namespaces an exec joins, in the order it joins them (mount last, as runc does:
/// joining it moves the process's root and cwd to the container's).
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
    started(agent, key, pid, &mut io, stdin)
}
