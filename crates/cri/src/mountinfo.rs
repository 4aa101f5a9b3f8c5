//! The propagation of the host mount a path lives on, from `/proc/self/mountinfo`: a
//! bidirectional CRI mount needs a shared source, a host-to-container one a shared or slave
//! source, or the container would silently see nothing propagate.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Propagation {
    Shared,
    Slave,
    Private,
}

/// Undoes the kernel's octal escapes (`\040` for a space) in a mountinfo path.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let digits = &b[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (mount point, propagation) of the mount `path` is on, given mountinfo text. Later lines
/// win over earlier ones at the same mount point: they are mounted on top.
pub(crate) fn find(mountinfo: &str, path: &Path) -> Option<(PathBuf, Propagation)> {
    let mut best: Option<(PathBuf, Propagation)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 7 {
            continue;
        }
        let mount_point = PathBuf::from(unescape(fields[4]));
        if !path.starts_with(&mount_point) {
            continue;
        }
        let optional = fields[6..].iter().take_while(|f| **f != "-");
        let mut propagation = Propagation::Private;
        for f in optional {
            if f.starts_with("shared:") {
                propagation = Propagation::Shared;
            } else if f.starts_with("master:") && propagation != Propagation::Shared {
                propagation = Propagation::Slave;
            }
        }
        let deeper = best
            .as_ref()
            .is_none_or(|(b, _)| mount_point.components().count() >= b.components().count());
        if deeper {
            best = Some((mount_point, propagation));
        }
    }
    best
}

/// The live answer for `path` (already canonical) in the daemon's mount namespace.
pub(crate) fn lookup(path: &Path) -> std::io::Result<Option<(PathBuf, Propagation)>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(find(&text, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:22 / /var/lib/kubelet rw,relatime shared:5 - ext4 /dev/sda2 rw
24 22 0:23 / /mnt/slave rw master:7 - tmpfs tmpfs rw
25 22 0:24 / /mnt/both rw shared:9 master:7 - tmpfs tmpfs rw
26 22 0:25 / /mnt/private rw - tmpfs tmpfs rw
27 22 0:26 / /mnt/with\\040space rw shared:3 - tmpfs tmpfs rw
28 26 0:27 / /mnt/private rw shared:11 - tmpfs tmpfs rw
";

    #[test]
    fn finds_the_deepest_mount() {
        let f = |p: &str| find(INFO, Path::new(p)).expect("found");
        assert_eq!(f("/etc"), (PathBuf::from("/"), Propagation::Shared));
        assert_eq!(
            f("/var/lib/kubelet/pods/x"),
            (PathBuf::from("/var/lib/kubelet"), Propagation::Shared)
        );
        assert_eq!(f("/mnt/slave/a").1, Propagation::Slave);
        assert_eq!(f("/mnt/both").1, Propagation::Shared);
        // Overmounted: the later, shared mount is the one a bind would see.
        assert_eq!(f("/mnt/private/x").1, Propagation::Shared);
        assert_eq!(
            f("/mnt/with space/x"),
            (PathBuf::from("/mnt/with space"), Propagation::Shared)
        );
        // Component-wise prefix, not string prefix.
        assert_eq!(f("/mnt/slavery").0, PathBuf::from("/"));
    }

    #[test]
    fn private_when_no_tags() {
        let info = "26 22 0:25 / /data rw - tmpfs tmpfs rw\n";
        assert_eq!(
            find(info, Path::new("/data/x")),
            Some((PathBuf::from("/data"), Propagation::Private))
        );
        assert_eq!(find(info, Path::new("/elsewhere")), None);
    }

    #[test]
    fn live_root_is_found() {
        let (mp, _) = lookup(Path::new("/proc/self"))
            .expect("read")
            .expect("found");
        assert_eq!(mp, PathBuf::from("/proc"));
    }
}
