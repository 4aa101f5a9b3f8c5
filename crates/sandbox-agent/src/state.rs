//! What the agent knows of its containers and processes, and when a process's `Exited`
//! event is due (after its output streams closed, or a grace period after its exit).

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use berth_sandbox_proto::Event;

use crate::child::PlanInfo;

/// A process: a container's init (`exec` empty) or an exec.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub container: String,
    pub exec: String,
}

impl Key {
    pub fn init(container: &str) -> Key {
        Key {
            container: container.to_string(),
            exec: String::new(),
        }
    }

    /// For messages: `container "c1"` or `container "c1" exec "e1"`.
    pub fn describe(&self) -> String {
        if self.exec.is_empty() {
            format!("container {:?}", self.container)
        } else {
            format!("container {:?} exec {:?}", self.container, self.exec)
        }
    }
}

pub struct Proc {
    pub pid: i32,
    pub stdin_stream: u32,
    /// Output readers still running; `Exited` waits for them (or the grace period).
    pub outputs_open: u32,
    pub exit: Option<u32>,
    /// False until the request that made the process has been answered: its `Exited` must
    /// not overtake the `Pid` response.
    pub announce: bool,
    pub sent: bool,
    pub grace_over: bool,
    pub master: Option<Arc<OwnedFd>>,
}

impl Proc {
    pub fn new(pid: i32, stdin_stream: u32) -> Proc {
        Proc {
            pid,
            stdin_stream,
            outputs_open: 0,
            exit: None,
            announce: false,
            sent: false,
            grace_over: false,
            master: None,
        }
    }

    pub fn running(&self) -> bool {
        self.exit.is_none()
    }

    /// The `Exited` event when it is due and not sent yet (marking it sent). `force` skips
    /// the wait for output (the process is being forgotten).
    fn due(&mut self, key: &Key, force: bool) -> Option<Event> {
        let status = self.exit?;
        let output_done = self.outputs_open == 0 || self.grace_over || force;
        if self.sent || !self.announce || !output_done {
            return None;
        }
        self.sent = true;
        Some(Event::Exited {
            id: key.container.clone(),
            exec_id: key.exec.clone(),
            pid: self.pid as u32,
            status,
        })
    }
}

pub struct Container {
    pub init: Proc,
    pub execs: HashMap<String, Proc>,
    /// `/proc/<init>/ns/pid` as readlink shows it: finds the container's processes.
    pub pidns: String,
    pub started: bool,
    /// Until StartContainer: the write end the init waits on, and its error pipe.
    pub start: Option<(OwnedFd, OwnedFd)>,
    pub info: PlanInfo,
    pub dir: PathBuf,
    /// Staging directories of hostfs mounts (`<dir>/m/<n>`).
    pub staged: Vec<PathBuf>,
}

/// What to do after an exit was recorded.
#[derive(Debug, PartialEq)]
pub enum AfterExit {
    Nothing,
    Send(Event),
    /// Output is still open: send `Exited` after the grace period unless it closes first.
    Grace(Key, i32),
}

#[derive(Default)]
pub struct State {
    pub containers: HashMap<String, Container>,
    pub by_pid: HashMap<i32, Key>,
    /// Intermediate children (see `child.rs`): their exits mean nothing.
    pub ignored: HashSet<i32>,
}

impl State {
    pub fn proc_mut(&mut self, key: &Key) -> Option<&mut Proc> {
        let c = self.containers.get_mut(&key.container)?;
        if key.exec.is_empty() {
            Some(&mut c.init)
        } else {
            c.execs.get_mut(&key.exec)
        }
    }

    /// The process `key` if it is still the one with `pid` (exec ids can be reused).
    fn proc_pid(&mut self, key: &Key, pid: i32) -> Option<&mut Proc> {
        self.proc_mut(key).filter(|p| p.pid == pid)
    }

    pub fn on_exit(&mut self, pid: i32, status: u32) -> AfterExit {
        if self.ignored.remove(&pid) {
            return AfterExit::Nothing;
        }
        let Some(key) = self.by_pid.remove(&pid) else {
            return AfterExit::Nothing;
        };
        let Some(p) = self.proc_pid(&key, pid) else {
            return AfterExit::Nothing;
        };
        p.exit = Some(status);
        if let Some(ev) = p.due(&key, false) {
            return AfterExit::Send(ev);
        }
        if p.outputs_open > 0 {
            AfterExit::Grace(key, pid)
        } else {
            AfterExit::Nothing
        }
    }

