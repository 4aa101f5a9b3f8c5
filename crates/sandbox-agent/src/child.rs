//! What runs between fork(2) and execve(2).
//!
//! The agent is multi-threaded, so a forked child may only make system calls on data prepared
//! before the fork (no allocation, no locks): every path and argument is a `CString` in a
//! [`ChildPlan`], and a failure is reported to the agent as a fixed-size record (stage, index,
//! errno) on a close-on-exec pipe. The agent turns the record into a message with
//! [`describe`]; an exec that succeeds closes the pipe, which the agent reads as end of file.
//!
//! Two forks: the first child (the "intermediate") enters the namespaces (unshare for a new
//! container, setns into an existing one for an exec) and forks the process itself, so that
//! the new PID namespace applies to it; it reports that pid and exits.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use libc::{c_char, c_int, c_ulong};

use crate::error::AgentError;

/// Where a child stopped. Numbers travel on the error pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stage {
    /// Not a failure: the container's init is ready and waits for StartContainer.
    Ready = 0,
    Unshare = 1,
    Setns = 2,
    Fork = 3,
    Stdio = 4,
    Setsid = 5,
    Ctty = 6,
    MountPrivate = 7,
    MountTarget = 8,
    Mount = 9,
    Remount = 10,
    Propagation = 11,
    Devices = 12,
    RootReadonly = 13,
    PivotRoot = 14,
    Hostname = 15,
    Rlimit = 16,
    NoNewPrivs = 17,
    Setgroups = 18,
    Setgid = 19,
    Setuid = 20,
    Chdir = 21,
    Exec = 22,
    /// Allocating the terminal from the container's /dev/ptmx.
    Pty = 23,
    /// Dropping from the bounding set (index: the capability), setting the sets, raising
    /// ambient ones.
    Caps = 24,
}

impl Stage {
    fn from_u32(v: u32) -> Option<Stage> {
        use Stage::*;
        const ALL: [Stage; 25] = [
            Ready,
            Unshare,
            Setns,
            Fork,
            Stdio,
            Setsid,
            Ctty,
            MountPrivate,
            MountTarget,
            Mount,
            Remount,
            Propagation,
            Devices,
            RootReadonly,
            PivotRoot,
            Hostname,
            Rlimit,
            NoNewPrivs,
            Setgroups,
            Setgid,
            Setuid,
            Chdir,
            Exec,
            Pty,
            Caps,
        ];
        ALL.get(v as usize).copied()
    }
}

pub const RECORD_LEN: usize = 12;

pub fn encode(stage: Stage, index: u32, errno: i32) -> [u8; RECORD_LEN] {
    let mut r = [0u8; RECORD_LEN];
    r[..4].copy_from_slice(&(stage as u32).to_ne_bytes());
    r[4..8].copy_from_slice(&index.to_ne_bytes());
    r[8..].copy_from_slice(&errno.to_ne_bytes());
    r
}

pub fn decode(r: &[u8; RECORD_LEN]) -> Option<(Stage, u32, i32)> {
    let w = |i: usize| [r[i], r[i + 1], r[i + 2], r[i + 3]];
    Some((
        Stage::from_u32(u32::from_ne_bytes(w(0)))?,
        u32::from_ne_bytes(w(4)),
        i32::from_ne_bytes(w(8)),
    ))
}

/// How the intermediate child enters the process's namespaces.
pub enum Namespaces {
    /// New namespaces (`CLONE_NEW*` flags): a container's init.
    Unshare(c_int),
    /// Existing ones, joined in this order: an exec in a container.
    Join(Vec<OwnedFd>),
}

/// Device nodes and links a fresh tmpfs on a container's /dev gets (as runc makes them).
pub struct DevNodes {
    pub nodes: Vec<(CString, libc::dev_t)>,
    pub links: Vec<(CString, CString)>,
}

/// One mount of a container, with every path resolved under the root the agent sees.
pub struct MountStep {
    /// Directories to create first (missing mount points), outermost first.
    pub dirs: Vec<CString>,
    /// The target is a file to create (empty) when missing.
    pub file: bool,
    pub target: CString,
    pub source: Option<CString>,
    pub fstype: Option<CString>,
    pub flags: c_ulong,
    pub data: Option<CString>,
    /// Bind mounts ignore `MS_RDONLY`: a remount makes them read-only.
    pub remount_ro: bool,
    pub propagation: c_ulong,
    pub devices: Option<DevNodes>,
}

