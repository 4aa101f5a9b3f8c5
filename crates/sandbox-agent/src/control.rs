//! Requests about existing containers: Signal, ResizePty, Pids, DeleteProcess,
//! RemoveContainer.

use std::fs;
use std::time::Duration;

use berth_sandbox_proto::Response;

use crate::agent::Agent;
use crate::error::{sys, AgentError};
use crate::rootfs::teardown;
use crate::state::{Container, Key, State};
use crate::sys as s;

/// How long RemoveContainer waits for SIGKILLed processes to be reaped.
const REMOVE_WAIT: Duration = Duration::from_secs(10);

/// Guest pids (as the agent sees them) of the processes in PID namespace `pidns`.
pub fn ns_pids(pidns: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    if pidns.is_empty() {
        return pids;
    }
    let Ok(dir) = fs::read_dir("/proc") else {
        return pids;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let same =
            fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|l| l.as_os_str() == pidns);
        if same {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

fn container<'a>(st: &'a mut State, id: &str) -> Result<&'a mut Container, AgentError> {
    st.containers
        .get_mut(id)
        .ok_or_else(|| AgentError::NotFound(format!("container {id:?}: no such container")))
}

fn finished(key: &Key) -> AgentError {
    AgentError::FailedPrecondition(format!("{}: process already finished", key.describe()))
}

pub fn signal(
    agent: &Agent,
    id: &str,
    exec_id: &str,
    signal: u32,
    all: bool,
) -> Result<Response, AgentError> {
    let key = Key {
        container: id.to_string(),
        exec: exec_id.to_string(),
    };
    let sig = i32::try_from(signal)
        .ok()
        .filter(|s| (1..=64).contains(s))
        .ok_or_else(|| {
            AgentError::InvalidArgument(format!("{}: bad signal {signal}", key.describe()))
        })?;
    let mut st = agent.lock();
    let c = container(&mut st, id)?;
    if all {
        let mut pids: Vec<i32> = std::iter::once(&c.init)
            .chain(c.execs.values())
            .filter(|p| p.running())
            .map(|p| p.pid)
            .collect();
        pids.extend(ns_pids(&c.pidns));
        pids.sort_unstable();
        pids.dedup();
        if pids.is_empty() {
            return if sig == libc::SIGKILL {
                Ok(Response::Ok)
            } else {
                Err(finished(&key))
            };
        }
        for pid in pids {
            // Processes exit while we go: ESRCH is not an error here.
            let _ = s::kill(pid, sig);
        }
        return Ok(Response::Ok);
    }
    let p = if exec_id.is_empty() {
        &c.init
    } else {
        c.execs
            .get(exec_id)
            .ok_or_else(|| AgentError::NotFound(format!("{}: no such process", key.describe())))?
    };
    let dead = || {
        if sig == libc::SIGKILL {
            Ok(Response::Ok)
        } else {
            Err(finished(&key))
        }
    };
    if !p.running() {
        return dead();
    }
    match s::kill(p.pid, sig) {
        Ok(()) => Ok(Response::Ok),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => dead(),
        Err(e) => Err(sys(format!(
            "{}: kill {} with signal {sig}",
            key.describe(),
            p.pid
        ))(e)),
    }
}

pub fn resize(
    agent: &Agent,
    id: &str,
    exec_id: &str,
    width: u32,
    height: u32,
) -> Result<Response, AgentError> {
    let key = Key {
        container: id.to_string(),
        exec: exec_id.to_string(),
    };
    let master = {
        let mut st = agent.lock();
        container(&mut st, id)?;
        let p = st
            .proc_mut(&key)
            .ok_or_else(|| AgentError::NotFound(format!("{}: no such process", key.describe())))?;
        p.master.clone().ok_or_else(|| {
            AgentError::FailedPrecondition(format!("{}: process has no terminal", key.describe()))
        })?
    };
    let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    s::set_winsize(&master, clamp(width), clamp(height))
        .map_err(sys(format!("{}: set terminal size", key.describe())))?;
    Ok(Response::Ok)
}

pub fn pids(agent: &Agent, id: &str) -> Result<Response, AgentError> {
    let pidns = container(&mut agent.lock(), id)?.pidns.clone();
    Ok(Response::Pids {
        pids: ns_pids(&pidns).into_iter().map(|p| p as u32).collect(),
    })
}

pub fn delete_process(agent: &Agent, id: &str, exec_id: &str) -> Result<Response, AgentError> {
    let key = Key {
        container: id.to_string(),
        exec: exec_id.to_string(),
    };
    if exec_id.is_empty() {
        return Err(AgentError::InvalidArgument(format!(
            "{}: DeleteProcess needs an exec id (RemoveContainer removes the init)",
            key.describe()
        )));
    }
    let (ev, stdin) = {
        let mut st = agent.lock();
        let c = container(&mut st, id)?;
        let p = c
            .execs
            .get(exec_id)
            .ok_or_else(|| AgentError::NotFound(format!("{}: no such process", key.describe())))?;
        if p.running() {
            return Err(AgentError::FailedPrecondition(format!(
                "{}: process is still running",
                key.describe()
            )));
        }
        let ev = st.flush(&key);
        let c = container(&mut st, id)?;
        let stdin = c.execs.remove(exec_id).map_or(0, |p| p.stdin_stream);
        (ev, stdin)
    };
    agent.emit(ev);
    agent.drop_stdin(stdin);
    Ok(Response::Ok)
}

pub fn remove(agent: &Agent, id: &str) -> Result<Response, AgentError> {
    let ctx = Key::init(id).describe();
    let (pidns, mut victims) = {
        let mut st = agent.lock();
        let c = container(&mut st, id)?;
        // An init waiting for StartContainer reads end of file and leaves.
        c.start = None;
        let running: Vec<i32> = std::iter::once(&c.init)
            .chain(c.execs.values())
            .filter(|p| p.running())
            .map(|p| p.pid)
            .collect();
        (c.pidns.clone(), running)
    };
    victims.extend(ns_pids(&pidns));
    for pid in victims {
        let _ = s::kill(pid, libc::SIGKILL);
    }
    let st = agent.lock();
    let alive = |st: &mut State| {
        st.containers.get(id).is_some_and(|c| {
            std::iter::once(&c.init)
                .chain(c.execs.values())
                .any(|p| p.running())
        })
    };
    let (mut st, timeout) = agent
        .exits
        .wait_timeout_while(st, REMOVE_WAIT, |st| alive(st))
        .unwrap_or_else(|e| e.into_inner());
    if timeout.timed_out() && alive(&mut st) {
        return Err(AgentError::Sys {
            what: format!("{ctx}: processes did not exit after SIGKILL"),
            source: std::io::Error::from_raw_os_error(libc::ETIMEDOUT),
        });
    }
    let mut events = Vec::new();
    let execs: Vec<String> = container(&mut st, id)?.execs.keys().cloned().collect();
    for exec in std::iter::once(String::new()).chain(execs) {
        let key = Key {
            container: id.to_string(),
            exec,
        };
        events.extend(st.flush(&key));
    }
    let Some(c) = st.containers.remove(id) else {
        return Ok(Response::Ok);
    };
    st.by_pid.retain(|_, k| k.container != id);
    drop(st);
    for ev in events {
        agent.emit(Some(ev));
    }
    for p in std::iter::once(&c.init).chain(c.execs.values()) {
        agent.drop_stdin(p.stdin_stream);
    }
    for problem in teardown(&c.dir, &c.staged) {
        agent.chan.log(format!("{ctx}: {problem}"));
    }
    Ok(Response::Ok)
}
