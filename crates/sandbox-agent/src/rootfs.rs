//! A container's root in the agent's namespace: its directory under /run/c, the hostfs
//! mounts made there before the fork, the mount steps its init performs, and the teardown.

use std::ffi::CString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use berth_sandbox_proto::Mount;

use crate::agent::Agent;
use crate::child::{DevNodes, MountStep, PlanInfo};
use crate::error::{sys, AgentError};
use crate::mountopts::{dirs_below, join_in_root, mounts_under, parse_options};
use crate::state::Key;
use crate::sys::{self as s, cpath, cstring};

/// Where containers live in the agent's namespace (on the guest's /run tmpfs).
pub const CONTAINERS_DIR: &str = "/run/c";

/// A container's directory under /run/c, torn down on drop unless kept.
pub struct Workdir {
    pub dir: PathBuf,
    pub staged: Vec<PathBuf>,
    pub keep: bool,
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

pub fn mount_hostfs(path: &str, target: &Path, flags: libc::c_ulong) -> Result<(), AgentError> {
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

pub fn cpaths(v: &[PathBuf]) -> Result<Vec<CString>, AgentError> {
    v.iter().map(|p| cpath(p)).collect()
}

/// One `Mount` as a child step; hostfs sources are mounted at their staging directory now.
pub fn mount_step(
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
