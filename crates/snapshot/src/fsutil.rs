//! Filesystem helpers: disk usage and a metadata-preserving tree copy (for the native
//! snapshotter). Snapshot contents come from untrusted layers, so nothing here follows
//! symlinks.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, Timestamps, CWD};

use crate::error::{IoContext, Result};
use crate::types::Usage;

/// Disk usage of the tree at `root`: allocated bytes (st_blocks * 512) and inodes, counting
/// hard-linked inodes once.
pub fn disk_usage(root: &Path) -> Result<Usage> {
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let md = fs::symlink_metadata(&path).ctx(|| format!("stat {}", path.display()))?;
        if seen.insert((md.dev(), md.ino())) {
            usage.inodes += 1;
            usage.size += i64::try_from(md.blocks().saturating_mul(512)).unwrap_or(i64::MAX);
        }
        if md.is_dir() {
            for entry in fs::read_dir(&path).ctx(|| format!("read dir {}", path.display()))? {
                let entry = entry.ctx(|| format!("read dir {}", path.display()))?;
                stack.push(entry.path());
            }
        }
    }
    Ok(usage)
}

/// Copies the tree `src` into the existing directory `dst`, preserving type, mode, owner,
/// symlinks, hard links, device nodes, fifos, xattrs and timestamps.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut links = HashMap::new();
    copy_dir_contents(src, dst, &mut links)?;
    copy_metadata(
        src,
        dst,
        &fs::symlink_metadata(src).ctx(|| format!("stat {}", src.display()))?,
    )
}

fn copy_dir_contents(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), std::path::PathBuf>,
) -> Result<()> {
    for entry in fs::read_dir(src).ctx(|| format!("read dir {}", src.display()))? {
        let entry = entry.ctx(|| format!("read dir {}", src.display()))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let md = fs::symlink_metadata(&from).ctx(|| format!("stat {}", from.display()))?;
        let ft = md.file_type();

        // A second name for an inode we already copied becomes a hard link to the copy.
        if !ft.is_dir() && md.nlink() > 1 {
            if let Some(first) = links.get(&(md.dev(), md.ino())) {
                fs::hard_link(first, &to)
                    .ctx(|| format!("link {} -> {}", to.display(), first.display()))?;
                continue;
            }
            links.insert((md.dev(), md.ino()), to.clone());
        }

        if ft.is_dir() {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&to)
                .ctx(|| format!("mkdir {}", to.display()))?;
            copy_dir_contents(&from, &to, links)?;
        } else if ft.is_file() {
            copy_file(&from, &to)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&from).ctx(|| format!("readlink {}", from.display()))?;
            std::os::unix::fs::symlink(&target, &to).ctx(|| format!("symlink {}", to.display()))?;
        } else {
            // Device nodes, fifos and sockets: recreate the node itself.
            let file_type = FileType::from_raw_mode(md.mode());
            rustix::fs::mknodat(
                CWD,
                &to,
                file_type,
                Mode::from_raw_mode(md.mode() & 0o7777),
                md.rdev(),
            )
            .ctx(|| format!("mknod {}", to.display()))?;
        }
        copy_metadata(&from, &to, &md)?;
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let mut src = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nofollow())
        .open(from)
        .ctx(|| format!("open {}", from.display()))?;
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .ctx(|| format!("create {}", to.display()))?;
    // std::io::copy uses copy_file_range/sendfile where possible.
    io::copy(&mut src, &mut dst).ctx(|| format!("copy {}", from.display()))?;
    Ok(())
}

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Owner, then mode (chown clears setuid bits), then xattrs, then timestamps.
fn copy_metadata(from: &Path, to: &Path, md: &fs::Metadata) -> Result<()> {
    let is_link = md.file_type().is_symlink();
    rustix::fs::chownat(
        CWD,
        to,
        Some(rustix::fs::Uid::from_raw(md.uid())),
        Some(rustix::fs::Gid::from_raw(md.gid())),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .ctx(|| format!("chown {}", to.display()))?;
    if !is_link {
        rustix::fs::chmodat(
            CWD,
            to,
            Mode::from_raw_mode(md.mode() & 0o7777),
            AtFlags::empty(),
        )
        .ctx(|| format!("chmod {}", to.display()))?;
    }
    copy_xattrs(from, to)?;
    let times = Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: md.atime(),
            tv_nsec: md.atime_nsec() as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: md.mtime(),
            tv_nsec: md.mtime_nsec() as _,
        },
    };
    rustix::fs::utimensat(CWD, to, &times, AtFlags::SYMLINK_NOFOLLOW)
        .ctx(|| format!("set times on {}", to.display()))?;
    Ok(())
}

fn copy_xattrs(from: &Path, to: &Path) -> Result<()> {
    let names = list_xattrs(from)?;
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name_os = OsStr::from_bytes(name);
        let value = match get_xattr(from, name_os) {
            Ok(v) => v,
            // The attribute vanished between list and get: nothing to copy.
            Err(e) if e == rustix::io::Errno::NODATA => continue,
            Err(e) => return Err(e).ctx(|| format!("getxattr {}", from.display())),
        };
        rustix::fs::lsetxattr(to, name_os, &value, rustix::fs::XattrFlags::empty())
            .ctx(|| format!("setxattr {:?} on {}", name_os, to.display()))?;
    }
    Ok(())
}

fn list_xattrs(path: &Path) -> Result<Vec<u8>> {
    loop {
        let len = match rustix::fs::llistxattr_query(path) {
            Ok(n) => n,
            // Filesystems without xattr support simply have none.
            Err(e) if e == rustix::io::Errno::NOTSUP => return Ok(Vec::new()),
            Err(e) => return Err(e).ctx(|| format!("listxattr {}", path.display())),
        };
        let mut buf = vec![0u8; len];
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            // Grew between the two calls: ask again.
            Err(e) if e == rustix::io::Errno::RANGE => continue,
            Err(e) => return Err(e).ctx(|| format!("listxattr {}", path.display())),
        }
    }
}

fn get_xattr(path: &Path, name: &OsStr) -> rustix::io::Result<Vec<u8>> {
    loop {
        let len = rustix::fs::lgetxattr_query(path, name)?;
        let mut buf = vec![0u8; len];
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e == rustix::io::Errno::RANGE => continue,
            Err(e) => return Err(e),
        }
    }
}
