//! Boots one User-Mode Linux guest kernel for a sandbox, confined on the host:
//! - its own mount namespace whose root is the sandbox directory (pivot_root), so no hostfs path,
//!   `..` or symlink inside the guest can name a host file outside that directory;
//! - its own PID namespace (the kernel process is PID 1 there: when it dies, every helper
//!   process it made dies with it);
//! - an unprivileged host uid through its own user namespace (guest root = host uid
//!   `host_uid`; the rootfs is idmapped to it), no new privileges;
//! - the pod's network namespace (its tap device is there) and the pod's cgroup.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

pub struct VmSpec {
    /// The sandbox directory: becomes the kernel's `/`.
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub agent: PathBuf,
    pub memory_mb: u64,
    pub host_uid: u32,
    /// The pod's network namespace (a bind-mounted nsfs file), if it has one.
    pub netns: Option<PathBuf>,
    /// Tap device name (inside `netns`) and the MAC the guest's eth0 starts with.
    pub tap: Option<(String, String)>,
    /// `cgroup.procs` files the kernel process joins before it starts.
    pub cgroup_procs: Vec<PathBuf>,
    /// The kernel's own stdout/stderr (boot noise, panics).
    pub log: PathBuf,
    /// Scheduling niceness of the kernel's processes: a guest booted ahead of its pod yields
    /// the CPU to pods starting now.
    pub nice: i32,
}

pub struct Vm {
    pub pid: i32,
    /// Host → guest line (the guest's fd 3).
    pub to_guest: File,
    /// Guest → host line (the guest's fd 4).
    pub from_guest: File,
}

/// Sub-directories of the sandbox directory, as the kernel sees them after pivot_root.
pub const GUEST_ROOT: &str = "guest";
pub const CONTAINERS: &str = "c";