/// The container init's filesystem: its root, mounts, pivot and hostname.
pub struct RootPlan {
    pub root: CString,
    pub readonly: bool,
    pub mounts: Vec<MountStep>,
    /// The process's cwd and its parents under the root, created when missing (as runc does).
    pub cwd_dirs: Vec<CString>,
    pub hostname: Option<CString>,
}

pub struct ChildPlan {
    pub ns: Namespaces,
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// With a terminal: the socket the child sends the terminal's master on (`-1`: none).
    /// The terminal comes from the container's own devpts (as runc makes it), so that
    /// `/dev/pts/N` names it inside the container.
    pub console: RawFd,
    pub winsize: Option<(u16, u16)>,
    pub root: Option<RootPlan>,
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
    pub no_new_privs: bool,
    /// The process's capability sets; None keeps all of them.
    pub caps: Option<CapPlan>,
    pub umask: libc::mode_t,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
    pub cwd: CString,
    pub candidates: Vec<CString>,
    // Owners of what the pointer arrays point to.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const c_char>,
}

/// Capability sets as masks (bit n = capability n), as the OCI process names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapPlan {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// Before the uid changes: drop what the bounding set does not name, keep the permitted set
/// across setuid.
///
/// # Safety
/// Raw system calls only (the caller is a forked child).
unsafe fn caps_before_setuid(caps: &CapPlan, err: RawFd) {
    // SAFETY: prctl(2) with integer arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0 {
            fail(err, Stage::Caps, 100)
        }
        for c in 0..=crate::spec::LAST_CAP {
            if caps.bounding & (1 << c) == 0
                && libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) < 0
                && *libc::__errno_location() != libc::EINVAL
            {
                fail(err, Stage::Caps, c as usize)
            }
        }
    }
}

/// After it: the effective, permitted and inheritable sets, then the ambient ones.
///
/// # Safety
/// Raw system calls only (the caller is a forked child).
unsafe fn caps_after_setuid(caps: &CapPlan, err: RawFd) {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let half = |m: u64, i: usize| (m >> (32 * i)) as u32;
    let mut data = [CapData::default(); 2];
    for (i, d) in data.iter_mut().enumerate() {
        *d = CapData {
            effective: half(caps.effective, i),
            permitted: half(caps.permitted, i),
            inheritable: half(caps.inheritable, i),
        };
    }
    // SAFETY: capset(2) with a version-3 header and its two data words; prctl(2) with
    // integer arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0 {
            fail(err, Stage::Caps, 101)
        }
        if libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        ) < 0
        {
            fail(err, Stage::Caps, 102)
        }
        for c in 0..=crate::spec::LAST_CAP {
            if caps.ambient & (1 << c) != 0
                && libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    c as libc::c_ulong,
                    0,
                    0,
                ) < 0
            {
                fail(err, Stage::Caps, c as usize)
            }
        }
    }
}

/// Messages for the records: what each index of a stage refers to.
#[derive(Clone, Debug, Default)]
pub struct PlanInfo {
    pub arg0: String,
    pub cwd: String,
    pub rootfs: String,
    pub hostname: String,
    pub mounts: Vec<String>,
    pub rlimits: Vec<String>,
    pub namespaces: Vec<&'static str>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl ChildPlan {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ns: Namespaces,
        stdio: (RawFd, RawFd, RawFd),
        console: RawFd,
        root: Option<RootPlan>,
        argv: Vec<CString>,
        envp: Vec<CString>,
        cwd: CString,
        candidates: Vec<CString>,
    ) -> ChildPlan {
        let ptrs = |v: &[CString]| -> Vec<*const c_char> {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        // The pointers point into the CStrings' heap buffers, which moving the Vecs into the
        // plan does not move.
        let argv_ptrs = ptrs(&argv);
        let envp_ptrs = ptrs(&envp);
        ChildPlan {
            ns,
            stdin: stdio.0,
            stdout: stdio.1,
            stderr: stdio.2,
            console,
            winsize: None,
            root,
            rlimits: Vec::new(),
            no_new_privs: false,
            caps: None,
            umask: 0o022,
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            cwd,
            candidates,
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
        }
    }
}

/// The pipes a child reports on; the agent keeps the other ends.
pub struct ChildFds {
    /// Error records (and Ready); close-on-exec, so exec closes it.
    pub err: RawFd,
    /// The intermediate writes the process's pid here.
    pub pid: RawFd,
    /// The init blocks reading one byte here before exec (`-1`: do not wait).
    pub start: RawFd,
}

