//! The guest's own filesystems, mounted once at start-up.

use std::ffi::CStr;
use std::io;
use std::path::Path;

use crate::sys;

struct BootMount {
    fstype: &'static CStr,
    target: &'static CStr,
    flags: libc::c_ulong,
    data: Option<&'static CStr>,
}

const NOSUID_NODEV: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;

/// In order: /dev/shm and /dev/pts live on /dev.
const MOUNTS: &[BootMount] = &[
    BootMount {
        fstype: c"proc",
        target: c"/proc",
        flags: NOSUID_NODEV | libc::MS_NOEXEC,
        data: None,
    },
    BootMount {
        fstype: c"sysfs",
        target: c"/sys",
        flags: NOSUID_NODEV | libc::MS_NOEXEC,
        data: None,
    },
    BootMount {
        fstype: c"devtmpfs",
        target: c"/dev",
        flags: libc::MS_NOSUID,
        data: Some(c"mode=0755"),
    },
    BootMount {
        fstype: c"tmpfs",
        target: c"/dev/shm",
        flags: NOSUID_NODEV,
        data: Some(c"mode=1777"),
    },
    BootMount {
        fstype: c"devpts",
        target: c"/dev/pts",
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: Some(c"newinstance,ptmxmode=0666,mode=0620"),
    },
    BootMount {
        fstype: c"tmpfs",
        target: c"/run",
        flags: NOSUID_NODEV,
        data: Some(c"mode=0755"),
    },
    BootMount {
        fstype: c"tmpfs",
        target: c"/tmp",
        flags: NOSUID_NODEV,
        data: Some(c"mode=1777"),
    },
];

/// Mounts the guest's filesystems; returns what failed, in words. The guest root is the
/// host's (read-only to us), so mount points on it must exist; those on /dev are made.
pub fn mount_all() -> Vec<String> {
    let mut problems = Vec::new();
    for m in MOUNTS {
        let target = m.target.to_string_lossy();
        let on_dev = target.starts_with("/dev/");
        if on_dev {
            if let Err(e) = std::fs::create_dir(Path::new(&*target)) {
                if e.kind() != io::ErrorKind::AlreadyExists {
                    problems.push(format!("create mount point {target}: {e}"));
                    continue;
                }
            }
        } else if !Path::new(&*target).is_dir() {
            problems.push(format!(
                "mount point {target} is missing in the guest root (the host creates /proc /sys /dev /run /tmp there)"
            ));
            continue;
        }
        let r = sys::mount(Some(m.fstype), m.target, Some(m.fstype), m.flags, m.data);
        match r {
            Ok(()) => {}
            // The kernel mounted devtmpfs on /dev itself.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && target == "/dev" => {}
            Err(e) => problems.push(format!(
                "mount {} on {target}: {e}",
                m.fstype.to_string_lossy()
            )),
        }
    }
    problems
}
