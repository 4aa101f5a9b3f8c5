//! berth's RuntimeDefault seccomp filter: an allowlist, refusing everything else with EPERM.
//!
//! The policy follows the one Docker documents for its default profile
//! (docs.docker.com/engine/security/seccomp): allow what ordinary programs use, allow the
//! syscalls a capability guards only when the container holds that capability, and never allow
//! the ones that reach kernel state shared by the whole host (keyrings, kexec, swap, old ABI
//! leftovers). berth is stricter in three places: `ptrace`/`process_vm_*`/`userfaultfd` need
//! CAP_SYS_PTRACE, io_uring is refused (its ring bypasses the filter), and AF_VSOCK sockets are
//! refused. `clone3` answers ENOSYS rather than EPERM without CAP_SYS_ADMIN so libc falls back
//! to `clone`, whose namespace flags the filter can inspect.

use std::collections::HashSet;

use crate::error::Result;
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// The namespace flags of clone(2): NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID |
/// NEWNET. A clone with any of them needs CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// AF_VSOCK: host/guest sockets that escape the pod's network namespace.
const AF_VSOCK: u64 = 40;

/// Syscalls allowed to every container.
#[rustfmt::skip]
const ALWAYS: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget",
    "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64",
    "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64",
    "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range", "connect",
    "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1",
    "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old",
    "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat",
    "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod",
    "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync",
    "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64",
    "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex",
    "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake", "futimesat",
    "getcpu", "getcwd", "getdents", "getdents64", "getegid", "getegid32", "geteuid",
    "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32", "getitimer", "getpeername",
    "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid",
    "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list", "getrusage",
    "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid", "gettimeofday",
    "getuid", "getuid32", "getxattr", "inotify_add_watch", "inotify_init", "inotify_init1",
    "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents",
    "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit", "ipc", "kill",
    "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown",
    "lchown32", "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr", "_llseek",
    "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise", "map_shadow_stack",
    "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod",
    "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr",
    "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend",
    "mq_timedsend_time64", "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd",
    "msync", "munlock", "munlockall", "munmap", "nanosleep", "newfstatat", "_newselect", "open",
    "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2",
    "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl",
    "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6",
    "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
    "readlinkat", "readv", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg",
    "remap_file_pages", "removexattr", "rename", "renameat", "renameat2", "restart_syscall",
    "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
    "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select",
    "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send", "sendfile",
    "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid",
    "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid",
    "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
    "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid",
    "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr",
    "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4",
    "sigprocmask", "sigreturn", "socketcall", "socketpair", "splice", "stat", "stat64", "statfs",
    "statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo",
    "tee", "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun",
    "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create",
    "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times",
    "tkill", "truncate", "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat",
    "utime", "utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid",
    "waitpid", "write", "writev",
];

/// Syscalls only some architectures have, allowed to every container there.
#[cfg(target_arch = "x86_64")]
const ALWAYS_ARCH: &[&str] = &["arch_prctl", "modify_ldt"];
#[cfg(target_arch = "aarch64")]
#[rustfmt::skip]
const ALWAYS_ARCH: &[&str] = &[
    "arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush",
    "set_tls",
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ALWAYS_ARCH: &[&str] = &[];

/// (syscalls, capabilities any one of which allows them).
#[rustfmt::skip]
const WITH_CAPABILITY: &[(&[&str], &[Capability])] = &[
    (
        &[
            "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
            "lookup_dcookie", "mount", "mount_setattr", "move_mount", "name_to_handle_at",
            "open_tree", "perf_event_open", "pivot_root", "quotactl", "quotactl_fd",
            "setdomainname", "sethostname", "setns", "syslog", "umount", "umount2", "unshare",
        ],
        &[Capability::SysAdmin],
    ),
    (&["bpf"], &[Capability::Bpf]),
    (&["perf_event_open"], &[Capability::Perfmon]),
    (&["syslog"], &[Capability::Syslog]),
    (&["open_by_handle_at"], &[Capability::DacReadSearch]),
    (&["reboot"], &[Capability::SysBoot]),
    (&["chroot"], &[Capability::SysChroot]),
    (
        &["delete_module", "init_module", "finit_module"],
        &[Capability::SysModule],
    ),
    (&["acct"], &[Capability::SysPacct]),
    (
        &[
            "kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev",
            "ptrace", "userfaultfd",
        ],
        &[Capability::SysPtrace],
    ),
    (&["iopl", "ioperm"], &[Capability::SysRawio]),
    (
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
        &[Capability::SysTime],
    ),
    (&["vhangup"], &[Capability::SysTtyConfig]),
    (
        &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
        &[Capability::SysNice],
    ),
];

/// personality(2) personas a container may switch to: Linux, Linux32, UNAME26, both, and the
/// 0xffffffff query.
const PERSONAS: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

fn architectures() -> Option<Vec<Arch>> {
    if cfg!(target_arch = "x86_64") {
        Some(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
    } else if cfg!(target_arch = "aarch64") {
        Some(vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm])
    } else {
        None
    }
}

fn rule(names: Vec<String>, action: LinuxSeccompAction) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names);
    s.set_action(action);
    s
}

