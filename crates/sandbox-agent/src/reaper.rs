//! The agent is PID 1: it reaps every child, its own and orphans, and maps exits to
//! container processes.

use std::sync::Arc;

use nix::sys::signal::{SigSet, Signal};

use crate::agent::Agent;

/// Blocks SIGCHLD in the calling thread; called before any other thread exists so that all
/// inherit the mask and the reaper alone takes the signal (with sigwait).
pub fn block_sigchld() -> nix::Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.thread_block()
}

/// The exit status the host reports: the exit code, or 128 + the signal that killed it.
pub fn status_code(raw: libc::c_int) -> u32 {
    if libc::WIFEXITED(raw) {
        libc::WEXITSTATUS(raw) as u32
    } else if libc::WIFSIGNALED(raw) {
        128 + libc::WTERMSIG(raw) as u32
    } else {
        // Stopped/continued are not exits; callers only pass exit statuses.
        255
    }
}

pub fn run(agent: Arc<Agent>) {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    loop {
        loop {
            let mut raw: libc::c_int = 0;
            // SAFETY: `raw` is a valid int for waitpid to fill.
            let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            agent.exited(pid, status_code(raw));
        }
        // Signals that arrive while reaping stay pending: the wait returns at once.
        let _ = set.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(status_code(7 << 8), 7);
        assert_eq!(status_code(0), 0);
        assert_eq!(status_code(libc::SIGKILL), 137);
        assert_eq!(status_code(libc::SIGTERM), 143);
        // Killed with a core dump.
        assert_eq!(status_code(libc::SIGSEGV | 0x80), 139);
    }
}