    pub fn on_output_closed(&mut self, key: &Key, pid: i32) -> Option<Event> {
        let p = self.proc_pid(key, pid)?;
        p.outputs_open = p.outputs_open.saturating_sub(1);
        p.due(key, false)
    }

    pub fn on_grace_over(&mut self, key: &Key, pid: i32) -> Option<Event> {
        let p = self.proc_pid(key, pid)?;
        p.grace_over = true;
        p.due(key, false)
    }

    pub fn announce(&mut self, key: &Key, pid: i32) -> Option<Event> {
        let p = self.proc_pid(key, pid)?;
        p.announce = true;
        p.due(key, false)
    }

    /// The `Exited` event of a process about to be forgotten, if it exited and was not told.
    pub fn flush(&mut self, key: &Key) -> Option<Event> {
        self.proc_mut(key)?.due(key, true)
    }

    /// Registers a new process under `key` (its container must exist for an exec).
    pub fn register(&mut self, key: &Key, proc_: Proc) {
        self.by_pid.insert(proc_.pid, key.clone());
        if let Some(c) = self.containers.get_mut(&key.container) {
            if key.exec.is_empty() {
                c.init = proc_;
            } else {
                c.execs.insert(key.exec.clone(), proc_);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn state_with(pid: i32, outputs: u32) -> (State, Key) {
        let key = Key {
            container: "c".into(),
            exec: String::new(),
        };
        let mut init = Proc::new(pid, 0);
        init.outputs_open = outputs;
        let mut s = State::default();
        s.containers.insert(
            "c".into(),
            Container {
                init,
                execs: HashMap::new(),
                pidns: String::new(),
                started: true,
                start: None,
                info: PlanInfo::default(),
                dir: PathBuf::new(),
                staged: vec![],
            },
        );
        s.by_pid.insert(pid, key.clone());
        (s, key)
    }

    fn exited(pid: u32, status: u32) -> Event {
        Event::Exited {
            id: "c".into(),
            exec_id: String::new(),
            pid,
            status,
        }
    }

    #[test]
    fn exited_waits_for_output_close() {
        let (mut s, key) = state_with(10, 2);
        assert_eq!(s.announce(&key, 10), None);
        assert_eq!(s.on_exit(10, 7), AfterExit::Grace(key.clone(), 10));
        assert_eq!(s.on_output_closed(&key, 10), None);
        assert_eq!(s.on_output_closed(&key, 10), Some(exited(10, 7)));
        assert_eq!(s.on_grace_over(&key, 10), None, "sent once");
    }

    #[test]
    fn grace_period_sends_when_output_stays_open() {
        let (mut s, key) = state_with(10, 1);
        s.announce(&key, 10);
        assert!(matches!(s.on_exit(10, 137), AfterExit::Grace(..)));
        assert_eq!(s.on_grace_over(&key, 10), Some(exited(10, 137)));
        assert_eq!(s.on_output_closed(&key, 10), None);
    }

    #[test]
    fn exited_waits_for_the_answer() {
        let (mut s, key) = state_with(10, 0);
        assert_eq!(s.on_exit(10, 0), AfterExit::Nothing);
        assert_eq!(s.announce(&key, 10), Some(exited(10, 0)));
    }

    #[test]
    fn unknown_stale_and_ignored_pids() {
        let (mut s, key) = state_with(10, 0);
        s.ignored.insert(11);
        assert_eq!(s.on_exit(11, 0), AfterExit::Nothing);
        assert!(s.ignored.is_empty());
        assert_eq!(s.on_exit(12, 0), AfterExit::Nothing);
        assert_eq!(
            s.on_output_closed(&key, 99),
            None,
            "another pid under the key"
        );
        s.announce(&key, 10);
        assert_eq!(s.on_exit(10, 1), AfterExit::Send(exited(10, 1)));
        assert_eq!(s.on_exit(10, 1), AfterExit::Nothing, "reaped once");
    }

    #[test]
    fn flush_forces_a_pending_exit() {
        let (mut s, key) = state_with(10, 1);
        s.announce(&key, 10);
        s.on_exit(10, 9);
        assert_eq!(s.flush(&key), Some(exited(10, 9)));
        assert_eq!(s.flush(&key), None);
    }
}