/// Libraries the (dynamically linked) kernel binary needs, from `ldd`.
fn kernel_libraries(kernel: &Path) -> Result<Vec<PathBuf>> {
    let mut cmd = std::process::Command::new("ldd");
    cmd.arg(kernel);
    let out = crate::cmd::output(cmd, None)?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.trim().split(' ').next()?,
                None => l.split(' ').next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Lays out the sandbox directory: a mount of its own (shared, so what the shim mounts under it
/// later reaches the kernel's namespace), the kernel, its libraries, the agent as the guest's
/// `/init`, and a tmpfs for the guest's memory file.
pub fn prepare_dir(spec: &VmSpec) -> Result<()> {
    let d = &spec.dir;
    for sub in [
        "bin",
        "tmp",
        "old",
        "dev",
        CONTAINERS,
        "guest/proc",
        "guest/sys",
        "guest/dev",
        "guest/run",
        "guest/tmp",
    ] {
        std::fs::create_dir_all(d.join(sub))
            .map_err(Error::io(format!("mkdir {}", d.join(sub).display())))?;
    }
    let ds = d.to_string_lossy().to_string();
    sys::mount(&ds, d, "", libc::MS_BIND, "")?;
    sys::mount("", d, "", libc::MS_PRIVATE, "")?;
    sys::mount("", d, "", libc::MS_SHARED, "")?;
    sys::bind_readonly(&spec.kernel, &d.join("bin/linux.uml"))?;
    for lib in kernel_libraries(&spec.kernel)? {
        let rel = lib.strip_prefix("/").unwrap_or(&lib);
        sys::bind_readonly(&lib, &d.join(rel))?;
    }
    sys::bind_readonly(&spec.agent, &d.join("guest/init"))?;
    if spec.tap.is_some() {
        tun_device(&d.join("dev"), spec.host_uid)?;
    }
    // UML keeps guest memory in an unlinked file in $TMPDIR: room for all of it.
    let uid = spec.host_uid;
    sys::mount(
        "tmpfs",
        &d.join("tmp"),
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        &format!(
            "size={}m,mode=0700,uid={uid},gid={uid}",
            spec.memory_mb + 64
        ),
    )?;
    Ok(())
}

/// The kernel opens `/dev/net/tun` as its unprivileged uid: a node of its own (hosts often make
/// the shared one 0600, and /run may be nodev), on a small tmpfs that allows devices.
fn tun_device(dev: &Path, uid: u32) -> Result<()> {
    std::fs::create_dir_all(dev).map_err(Error::io(format!("mkdir {}", dev.display())))?;
    sys::mount(
        "tmpfs",
        dev,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "size=64k,mode=0755",
    )?;
    let net = dev.join("net");
    std::fs::create_dir_all(&net).map_err(Error::io(format!("mkdir {}", net.display())))?;
    let tun = net.join("tun");
    let path = c(tun.as_os_str().as_bytes())?;
    // SAFETY: mknod/chown on a C string we own.
    let r = unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(10, 200)) };
    if r < 0 {
        return Err(Error::Io {
            context: format!("mknod {}", tun.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: as above.
    if unsafe { libc::chown(path.as_ptr(), uid, uid) } < 0 {
        return Err(Error::Io {
            context: format!("chown {}", tun.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn c(s: impl AsRef<[u8]>) -> Result<CString> {
    CString::new(s.as_ref()).map_err(|_| Error::InvalidArgument("NUL in argument".into()))
}

/// The kernel command line.
pub fn kernel_args(spec: &VmSpec) -> Vec<String> {
    let mut a = vec![
        "linux.uml".to_string(),
        format!("mem={}M", spec.memory_mb),
        "rootfstype=hostfs".into(),
        format!("rootflags=/{GUEST_ROOT}"),
        // The kernel's `/` is already the sandbox directory; hostfs is confined to it.
        "hostfs=/".into(),
        "rw".into(),
        "init=/init".into(),
        "selinux=0".into(),
        "apparmor=0".into(),
        "lsm=".into(),
        "loglevel=0".into(),
        "quiet".into(),
        // Half of this kernel's boot is benchmarking RAID6 and XOR routines (~0.85 s here);
        // nothing in a sandbox uses md or btrfs RAID.
        "initcall_blacklist=raid6_select_algo,calibrate_xor_blocks".into(),
        "con=null".into(),
        "con0=null".into(),
        "con1=fd:3,fd:4".into(),
        "ssl=null".into(),
        "uml_dir=/tmp".into(),
    ];
    if let Some((tap, mac)) = &spec.tap {
        a.push(format!("eth0=tuntap,{tap},{mac}"));
    }
    a
}

// Steps reported by a child that failed before exec.
const STEPS: [&str; 10] = [
    "join cgroup",
    "enter network namespace",
    "make mounts slave",
    "chdir to sandbox dir",
    "pivot_root",
    "detach old root",
    "drop groups",
    "enter user namespace",
    "set ids",
    "exec kernel",
];

/// Starts the kernel. Everything the child needs is prepared here; the child itself only makes
/// system calls (it is a clone of a multi-threaded process).
pub fn spawn(spec: &VmSpec) -> Result<Vm> {
    let userns = sys::user_namespace(&[(0, spec.host_uid, 65536)])?;
    let netns = match &spec.netns {
        Some(p) => Some(File::open(p).map_err(Error::io(format!("open netns {}", p.display())))?),
        None => None,
    };
    let mut cgroups = Vec::new();
    for p in &spec.cgroup_procs {
        match std::fs::OpenOptions::new().write(true).open(p) {
            Ok(f) => cgroups.push(f),
            Err(e) => log::warn!("open {}: {e}", p.display()),
        }
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(Error::io(format!("open {}", spec.log.display())))?;
    let null = File::open("/dev/null").map_err(Error::io("open /dev/null"))?;
    let (g_in, h_out) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (h_in, g_out) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;

    let dir = c(spec.dir.as_os_str().as_bytes())?;
    let dot = c(".")?;
    let old = c("old")?;
    let slash_old = c("/old")?;
    let slash = c("/")?;
    let kernel = c("/bin/linux.uml")?;
    let args: Vec<CString> = kernel_args(spec).iter().map(c).collect::<Result<_>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let env = [c("TMPDIR=/tmp")?, c("PATH=/bin")?];
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let zero = b"0";
    let fds_in = [
        g_in.as_raw_fd(),
        g_out.as_raw_fd(),
        null.as_raw_fd(),
        log.as_raw_fd(),
    ];
    let cg_fds: Vec<i32> = cgroups.iter().map(|f| f.as_raw_fd()).collect();
    let net_fd = netns.as_ref().map(|f| f.as_raw_fd());
    let user_fd = userns.as_raw_fd();
    let err_fd = err_w.as_raw_fd();
    let nice = spec.nice;

    let child = move || -> isize {
        // SAFETY (whole block): raw system calls on fds and C strings prepared by the parent;
        // no allocation, no locks. On failure the step and errno go to the error pipe.
        unsafe {
            let fail = |step: usize| -> isize {
                let e = *libc::__errno_location();
                let msg = [(step as i32).to_ne_bytes(), e.to_ne_bytes()].concat();
                libc::write(err_fd, msg.as_ptr().cast(), msg.len());
                libc::_exit(127)
            };
            for fd in &cg_fds {
                if libc::write(*fd, zero.as_ptr().cast(), 1) < 0 {
                    return fail(0);
                }
            }
            if nice != 0 {
                libc::setpriority(libc::PRIO_PROCESS, 0, nice);
            }
            if let Some(fd) = net_fd {
                if libc::setns(fd, libc::CLONE_NEWNET) < 0 {
                    return fail(1);
                }
            }
            if libc::mount(
                std::ptr::null(),
                slash.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ) < 0
            {
                return fail(2);
            }
            if libc::chdir(dir.as_ptr()) < 0 {
                return fail(3);
            }
            if libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), old.as_ptr()) < 0 {
                return fail(4);
            }
            if libc::umount2(slash_old.as_ptr(), libc::MNT_DETACH) < 0 {
                return fail(5);
            }
            libc::chdir(slash.as_ptr());
            if libc::setgroups(0, std::ptr::null()) < 0 {
                return fail(6);
            }
            if libc::setns(user_fd, libc::CLONE_NEWUSER) < 0 {
                return fail(7);
            }
            if libc::setresgid(0, 0, 0) < 0 || libc::setresuid(0, 0, 0) < 0 {
                return fail(8);
            }
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            // Move the sources out of the way first: a source may sit on a target number.
            let mut high = [0i32; 4];
            for (i, fd) in fds_in.iter().enumerate() {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100);
            }
            libc::dup2(high[0], 3);
            libc::dup2(high[1], 4);
            libc::dup2(high[2], 0);
            libc::dup2(high[3], 1);
            libc::dup2(high[3], 2);
            libc::execve(kernel.as_ptr(), argv.as_ptr(), envp.as_ptr());
            fail(9)
        }
    };
    let mut stack = vec![0u8; 256 * 1024];
    let flags = nix::sched::CloneFlags::CLONE_NEWNS | nix::sched::CloneFlags::CLONE_NEWPID;
    // SAFETY: the callback only makes system calls on data that outlives the call (the parent
    // waits on the error pipe before dropping anything), and the stack is ours.
    let pid = unsafe { nix::sched::clone(Box::new(child), &mut stack, flags, Some(libc::SIGCHLD)) }
        .map_err(|e| Error::Other(format!("clone the sandbox kernel: {e}")))?;
    drop(err_w);
    let mut report = Vec::new();
    let _ = File::from(err_r).read_to_end(&mut report);
    drop((g_in, g_out));
    if report.len() >= 8 {
        let step = i32::from_ne_bytes([report[0], report[1], report[2], report[3]]) as usize;
        let e = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
        // SAFETY: reaps our own failed child.
        unsafe { libc::waitpid(pid.as_raw(), std::ptr::null_mut(), 0) };
        return Err(Error::Other(format!(
            "start sandbox kernel {}: {}: {}",
            spec.kernel.display(),
            STEPS.get(step).copied().unwrap_or("setup"),
            std::io::Error::from_raw_os_error(e)
        )));
    }
    drop(stack);
    Ok(Vm {
        pid: pid.as_raw(),
        to_guest: File::from(h_out),
        from_guest: File::from(h_in),
    })
}

/// Sends SIGKILL to the kernel (PID 1 of its namespace: its helpers go with it).
pub fn kill(pid: i32) {
    if pid > 0 {
        // SAFETY: plain kill(2) of a pid we started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Undoes `prepare_dir`: unmounts everything under the directory and removes it.
pub fn remove_dir(dir: &Path) -> Result<()> {
    sys::detach(dir);
    sys::remove_unmounted_tree(dir)
}

/// `<dir>.<ext>` beside the sandbox directory (whose name contains dots: `k8s.io-<id>`).
pub fn sibling(dir: &Path, ext: &str) -> PathBuf {
    let mut name = dir.as_os_str().to_os_string();
    name.push(format!(".{ext}"));
    PathBuf::from(name)
}