/// Forks the intermediate child; returns its pid. The caller closes its copies of the
/// child's pipe ends afterwards.
pub fn fork_intermediate(plan: &ChildPlan, fds: &ChildFds) -> io::Result<i32> {
    // SAFETY: the child runs only `intermediate`, which makes system calls on the plan's
    // prepared data and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: we are the freshly forked child.
        unsafe { intermediate(plan, fds) }
    }
    Ok(pid)
}

fn errno() -> c_int {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Writes a record; nothing else can be done if that fails.
///
/// # Safety
/// Only in a forked child.
unsafe fn report(fd: RawFd, stage: Stage, index: u32, err: c_int) {
    let r = encode(stage, index, err);
    // SAFETY: `r` is a valid buffer of RECORD_LEN bytes.
    unsafe { libc::write(fd, r.as_ptr().cast(), RECORD_LEN) };
}

/// # Safety
/// Only in a forked child.
unsafe fn fail(fd: RawFd, stage: Stage, index: usize) -> ! {
    let e = errno();
    // SAFETY: forwarded from the caller.
    unsafe {
        report(fd, stage, index as u32, e);
        libc::_exit(127)
    }
}

/// # Safety
/// Only in a child just forked by `fork_intermediate`.
unsafe fn intermediate(plan: &ChildPlan, fds: &ChildFds) -> ! {
    // SAFETY: system calls on data the plan owns; this process is single-threaded.
    unsafe {
        match &plan.ns {
            Namespaces::Unshare(flags) => {
                if libc::unshare(*flags) < 0 {
                    fail(fds.err, Stage::Unshare, 0)
                }
            }
            Namespaces::Join(nsfds) => {
                for (i, fd) in nsfds.iter().enumerate() {
                    if libc::setns(fd.as_raw_fd(), 0) < 0 {
                        fail(fds.err, Stage::Setns, i)
                    }
                }
            }
        }
        let pid = libc::fork();
        if pid < 0 {
            fail(fds.err, Stage::Fork, 0)
        }
        if pid == 0 {
            process(plan, fds)
        }
        let b = pid.to_ne_bytes();
        libc::write(fds.pid, b.as_ptr().cast(), b.len());
        libc::_exit(0)
    }
}

/// Closes every descriptor from 3 up except `keep` (entries < 3 are ignored).
///
/// # Safety
/// Only in a forked child.
unsafe fn close_other_fds(mut keep: [c_int; 3]) {
    keep.sort_unstable();
    let close_range = |lo: libc::c_uint, hi: libc::c_uint| {
        // SAFETY: closing descriptors has no memory effects in this single-threaded child.
        unsafe {
            if libc::syscall(libc::SYS_close_range, lo, hi, 0) < 0 {
                for fd in lo..=hi.min(4096) {
                    libc::close(fd as c_int);
                }
            }
        }
    };
    let mut from: libc::c_uint = 3;
    for k in keep {
        if k < 3 {
            continue;
        }
        let k = k as libc::c_uint;
        if k > from {
            close_range(from, k - 1);
        }
        from = from.max(k + 1);
    }
    close_range(from, libc::c_uint::MAX);
}

/// # Safety
/// Only in a forked child.
unsafe fn reset_signals() {
    // SAFETY: plain-data structs filled by libc; no memory is shared with other threads.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut sa.sa_mask);
        for sig in 1..65 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

fn opt_ptr(c: &Option<CString>) -> *const c_char {
    c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
}

/// # Safety
/// Only in a forked child.
unsafe fn mkdir_all(dirs: &[CString]) -> bool {
    for d in dirs {
        // SAFETY: `d` is a valid NUL-terminated path.
        if unsafe { libc::mkdir(d.as_ptr(), 0o755) } < 0 && errno() != libc::EEXIST {
            return false;
        }
    }
    true
}

/// # Safety
/// Only in a forked child.
unsafe fn setup_root(r: &RootPlan, err: RawFd) {
    // SAFETY: system calls on the plan's NUL-terminated strings, in a single-threaded child.
    unsafe {
        let null = std::ptr::null::<c_char>();
        if libc::mount(
            null,
            c"/".as_ptr(),
            null,
            libc::MS_REC | libc::MS_PRIVATE,
            null.cast(),
        ) < 0
        {
            fail(err, Stage::MountPrivate, 0)
        }
        for (i, m) in r.mounts.iter().enumerate() {
            if !mkdir_all(&m.dirs) {
                fail(err, Stage::MountTarget, i)
            }
            if m.file {
                let fd = libc::open(
                    m.target.as_ptr(),
                    libc::O_RDONLY | libc::O_CREAT | libc::O_CLOEXEC,
                    0o644,
                );
                if fd < 0 {
                    fail(err, Stage::MountTarget, i)
                }
                libc::close(fd);
            }
            if libc::mount(
                opt_ptr(&m.source),
                m.target.as_ptr(),
                opt_ptr(&m.fstype),
                m.flags,
                opt_ptr(&m.data).cast(),
            ) < 0
            {
                fail(err, Stage::Mount, i)
            }
            if m.remount_ro {
                let keep = m.flags & (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC);
                let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | keep;
                if libc::mount(null, m.target.as_ptr(), null, flags, null.cast()) < 0 {
                    fail(err, Stage::Remount, i)
                }
            }
            if m.propagation != 0
                && libc::mount(null, m.target.as_ptr(), null, m.propagation, null.cast()) < 0
            {
                fail(err, Stage::Propagation, i)
            }
            if let Some(dev) = &m.devices {
                for (path, rdev) in &dev.nodes {
                    if libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, *rdev) < 0
                        && errno() != libc::EEXIST
                    {
                        fail(err, Stage::Devices, i)
                    }
                }
                for (target, link) in &dev.links {
                    if libc::symlink(target.as_ptr(), link.as_ptr()) < 0 && errno() != libc::EEXIST
                    {
                        fail(err, Stage::Devices, i)
                    }
                }
            }
        }
        // A cwd that cannot be made shows up as the chdir failure later.
        mkdir_all(&r.cwd_dirs);
        if r.readonly {
            let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
            if libc::mount(null, r.root.as_ptr(), null, flags, null.cast()) < 0 {
                fail(err, Stage::RootReadonly, 0)
            }
        }
        // pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only
        // the container's root in this namespace.
        if libc::chdir(r.root.as_ptr()) < 0 {
            fail(err, Stage::PivotRoot, 0)
        }
        if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) < 0 {
            fail(err, Stage::PivotRoot, 1)
        }
        if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) < 0 {
            fail(err, Stage::PivotRoot, 2)
        }
        if libc::chdir(c"/".as_ptr()) < 0 {
            fail(err, Stage::PivotRoot, 3)
        }
        if let Some(h) = &r.hostname {
            if libc::sethostname(h.as_ptr(), h.as_bytes().len()) < 0 {
                fail(err, Stage::Hostname, 0)
            }
        }
    }
}