fn arg(
    index: usize,
    value: u64,
    value_two: u64,
    op: LinuxSeccompOperator,
) -> Result<LinuxSeccompArg> {
    Ok(LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .value_two(value_two)
        .op(op)
        .build()?)
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The RuntimeDefault filter for a container whose bounding set is `caps`.
pub fn runtime_default(caps: &HashSet<Capability>) -> Result<LinuxSeccomp> {
    let allow = LinuxSeccompAction::ScmpActAllow;
    let mut always = names(ALWAYS);
    always.extend(names(ALWAYS_ARCH));
    let mut rules = vec![rule(always, allow)];

    let mut granted: Vec<String> = Vec::new();
    for (list, needs) in WITH_CAPABILITY {
        if needs.iter().any(|c| caps.contains(c)) {
            for n in *list {
                if !granted.iter().any(|g| g == n) {
                    granted.push(n.to_string());
                }
            }
        }
    }
    let sys_admin = caps.contains(&Capability::SysAdmin);
    if !granted.is_empty() {
        rules.push(rule(granted, allow));
    }
    if !sys_admin {
        let mut clone = rule(names(&["clone"]), allow);
        clone.set_args(Some(vec![arg(
            0,
            CLONE_NAMESPACE_FLAGS,
            0,
            LinuxSeccompOperator::ScmpCmpMaskedEq,
        )?]));
        rules.push(clone);
        let mut clone3 = rule(names(&["clone3"]), LinuxSeccompAction::ScmpActErrno);
        clone3.set_errno_ret(Some(ENOSYS));
        rules.push(clone3);
    }
    for persona in PERSONAS {
        let mut p = rule(names(&["personality"]), allow);
        p.set_args(Some(vec![arg(
            0,
            *persona,
            0,
            LinuxSeccompOperator::ScmpCmpEq,
        )?]));
        rules.push(p);
    }
    let mut socket = rule(names(&["socket"]), allow);
    socket.set_args(Some(vec![arg(
        0,
        AF_VSOCK,
        0,
        LinuxSeccompOperator::ScmpCmpNe,
    )?]));
    rules.push(socket);

    let mut s = LinuxSeccomp::default();
    s.set_default_action(LinuxSeccompAction::ScmpActErrno);
    s.set_default_errno_ret(Some(EPERM));
    s.set_architectures(architectures());
    s.set_syscalls(Some(rules));
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The action the filter takes for `name` called with no constrained argument.
    fn plain(f: &LinuxSeccomp, name: &str) -> Option<LinuxSeccompAction> {
        f.syscalls()
            .iter()
            .flatten()
            .find(|r| r.names().iter().any(|n| n == name) && r.args().is_none())
            .map(|r| r.action())
    }

    fn default_caps() -> HashSet<Capability> {
        [
            Capability::Chown,
            Capability::Setuid,
            Capability::NetBindService,
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn denies_by_default_with_eperm() {
        let f = runtime_default(&default_caps()).expect("profile");
        assert_eq!(f.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(f.default_errno_ret(), Some(EPERM));
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                f.architectures().as_deref(),
                Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
            );
        }
        let allow = Some(LinuxSeccompAction::ScmpActAllow);
        for ok in ["read", "execve", "futex", "openat", "exit_group"] {
            assert_eq!(plain(&f, ok), allow, "{ok}");
        }
        for refused in [
            "unshare",
            "setns",
            "mount",
            "umount2",
            "keyctl",
            "add_key",
            "request_key",
            "kexec_load",
            "kexec_file_load",
            "reboot",
            "ptrace",
            "init_module",
            "bpf",
            "io_uring_setup",
            "swapon",
            "open_by_handle_at",
        ] {
            assert_eq!(plain(&f, refused), None, "{refused}");
        }
    }

    #[test]
    fn clone_without_sys_admin_is_filtered() {
        let f = runtime_default(&default_caps()).expect("profile");
        let clone: Vec<_> = f
            .syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names().iter().any(|n| n == "clone"))
            .collect();
        assert_eq!(clone.len(), 1);
        let a = clone[0].args().as_ref().expect("args")[0];
        assert_eq!(a.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(
            (a.index(), a.value(), a.value_two()),
            (0, CLONE_NAMESPACE_FLAGS, Some(0))
        );
        let clone3 = f
            .syscalls()
            .iter()
            .flatten()
            .find(|r| r.names().iter().any(|n| n == "clone3"))
            .expect("clone3");
        assert_eq!(clone3.action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3.errno_ret(), Some(ENOSYS));
    }

    #[test]
    fn capabilities_open_their_syscalls() {
        let mut caps = default_caps();
        caps.insert(Capability::SysAdmin);
        caps.insert(Capability::SysPtrace);
        let f = runtime_default(&caps).expect("profile");
        let allow = Some(LinuxSeccompAction::ScmpActAllow);
        for ok in [
            "unshare", "setns", "mount", "clone", "clone3", "ptrace", "bpf",
        ] {
            assert_eq!(plain(&f, ok), allow, "{ok}");
        }
        assert_eq!(plain(&f, "reboot"), None);
        assert_eq!(plain(&f, "keyctl"), None);
        // No duplicate names across rules: runc would add the same syscall twice.
        let mut seen = HashSet::new();
        for r in f.syscalls().iter().flatten().filter(|r| r.args().is_none()) {
            for n in r.names() {
                assert!(seen.insert(n.clone()), "{n} listed twice");
            }
        }
    }

    #[test]
    fn personality_and_socket_are_argument_checked() {
        let f = runtime_default(&default_caps()).expect("profile");
        assert_eq!(plain(&f, "personality"), None);
        assert_eq!(plain(&f, "socket"), None);
        let personas: Vec<u64> = f
            .syscalls()
            .iter()
            .flatten()
            .filter(|r| *r.names() == ["personality"])
            .map(|r| r.args().as_ref().expect("args")[0].value())
            .collect();
        assert_eq!(personas, PERSONAS);
    }
}
