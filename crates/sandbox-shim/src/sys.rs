//! Namespaces and mounts the host side of a sandbox is built from: user namespaces made to map
//! ids, idmapped mounts (so the unprivileged guest kernel owns what guest root owns), binds.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("path {} contains NUL", p.display())))
}

fn errno(what: String) -> Error {
    Error::Io {
        context: what,
        source: std::io::Error::last_os_error(),
    }
}

/// A user namespace with the given `uid_map`/`gid_map` lines (`inside outside count`), held by
/// an fd. Made by a short-lived child that unshares and waits for its maps.
pub fn user_namespace(maps: &[(u32, u32, u32)]) -> Result<OwnedFd> {
    let (rd, wr) = nix::unistd::pipe()?;
    // SAFETY: the child only calls async-signal-safe functions (unshare, read, _exit) before
    // exiting; it touches no locks or allocations of the parent.
    let pid = match unsafe { libc::fork() } {
        -1 => return Err(errno("fork for a user namespace".into())),
        0 => unsafe {
            drop(wr);
            let ok = libc::unshare(libc::CLONE_NEWUSER) == 0;
            let mut b = [0u8; 1];
            // Blocks until the parent closes its end (maps written, ns fd opened).
            libc::read(rd.as_raw_fd(), b.as_mut_ptr().cast(), 1);
            libc::_exit(if ok { 0 } else { 1 })
        },
        pid => pid,
    };
    drop(rd);
    let result = (|| {
        // The child unshares asynchronously: wait until its user ns differs from ours.
        let mine =
            std::fs::read_link("/proc/self/ns/user").map_err(Error::io("read own userns"))?;
        let path = format!("/proc/{pid}/ns/user");
        for _ in 0..2000 {
            match std::fs::read_link(&path) {
                Ok(l) if l != mine => break,
                _ => std::thread::sleep(std::time::Duration::from_micros(200)),
            }
        }
        let lines: String = maps
            .iter()
            .map(|(i, o, n)| format!("{i} {o} {n}\n"))
            .collect();
        std::fs::write(format!("/proc/{pid}/uid_map"), &lines)
            .map_err(Error::io(format!("write uid_map of {pid}")))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), &lines)
            .map_err(Error::io(format!("write gid_map of {pid}")))?;
        let f = File::open(&path).map_err(Error::io(format!("open {path}")))?;
        Ok(OwnedFd::from(f))
    })();
    drop(wr);
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    result
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// mount_setattr(2) on a detached tree: sets `flags`, with the ids of `userns` if given.
fn set_attr(tree: &OwnedFd, flags: u64, userns: Option<&OwnedFd>) -> std::io::Result<()> {
    let mut attr = MountAttr {
        attr_set: flags,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |u| u.as_raw_fd() as u64),
    };
    // SAFETY: mount_setattr on our detached tree with a properly sized mount_attr.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &mut attr as *mut MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Mounts `src` (a directory or file) at `dst` with ids shifted through `userns` (and read-only
/// when asked). Falls back to a plain bind when the filesystem cannot be idmapped (EINVAL):
/// the content is then seen with its on-disk owners.
pub fn idmapped_bind(src: &Path, dst: &Path, userns: &OwnedFd, readonly: bool) -> Result<()> {
    let csrc = cstr(src)?;
    let cdst = cstr(dst)?;
    // SAFETY: open_tree with a valid C string; returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            csrc.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(errno(format!("open_tree {}", src.display())));
    }
    // SAFETY: fd was just returned to us and is owned by nobody else.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let ro = if readonly { MOUNT_ATTR_RDONLY } else { 0 };
    if let Err(e) = set_attr(&tree, MOUNT_ATTR_IDMAP | ro, Some(userns)) {
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(Error::Io {
                context: format!("idmap {}", src.display()),
                source: e,
            });
        }
        log::info!("{} cannot be idmapped; bound as is", src.display());
        set_attr(&tree, ro, None).map_err(Error::io(format!("mount_setattr {}", src.display())))?;
    }
    let empty = c"";
    // SAFETY: attaches our detached tree at dst.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            cdst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(errno(format!(
            "move_mount {} to {}",
            src.display(),
            dst.display()
        )));
    }
    Ok(())
}