/// Opens a terminal on the (container's) /dev/ptmx, sends its master to the agent and makes
/// the slave this process's stdio and controlling terminal.
///
/// # Safety
/// Only in a forked child, after setsid.
unsafe fn terminal(plan: &ChildPlan, err: RawFd) {
    // SAFETY: system calls on local plain data in a single-threaded child.
    unsafe {
        let master = libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if master < 0 {
            fail(err, Stage::Pty, 0)
        }
        let unlock: c_int = 0;
        if libc::ioctl(master, libc::TIOCSPTLCK, &unlock) < 0 {
            fail(err, Stage::Pty, 1)
        }
        let slave = libc::ioctl(master, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY);
        if slave < 0 {
            fail(err, Stage::Pty, 2)
        }
        if let Some((w, h)) = plan.winsize {
            let ws = libc::winsize {
                ws_row: h,
                ws_col: w,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            libc::ioctl(slave, libc::TIOCSWINSZ, &ws);
        }
        if !send_fd(plan.console, master) {
            fail(err, Stage::Pty, 3)
        }
        libc::close(master);
        libc::close(plan.console);
        if libc::dup2(slave, 0) < 0 || libc::dup2(slave, 1) < 0 || libc::dup2(slave, 2) < 0 {
            fail(err, Stage::Stdio, 0)
        }
        if slave > 2 {
            libc::close(slave);
        }
        if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            fail(err, Stage::Ctty, 0)
        }
    }
}

