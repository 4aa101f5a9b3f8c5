//! Child reaping. The shim is a subreaper: container processes are re-parented
//! to it, and it must be the ONLY caller of `waitpid` so that an exit status is
//! never stolen from the one who needs it. Runtime CLI invocations wait here too.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Called for every reaped child; returns true when it owns that pid.
pub type ExitHandler = Box<dyn Fn(i32, u32) -> bool + Send + Sync>;

/// Unclaimed exits are kept this long for a late `wait_for`/`take`.
const KEEP_UNCLAIMED: Duration = Duration::from_secs(120);

#[derive(Default)]
pub struct Reaper {
    inner: Mutex<Inner>,
    cv: Condvar,
}

#[derive(Default)]
struct Inner {
    exits: HashMap<i32, (u32, Instant)>,
    handler: Option<ExitHandler>,
}

/// containerd's convention: a signaled process exits with 128 + signal.
pub fn exit_code(status: WaitStatus) -> Option<(i32, u32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code as u32)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), 128 + sig as u32)),
        _ => None,
    }
}

impl Reaper {
    pub fn set_handler(&self, handler: ExitHandler) {
        self.lock().handler = Some(handler);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reaps every child that has exited (called on SIGCHLD).
    pub fn reap_all(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => break,
                Ok(status) => {
                    if let Some((pid, code)) = exit_code(status) {
                        self.dispatch(pid, code);
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("waitpid: {e}");
                    break;
                }
            }
        }
    }

    /// The lock is held across the handler so a process registered concurrently
    /// either sees the handler claim it or finds the exit with `take`.
    fn dispatch(&self, pid: i32, code: u32) {
        let mut inner = self.lock();
        if let Some(handler) = &inner.handler {
            if handler(pid, code) {
                return;
            }
        }
        // containerd-shim's helpers (e.g. mount_rootfs forks a mount child)
        // wait on the crate's own exit monitor; feed it what we reap.
        let _ = containerd_shim::synchronous::monitor::monitor_notify_by_pid(pid, code as i32);
        let now = Instant::now();
        inner
            .exits
            .retain(|_, (_, at)| now.duration_since(*at) < KEEP_UNCLAIMED);
        inner.exits.insert(pid, (code, now));
        drop(inner);
        self.cv.notify_all();
    }

    /// An exit recorded before its owner registered the pid.
    pub fn take(&self, pid: i32) -> Option<u32> {
        self.lock().exits.remove(&pid).map(|(code, _)| code)
    }

    /// Blocks until `pid` (a child we spawned and nobody else claims) exits.
    pub fn wait_for(&self, pid: i32) -> u32 {
        let mut inner = self.lock();
        loop {
            if let Some((code, _)) = inner.exits.remove(&pid) {
                return code;
            }
            inner = self.cv.wait(inner).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn signaled_is_128_plus_signal() {
        let s = WaitStatus::Signaled(Pid::from_raw(5), Signal::SIGKILL, false);
        assert_eq!(exit_code(s), Some((5, 137)));
        let s = WaitStatus::Exited(Pid::from_raw(6), 3);
        assert_eq!(exit_code(s), Some((6, 3)));
    }

    #[test]
    fn unclaimed_exit_is_kept_for_take() {
        let r = Reaper::default();
        r.set_handler(Box::new(|pid, _| pid == 1));
        r.dispatch(1, 0);
        r.dispatch(2, 7);
        assert_eq!(r.take(1), None);
        assert_eq!(r.take(2), Some(7));
        assert_eq!(r.take(2), None);
    }
}