pub fn mount(src: &str, dst: &Path, fstype: &str, flags: libc::c_ulong, data: &str) -> Result<()> {
    let csrc = CString::new(src).map_err(|_| Error::InvalidArgument("NUL in source".into()))?;
    let cty = CString::new(fstype).map_err(|_| Error::InvalidArgument("NUL in type".into()))?;
    let cdata = CString::new(data).map_err(|_| Error::InvalidArgument("NUL in options".into()))?;
    let cdst = cstr(dst)?;
    // SAFETY: all pointers are valid C strings for the duration of the call.
    let r = unsafe {
        libc::mount(
            csrc.as_ptr(),
            cdst.as_ptr(),
            cty.as_ptr(),
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                cdata.as_ptr().cast()
            },
        )
    };
    if r < 0 {
        return Err(errno(format!("mount {fstype} {src} on {}", dst.display())));
    }
    Ok(())
}

/// A read-only bind of `src` at `dst` (created as an empty file or dir to match).
pub fn bind_readonly(src: &Path, dst: &Path) -> Result<()> {
    make_target(src, dst)?;
    mount(&src.to_string_lossy(), dst, "", libc::MS_BIND, "")?;
    mount(
        "",
        dst,
        "",
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID,
        "",
    )
}

/// Creates `dst` as a directory or an empty file, like `src`.
pub fn make_target(src: &Path, dst: &Path) -> Result<()> {
    let is_dir = std::fs::metadata(src)
        .map_err(Error::io(format!("stat {}", src.display())))?
        .is_dir();
    if is_dir {
        std::fs::create_dir_all(dst).map_err(Error::io(format!("mkdir {}", dst.display())))
    } else {
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)
                .map_err(Error::io(format!("mkdir {}", parent.display())))?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dst)
            .map(drop)
            .map_err(Error::io(format!("create {}", dst.display())))
    }
}

/// Detaches `path` and everything mounted below it.
pub fn detach(path: &Path) {
    if let Ok(c) = cstr(path) {
        // SAFETY: umount2 with a valid C string.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Mount points at or below `path`, from /proc/self/mountinfo.
pub fn mounts_under(path: &Path) -> Vec<String> {
    let mut text = String::new();
    let _ = File::open("/proc/self/mountinfo").and_then(|mut f| f.read_to_string(&mut text));
    let prefix = path.to_string_lossy().to_string();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .map(str::to_string)
        .collect()
}

/// Removes a directory tree that must hold no mounts any more: refuses (and keeps it) when
/// something is still mounted below, so a failed unmount can never delete a layer's content.
pub fn remove_unmounted_tree(path: &Path) -> Result<()> {
    let left = mounts_under(path);
    if !left.is_empty() {
        return Err(Error::Other(format!(
            "{} still has mounts ({}); not removed",
            path.display(),
            left.join(", ")
        )));
    }
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io {
            context: format!("remove {}", path.display()),
            source: e,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn idmapped_bind_shows_root_files_as_the_mapped_uid() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        std::fs::write(src.join("f"), "x").unwrap();
        let ns = user_namespace(&[(0, 1_000_000_000, 65535), (65535, 0, 1)]).unwrap();
        idmapped_bind(&src, &dst, &ns, true).unwrap();
        let uid = std::fs::metadata(dst.join("f")).map(|m| m.uid());
        let write = std::fs::write(dst.join("g"), "y");
        detach(&dst);
        assert_eq!(uid.unwrap(), 1_000_000_000);
        assert!(write.is_err(), "read-only idmapped bind accepted a write");
        assert!(mounts_under(&dst).is_empty());
        remove_unmounted_tree(dir.path()).unwrap();
    }

    #[test]
    fn a_tree_with_mounts_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m");
        std::fs::create_dir_all(&m).unwrap();
        mount("tmpfs", &m, "tmpfs", 0, "size=1m").unwrap();
        std::fs::write(m.join("keep"), "x").unwrap();
        let r = remove_unmounted_tree(dir.path());
        let kept = m.join("keep").exists();
        detach(&m);
        assert!(r.is_err());
        assert!(kept);
    }
}