/// Sends `fd` over a unix socket (SCM_RIGHTS) with a stack buffer.
///
/// # Safety
/// Only in a forked child.
unsafe fn send_fd(sock: RawFd, fd: RawFd) -> bool {
    // SAFETY: msghdr and its control buffer are local; the CMSG macros stay inside it.
    unsafe {
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        // CMSG_SPACE(sizeof(int)) is 24 on 64-bit; u64s keep the buffer aligned.
        let mut control = [0u64; 4];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<c_int>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return false;
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<c_int>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>(), fd);
        libc::sendmsg(sock, &msg, 0) == 1
    }
}

/// The first candidate that is an executable regular file, or the errno execvp would give.
///
/// # Safety
/// Only in a forked child.
unsafe fn resolve(candidates: &[CString]) -> Result<&CStr, c_int> {
    let mut err = libc::ENOENT;
    for c in candidates {
        // SAFETY: `st` is plain data stat fills; `c` is NUL-terminated.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::stat(c.as_ptr(), &mut st) == 0 {
                if st.st_mode & libc::S_IFMT == libc::S_IFREG
                    && libc::access(c.as_ptr(), libc::X_OK) == 0
                {
                    return Ok(c);
                }
                err = libc::EACCES;
            } else if errno() == libc::EACCES {
                err = libc::EACCES;
            }
        }
    }
    Err(err)
}

/// The process itself: stdio, session, root, limits, identity, then exec.
///
/// # Safety
/// Only in the grandchild forked by `intermediate`.
unsafe fn process(plan: &ChildPlan, fds: &ChildFds) -> ! {
    let err = fds.err;
    // SAFETY: system calls on the plan's prepared data in a single-threaded child.
    unsafe {
        reset_signals();
        libc::umask(0);
        if libc::dup2(plan.stdin, 0) < 0
            || libc::dup2(plan.stdout, 1) < 0
            || libc::dup2(plan.stderr, 2) < 0
        {
            fail(err, Stage::Stdio, 0)
        }
        close_other_fds([err, fds.start, plan.console]);
        if libc::setsid() < 0 {
            fail(err, Stage::Setsid, 0)
        }
        if let Some(root) = &plan.root {
            setup_root(root, err);
        }
        if plan.console >= 0 {
            terminal(plan, err);
        }
        for (i, (res, soft, hard)) in plan.rlimits.iter().enumerate() {
            let rl = libc::rlimit {
                rlim_cur: *soft,
                rlim_max: *hard,
            };
            if libc::setrlimit(*res, &rl) < 0 {
                fail(err, Stage::Rlimit, i)
            }
        }
        if plan.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            fail(err, Stage::NoNewPrivs, 0)
        }
        if let Some(caps) = &plan.caps {
            caps_before_setuid(caps, err);
        }
        if libc::setgroups(plan.groups.len(), plan.groups.as_ptr()) < 0 {
            fail(err, Stage::Setgroups, 0)
        }
        if libc::setgid(plan.gid) < 0 {
            fail(err, Stage::Setgid, 0)
        }
        if libc::setuid(plan.uid) < 0 {
            fail(err, Stage::Setuid, 0)
        }
        if let Some(caps) = &plan.caps {
            caps_after_setuid(caps, err);
        }
        libc::umask(plan.umask);
        if libc::chdir(plan.cwd.as_ptr()) < 0 {
            fail(err, Stage::Chdir, 0)
        }
        let exe = match resolve(&plan.candidates) {
            Ok(exe) => exe,
            Err(e) => {
                report(err, Stage::Exec, 0, e);
                libc::_exit(127)
            }
        };
        if fds.start >= 0 {
            report(err, Stage::Ready, 0, 0);
            let mut b = [0u8; 1];
            loop {
                let n = libc::read(fds.start, b.as_mut_ptr().cast(), 1);
                if n == 1 {
                    break;
                }
                // The agent dropped the container without starting it.
                if n == 0 || errno() != libc::EINTR {
                    libc::_exit(1)
                }
            }
            libc::close(fds.start);
        }
        libc::execve(
            exe.as_ptr(),
            plan.argv_ptrs.as_ptr(),
            plan.envp_ptrs.as_ptr(),
        );
        fail(err, Stage::Exec, 0)
    }
}

