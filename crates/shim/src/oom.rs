//! OOM notification for a container's memory cgroup.
//! cgroup v1: an eventfd registered on `memory.oom_control`;
//! cgroup v2: the `oom_kill` counter in `memory.events`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// Finds the memory cgroup directory of `pid` (v1 memory controller, else v2).
pub fn memory_cgroup(pid: i32) -> Option<(PathBuf, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        if ctrls.split(',').any(|c| c == "memory") {
            let p = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
            return Some((p, false));
        }
        if ctrls.is_empty() {
            v2 = Some(path.to_string());
        }
    }
    let unified = Path::new("/sys/fs/cgroup");
    let path = unified.join(v2?.trim_start_matches('/'));
    path.join("memory.events").exists().then_some((path, true))
}

/// Starts a thread calling `on_oom` for each OOM in the cgroup; ends with the cgroup.
pub fn watch(pid: i32, on_oom: impl Fn() + Send + 'static) -> Result<()> {
    let Some((dir, v2)) = memory_cgroup(pid) else {
        return Err(Error::NotFound(format!("no memory cgroup for pid {pid}")));
    };
    if v2 {
        std::thread::spawn(move || watch_v2(&dir, on_oom));
        return Ok(());
    }
    let control =
        File::open(dir.join("memory.oom_control")).map_err(Error::io("open memory.oom_control"))?;
    // SAFETY: plain syscall; the result is checked before use.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if efd < 0 {
        return Err(Error::io("eventfd")(std::io::Error::last_os_error()));
    }
    // SAFETY: efd is a fresh descriptor we own.
    let mut event = unsafe { File::from_raw_fd(efd) };
    let mut ec = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.event_control"))
        .map_err(Error::io("open cgroup.event_control"))?;
    ec.write_all(format!("{} {}", event.as_raw_fd(), control.as_raw_fd()).as_bytes())
        .map_err(Error::io("register oom eventfd"))?;
    std::thread::spawn(move || {
        let _control = control;
        let mut buf = [0u8; 8];
        loop {
            if event.read_exact(&mut buf).is_err() {
                return;
            }
            // The eventfd also fires when the cgroup is removed.
            if !dir.exists() {
                return;
            }
            on_oom();
        }
    });
    Ok(())
}

fn oom_kills(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("memory.events")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

fn watch_v2(dir: &Path, on_oom: impl Fn()) {
    let mut seen = oom_kills(dir).unwrap_or(0);
    while let Some(now) = oom_kills(dir) {
        if now > seen {
            on_oom();
            seen = now;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_own_memory_cgroup() {
        // Every process on this host lives in some memory cgroup (v1 or v2).
        let (dir, _) = memory_cgroup(std::process::id() as i32).unwrap();
        assert!(dir.starts_with("/sys/fs/cgroup"));
    }
}
