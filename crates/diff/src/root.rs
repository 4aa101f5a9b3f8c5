//! Filesystem access confined to one directory.
//!
//! Every lookup goes through `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` from a
//! directory fd, so a symlink (planted by this layer or an earlier one) can neither lead
//! outside the root nor be resolved against the host's `/`. Final components are handled
//! with `*at` calls that never follow symlinks.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};
use crate::path::RelPath;

pub(crate) struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

impl Root {
    pub fn open(path: &Path) -> Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| format!("open root {}", path.display()))?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Resolves `rel` beneath the root. `ENOENT` is returned as `Ok(None)`.
    fn resolve(&self, rel: &RelPath, flags: OFlags) -> Result<Option<OwnedFd>> {
        let path = rel.to_path();
        let mut attempts = 0;
        loop {
            match rustix::fs::openat2(
                &self.fd,
                &path,
                flags | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            ) {
                Ok(fd) => return Ok(Some(fd)),
                Err(Errno::NOENT) => return Ok(None),
                // The kernel asks for a retry when a concurrent rename raced the lookup.
                Err(Errno::AGAIN) if attempts < 16 => attempts += 1,
                Err(Errno::XDEV) => {
                    return Err(Error::Escape(format!(
                        "{} resolves outside {} through a symlink",
                        rel.display(),
                        self.path.display()
                    )))
                }
                Err(Errno::NOTDIR) => {
                    return Err(Error::InvalidArgument(format!(
                        "a component of {} is not a directory",
                        rel.display()
                    )))
                }
                Err(Errno::LOOP) => {
                    return Err(Error::InvalidArgument(format!(
                        "too many symlinks (or a symlink where none may be) in {}",
                        rel.display()
                    )))
                }
                Err(e) => return Err(e).ctx(|| format!("resolve {}", rel.display())),
            }
        }
    }

    /// An `O_PATH` handle on the directory `rel` (symlinks in it are followed, beneath the root).
    pub fn dir(&self, rel: &RelPath) -> Result<Option<OwnedFd>> {
        self.resolve(rel, OFlags::PATH | OFlags::DIRECTORY)
    }

    /// A readable handle on the directory `rel` itself (its final component is not followed).
    pub fn dir_rw(&self, rel: &RelPath) -> Result<Option<OwnedFd>> {
        self.resolve(rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW)
    }
}

/// `lstat` of `name` in `dir`; `None` if absent.
pub(crate) fn lstat_at(dir: impl AsFd, name: &OsStr) -> Result<Option<Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e).ctx(|| format!("lstat {name:?}")),
    }
}

pub(crate) fn is_dir(st: &Stat) -> bool {
    rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
}

/// Removes `name` in `dir`, recursively if it is a directory, never following symlinks.
pub(crate) fn remove_all_at(dir: impl AsFd, name: &OsStr) -> Result<()> {
    let dir = dir.as_fd();
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if is_dir(&st) {
        let sub = rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| format!("open {name:?}"))?;
        for child in list_dir(&sub)? {
            remove_all_at(&sub, &child)?;
        }
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).ctx(|| format!("rmdir {name:?}"))
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty()).ctx(|| format!("unlink {name:?}"))
    }
}

/// Names in a directory opened for reading (without `.` and `..`).
pub(crate) fn list_dir(dir: &OwnedFd) -> Result<Vec<std::ffi::OsString>> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    let it = rustix::fs::Dir::read_from(dir).ctx(|| "read directory".to_string())?;
    for entry in it {
        let entry = entry.ctx(|| "read directory".to_string())?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(out)
}

/// A path naming `name` inside the directory `dir` through procfs, for the few calls that
/// have no `*at` form (xattrs on non-regular files). The fd part is a trusted directory
/// handle; `name` is a single component and is not followed by `l*xattr`.
pub(crate) fn proc_path(dir: &impl AsRawFd, name: &OsStr) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}
