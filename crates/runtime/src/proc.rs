//! Watching processes we did not spawn (shims are daemonized and reparented away from us).

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

/// True while `pid` exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the last ')' (the command name may contain parentheses).
    match stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next())
    {
        Some('Z') | Some('X') | None => false,
        Some(_) => true,
    }
}

/// Resolves when `pid` exits: a pidfd when the kernel has them, polling otherwise.
pub(crate) async fn wait_exit(pid: u32) {
    if pid == 0 {
        return;
    }
    if let Ok(raw) = libc::pid_t::try_from(pid) {
        // SAFETY: pidfd_open takes no pointers; a non-negative result is a new descriptor that
        // nothing else owns, so OwnedFd may take it.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
        if fd >= 0 {
            if let Ok(fd) = i32::try_from(fd) {
                // SAFETY: see above: `fd` is fresh and exclusively ours.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                // SAFETY: the AsyncFd owns `owned`, so the descriptor stays open (and is not
                // reused) for as long as it is registered.
                let afd = unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        owned,
                        tokio::io::Interest::READABLE,
                    )
                };
                if let Ok(afd) = afd {
                    // A pidfd polls readable once the process has exited.
                    let _ = afd.readable().await;
                    return;
                }
            }
        }
    }
    while alive(pid) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits up to `grace` for `pid` to exit, then SIGKILLs it.
pub(crate) async fn reap(pid: u32, grace: Duration) {
    if pid == 0 || !alive(pid) {
        return;
    }
    if tokio::time::timeout(grace, wait_exit(pid)).await.is_err() {
        if let Ok(p) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), wait_exit(pid)).await;
    }
}
