//! Forking a process from its plan, and reading what its error pipe says about how far it
//! got (see `child.rs`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::agent::Agent;
use crate::child::{self, ChildFds, ChildPlan, Namespaces, PlanInfo, RootPlan, Stage, RECORD_LEN};
use crate::error::{sys, AgentError};
use crate::spec::{cap_mask, exec_candidates, rlimit_resource, Process};
use crate::state::State;
use crate::stdio::ProcIo;
use crate::sys::{self as s, cstring};

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
pub fn next_record(err: &OwnedFd) -> Result<Option<(Stage, u32, i32)>, AgentError> {
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

pub struct Spawned {
    pub pid: i32,
    pub err: OwnedFd,
    pub start: Option<OwnedFd>,
}

/// Forks the process of `plan` and registers it (with `register`) before the reaper can see
/// it exit: the state stays locked from the fork until the registration.
pub fn spawn(
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
pub fn process_plan(
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
    plan.caps = p.capabilities.as_ref().map(|c| crate::child::CapPlan {
        bounding: cap_mask(&c.bounding),
        effective: cap_mask(&c.effective),
        permitted: cap_mask(&c.permitted),
        inheritable: cap_mask(&c.inheritable),
        ambient: cap_mask(&c.ambient),
    });
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