/// The error a child's record stands for, in words naming what failed.
pub fn describe(stage: Stage, index: u32, errno: i32, info: &PlanInfo) -> AgentError {
    let i = index as usize;
    let nth = |v: &[String]| v.get(i).cloned().unwrap_or_else(|| format!("#{i}"));
    let what = match stage {
        Stage::Ready => {
            return AgentError::Sys {
                what: "child reported ready out of turn".into(),
                source: io::Error::from_raw_os_error(libc::EPROTO),
            }
        }
        Stage::Unshare => "unshare mount, PID, UTS and IPC namespaces".to_string(),
        Stage::Setns => format!(
            "join the container's {} namespace",
            info.namespaces.get(i).copied().unwrap_or("?")
        ),
        Stage::Fork => "fork the process".into(),
        Stage::Stdio => "set up stdio".into(),
        Stage::Setsid => "setsid".into(),
        Stage::Ctty => "make the terminal the controlling terminal".into(),
        Stage::MountPrivate => "make mounts private".into(),
        Stage::MountTarget => format!("create the mount point of {}", nth(&info.mounts)),
        Stage::Mount => format!("mount {}", nth(&info.mounts)),
        Stage::Remount => format!("remount {} read-only", nth(&info.mounts)),
        Stage::Propagation => format!("set the propagation of {}", nth(&info.mounts)),
        Stage::Devices => format!("create device nodes for {}", nth(&info.mounts)),
        Stage::RootReadonly => format!("remount rootfs {} read-only", info.rootfs),
        Stage::PivotRoot => format!("pivot_root into {}", info.rootfs),
        Stage::Hostname => format!("sethostname {:?}", info.hostname),
        Stage::Rlimit => format!("setrlimit {}", nth(&info.rlimits)),
        Stage::NoNewPrivs => "set no_new_privs".into(),
        Stage::Setgroups => format!("setgroups {:?}", info.groups),
        Stage::Setgid => format!("setgid {}", info.gid),
        Stage::Setuid => format!("setuid {}", info.uid),
        Stage::Chdir => format!("chdir {}", info.cwd),
        Stage::Exec => format!("exec {}", info.arg0),
        Stage::Caps => match index {
            100 => "keep capabilities across setuid".into(),
            101 => "stop keeping capabilities".into(),
            102 => "set the capability sets (capset)".into(),
            c => format!("drop or raise capability {c}"),
        },
        Stage::Pty => match index {
            0 => "open the container's /dev/ptmx for a terminal".into(),
            1 => "unlock the terminal".into(),
            2 => "open the terminal's slave".into(),
            _ => "send the terminal to the agent".into(),
        },
    };
    let source = io::Error::from_raw_os_error(errno);
    let bad_request = matches!(stage, Stage::Exec | Stage::Chdir)
        && matches!(
            errno,
            libc::ENOENT | libc::EACCES | libc::ENOTDIR | libc::ENOEXEC | libc::ELOOP
        );
    if bad_request {
        AgentError::SysInvalid { what, source }
    } else {
        AgentError::Sys { what, source }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use berth_sandbox_proto::ErrorCode;

    #[test]
    fn records_round_trip() {
        for s in 0..24 {
            let stage = Stage::from_u32(s).unwrap();
            assert_eq!(stage as u32, s);
            assert_eq!(decode(&encode(stage, 7, -3)), Some((stage, 7, -3)));
        }
        assert_eq!(decode(&encode(Stage::Exec, 0, 0).map(|_| 0xff)), None);
    }

    #[test]
    fn descriptions_name_what_failed() {
        let info = PlanInfo {
            arg0: "/nope".into(),
            mounts: vec!["proc on /proc".into()],
            ..Default::default()
        };
        let e = describe(Stage::Exec, 0, libc::ENOENT, &info);
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert!(e
            .to_string()
            .starts_with("exec /nope: No such file or directory"));
        let e = describe(Stage::Mount, 0, libc::EPERM, &info);
        assert_eq!(e.code(), ErrorCode::Internal);
        assert!(e.to_string().starts_with("mount proc on /proc: "));
        assert!(describe(Stage::Mount, 5, libc::EPERM, &info)
            .to_string()
            .contains("#5"));
    }

    #[test]
    fn argv_is_null_terminated() {
        let p = ChildPlan::new(
            Namespaces::Unshare(0),
            (0, 1, 2),
            -1,
            None,
            vec![c"sh".into(), c"-c".into()],
            vec![],
            c"/".into(),
            vec![],
        );
        assert_eq!(p.argv_ptrs.len(), 3);
        assert!(p.argv_ptrs[2].is_null());
        assert_eq!(p.envp_ptrs, vec![std::ptr::null()]);
        // SAFETY: the pointer is into the plan's own CString.
        assert_eq!(unsafe { CStr::from_ptr(p.argv_ptrs[1]) }, c"-c");
    }
}
