//! Performing the mounts a snapshotter returns.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};

use crate::error::{Error, IoContext, Result};
use crate::types::Mount;

/// Mount options split into kernel flags and the filesystem data string.
struct ParsedOptions {
    flags: MountFlags,
    propagation: Option<MountPropagationFlags>,
    data: Vec<String>,
}

fn parse_options(options: &[String]) -> ParsedOptions {
    let mut flags = MountFlags::empty();
    let mut propagation = None;
    let mut data = Vec::new();
    for opt in options {
        match opt.as_str() {
            "ro" => flags |= MountFlags::RDONLY,
            "rw" => flags.remove(MountFlags::RDONLY),
            "bind" => flags |= MountFlags::BIND,
            "rbind" => flags |= MountFlags::BIND | MountFlags::REC,
            "nosuid" => flags |= MountFlags::NOSUID,
            "suid" => flags.remove(MountFlags::NOSUID),
            "nodev" => flags |= MountFlags::NODEV,
            "dev" => flags.remove(MountFlags::NODEV),
            "noexec" => flags |= MountFlags::NOEXEC,
            "exec" => flags.remove(MountFlags::NOEXEC),
            "sync" => flags |= MountFlags::SYNCHRONOUS,
            "dirsync" => flags |= MountFlags::DIRSYNC,
            "noatime" => flags |= MountFlags::NOATIME,
            "nodiratime" => flags |= MountFlags::NODIRATIME,
            "relatime" => flags |= MountFlags::RELATIME,
            "strictatime" => flags |= MountFlags::STRICTATIME,
            "private" => propagation = Some(MountPropagationFlags::PRIVATE),
            "rprivate" => {
                propagation = Some(MountPropagationFlags::PRIVATE | MountPropagationFlags::REC)
            }
            "slave" => propagation = Some(MountPropagationFlags::DOWNSTREAM),
            "rslave" => {
                propagation = Some(MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC)
            }
            "shared" => propagation = Some(MountPropagationFlags::SHARED),
            "rshared" => {
                propagation = Some(MountPropagationFlags::SHARED | MountPropagationFlags::REC)
            }
            _ => data.push(opt.clone()),
        }
    }
    ParsedOptions {
        flags,
        propagation,
        data,
    }
}

fn mount_one(m: &Mount, target: &Path) -> Result<()> {
    let opts = parse_options(&m.options);
    let is_bind = m.mount_type == "bind" || opts.flags.contains(MountFlags::BIND);
    let data = CString::new(opts.data.join(","))
        .map_err(|_| Error::InvalidArgument("mount option contains a NUL byte".into()))?;
    let ctx = || {
        format!(
            "mount {} ({}) on {}",
            m.source,
            m.mount_type,
            target.display()
        )
    };
    if is_bind {
        let bind_flags = MountFlags::BIND | (opts.flags & MountFlags::REC);
        rustix::mount::mount(m.source.as_str(), target, "", bind_flags, None).ctx(ctx)?;
        // A bind mount ignores other flags on creation; they take effect on a remount.
        let extra = opts.flags - MountFlags::BIND - MountFlags::REC;
        if !extra.is_empty() {
            if let Err(e) = rustix::mount::mount_remount(target, extra | MountFlags::BIND, "") {
                let _ = rustix::mount::unmount(target, UnmountFlags::DETACH);
                return Err(e).ctx(ctx);
            }
        }
    } else {
        let fs_type = if m.mount_type.is_empty() {
            "none"
        } else {
            m.mount_type.as_str()
        };
        rustix::mount::mount(
            m.source.as_str(),
            target,
            fs_type,
            opts.flags,
            Some(data.as_c_str()),
        )
        .ctx(ctx)?;
    }
    if let Some(p) = opts.propagation {
        if let Err(e) = rustix::mount::mount_change(target, p) {
            let _ = rustix::mount::unmount(target, UnmountFlags::DETACH);
            return Err(e).ctx(ctx);
        }
    }
    Ok(())
}

/// Mounts every mount in order on `target` (later mounts stack on earlier ones). On failure,
/// the mounts already made are undone.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for (done, m) in mounts.iter().enumerate() {
        if let Err(e) = mount_one(m, target) {
            for _ in 0..done {
                let _ = unmount(target);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Unmounts the top mount at `target`, retrying briefly while it is busy.
pub fn unmount(target: &Path) -> Result<()> {
    let mut last = None;
    for attempt in 0..50u64 {
        match rustix::mount::unmount(target, UnmountFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::BUSY => {
                last = Some(e);
                thread::sleep(Duration::from_millis(10 * (attempt + 1).min(5)));
            }
            Err(e) => return Err(e).ctx(|| format!("unmount {}", target.display())),
        }
    }
    Err(last.unwrap_or(rustix::io::Errno::BUSY)).ctx(|| format!("unmount {}", target.display()))
}

/// Unmounts every mount stacked on `target` (until it is no longer a mount point).
pub fn unmount_all(target: &Path) -> Result<()> {
    loop {
        match unmount(target) {
            Ok(()) => continue,
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc_einval()) => {
                return Ok(())
            }
            Err(e) => return Err(e),
        }
    }
}

fn libc_einval() -> i32 {
    rustix::io::Errno::INVAL.raw_os_error()
}

/// Mounts into a fresh temporary directory; unmounts and removes it on drop.
pub struct TempMount {
    dir: Option<tempfile::TempDir>,
    layers: usize,
}

impl TempMount {
    /// Mounts `mounts` under a new directory in the system temp dir.
    pub fn new(mounts: &[Mount]) -> Result<Self> {
        Self::new_in(&std::env::temp_dir(), mounts)
    }

    /// Mounts `mounts` under a new directory inside `base`.
    pub fn new_in(base: &Path, mounts: &[Mount]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("berth-mount-")
            .tempdir_in(base)
            .ctx(|| format!("create temp mount dir in {}", base.display()))?;
        mount_all(mounts, dir.path())?;
        Ok(TempMount {
            dir: Some(dir),
            layers: mounts.len(),
        })
    }

    /// Where the mounts are visible.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).unwrap_or(Path::new(""))
    }

    /// Unmounts and removes the directory, reporting errors that `Drop` would swallow.
    pub fn release(mut self) -> Result<()> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<()> {
        let Some(dir) = self.dir.take() else {
            return Ok(());
        };
        let path: PathBuf = dir.path().to_path_buf();
        for _ in 0..self.layers {
            if let Err(e) = unmount(&path) {
                // Never delete through a live mount: detach it and keep the directory.
                let _ = rustix::mount::unmount(&path, UnmountFlags::DETACH);
                let _ = dir.keep();
                return Err(e);
            }
        }
        // The directory is now empty and unmounted; removing it cannot touch mounted data.
        std::fs::remove_dir(&path).ctx(|| format!("remove {}", path.display()))?;
        let _ = dir.keep();
        Ok(())
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}
