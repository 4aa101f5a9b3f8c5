//! Persistent network namespaces: a file bind-mounted onto a namespace so it outlives
//! the thread that created it and can be handed to plugins and runc by path.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::error::Error;

/// Creates `<dir>/<name>` holding a new network namespace whose `lo` is up.
pub(crate) async fn create(dir: PathBuf, name: String) -> Result<PathBuf, Error> {
    crate::validate::netns_name(&name).map_err(|why| Error::InvalidArgument {
        what: "netns name",
        why,
    })?;
    let path = dir.join(&name);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_path = path.clone();
    // unshare(CLONE_NEWNET) moves the calling thread into the new namespace. Doing it on
    // a thread of its own that exits afterwards keeps the namespace switch away from the
    // tokio worker threads, which must stay in the host namespace.
    std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || {
            let _ = tx.send(create_on_this_thread(&dir, &thread_path));
        })
        .map_err(|e| Error::io("spawn netns thread for", &path, e))?;
    match rx.await {
        Ok(result) => result.map(|()| path),
        Err(_) => Err(Error::io(
            "create netns",
            &path,
            io::Error::other("netns thread ended without an answer"),
        )),
    }
}

fn create_on_this_thread(dir: &Path, path: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create netns dir", dir, e))?;
    // create_new: two sandboxes must never end up sharing one namespace file.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(Error::NetnsExists {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(Error::io("create netns file", path, e)),
    }
    let made = unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::io("unshare network namespace for", path, e.into()))
        .and_then(|()| set_loopback_up().map_err(|e| Error::io("bring up lo in", path, e)))
        .and_then(|()| {
            mount(
                Some("/proc/thread-self/ns/net"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| Error::io("bind-mount netns onto", path, e.into()))
        });
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Sets IFF_UP on `lo` of the calling thread's network namespace; the kernel then
/// assigns 127.0.0.1/::1 itself.
fn set_loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) takes no pointers; a negative return is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else; OwnedFd closes it.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    use std::os::fd::AsRawFd;

    // SAFETY: ifreq is plain old data; all-zero is a valid value (empty name, no flags).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads ifr_name and writes ifr_flags inside `req`, which lives
    // across the call and has the size the kernel expects.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFFLAGS the flags member is the initialized one of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts and deletes a netns file; already unmounted or already gone is fine.
pub(crate) async fn remove(path: PathBuf) -> Result<(), Error> {
    tokio::task::spawn_blocking(move || remove_blocking(&path))
        .await
        .map_err(|e| Error::io("remove netns", PathBuf::new(), io::Error::other(e)))?
}

fn remove_blocking(path: &Path) -> Result<(), Error> {
    // MNT_DETACH: a plugin or process may still hold the namespace open; the file is
    // freed now and the namespace when the last user lets go.
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (a leftover file); ENOENT: already gone.
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(Error::io("unmount netns", path, e.into())),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove netns file", path, e)),
    }
}

/// Whether `path` is a live namespace (an nsfs mount), as opposed to missing or a
/// plain file left after an unmount. Plugins are given the path only when it is.
pub(crate) fn is_netns(path: &Path) -> bool {
    match nix::sys::statfs::statfs(path) {
        Ok(st) => st.filesystem_type() == nix::sys::statfs::NSFS_MAGIC,
        Err(_) => false,
    }
}
