//! Pure helpers for mounts: OCI mount options into mount(2) flags and data, destinations
//! inside a root, and the mount table.

use std::path::{Component, Path, PathBuf};

use crate::error::AgentError;

/// What an OCI option list asks of mount(2).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub flags: libc::c_ulong,
    /// `MS_PRIVATE`, `MS_SHARED`... (with `MS_REC`): applied by a second mount call.
    pub propagation: libc::c_ulong,
    /// Filesystem-specific options, comma-joined (`mode=755,size=65536k`).
    pub data: String,
}

/// Splits OCI mount options (fstab words) into flags, propagation and data.
pub fn parse_options(options: &[String]) -> Options {
    let mut o = Options::default();
    let mut data = Vec::new();
    for opt in options {
        let (set, clear): (libc::c_ulong, libc::c_ulong) = match opt.as_str() {
            "defaults" => (0, 0),
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "suid" => (0, libc::MS_NOSUID),
            "nosuid" => (libc::MS_NOSUID, 0),
            "dev" => (0, libc::MS_NODEV),
            "nodev" => (libc::MS_NODEV, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "noexec" => (libc::MS_NOEXEC, 0),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "remount" => (libc::MS_REMOUNT, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "atime" => (0, libc::MS_NOATIME),
            "noatime" => (libc::MS_NOATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "lazytime" => (libc::MS_LAZYTIME, 0),
            "nolazytime" => (0, libc::MS_LAZYTIME),
            "bind" => (libc::MS_BIND, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let rec = if opt.starts_with('r') {
                    libc::MS_REC
                } else {
                    0
                };
                o.propagation = rec
                    | match opt.trim_start_matches('r') {
                        "private" => libc::MS_PRIVATE,
                        "shared" => libc::MS_SHARED,
                        "slave" => libc::MS_SLAVE,
                        _ => libc::MS_UNBINDABLE,
                    };
                continue;
            }
            _ => {
                data.push(opt.as_str());
                continue;
            }
        };
        o.flags = (o.flags | set) & !clear;
    }
    o.data = data.join(",");
    o
}

/// `dest` (absolute, as in a spec) inside `root`, refusing `..` so that a destination cannot
/// name a path outside the container's root by its spelling.
pub fn join_in_root(root: &Path, dest: &str) -> Result<PathBuf, AgentError> {
    let mut out = root.to_path_buf();
    for c in Path::new(dest).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(AgentError::InvalidArgument(format!(
                    "path {dest:?} leaves the container's root"
                )))
            }
        }
    }
    Ok(out)
}

/// Every directory from just below `root` down to `path` (inclusive), in creation order.
pub fn dirs_below(root: &Path, path: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = path
        .ancestors()
        .take_while(|a| a.starts_with(root) && *a != root)
        .map(Path::to_path_buf)
        .collect();
    v.reverse();
    v
}

/// Mount points (field 5 of /proc/self/mountinfo, octal escapes undone) at or under `dir`,
/// deepest first: the order to unmount them in.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    // Later mounts may sit on top of earlier ones at the same point: keep table order reversed
    // within equal depth, deepest paths first.
    v.reverse();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let o = parse_options(&s(&["nosuid", "strictatime", "mode=755", "size=65536k"]));
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(o.data, "mode=755,size=65536k");
        assert_eq!(o.propagation, 0);

        let o = parse_options(&s(&[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ]));
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_NOEXEC);
        assert_eq!(o.data, "newinstance,ptmxmode=0666,mode=0620,gid=5");
    }

    #[test]
    fn later_options_win_and_propagation_is_separate() {
        let o = parse_options(&s(&["ro", "rw", "rbind", "rprivate"]));
        assert_eq!(o.flags, libc::MS_BIND | libc::MS_REC);
        assert_eq!(o.propagation, libc::MS_PRIVATE | libc::MS_REC);
        let o = parse_options(&s(&["bind", "ro", "slave"]));
        assert_eq!(o.flags, libc::MS_BIND | libc::MS_RDONLY);
        assert_eq!(o.propagation, libc::MS_SLAVE);
        assert_eq!(
            parse_options(&s(&["unbindable"])).propagation,
            libc::MS_UNBINDABLE
        );
        assert_eq!(parse_options(&[]), Options::default());
    }

    #[test]
    fn destinations_stay_in_the_root() {
        let r = Path::new("/run/c/a/rootfs");
        assert_eq!(
            join_in_root(r, "/etc/hosts").unwrap(),
            PathBuf::from("/run/c/a/rootfs/etc/hosts")
        );
        assert_eq!(join_in_root(r, "/").unwrap(), r);
        assert_eq!(
            join_in_root(r, "dev//./pts/").unwrap(),
            PathBuf::from("/run/c/a/rootfs/dev/pts")
        );
        assert!(join_in_root(r, "/../../etc").is_err());
    }

    #[test]
    fn dirs_below_a_root() {
        let r = Path::new("/r");
        assert_eq!(
            dirs_below(r, Path::new("/r/a/b")),
            vec![PathBuf::from("/r/a"), PathBuf::from("/r/a/b")]
        );
        assert!(dirs_below(r, r).is_empty());
    }

    #[test]
    fn mount_table_under_a_dir() {
        let mi = "\
22 1 0:20 / / rw - hostfs none rw
30 22 0:25 / /run rw - tmpfs tmpfs rw
40 30 0:30 / /run/c/a/rootfs rw - hostfs none rw,/c1/rootfs
41 30 0:31 / /run/c/a/m/0 rw - hostfs none rw
42 30 0:32 / /run/c/a/rootfs/with\\040space rw - tmpfs tmpfs rw
43 30 0:33 / /run/c/ab/rootfs rw - hostfs none rw
44 40 0:34 / /run/c/a/rootfs rw - tmpfs tmpfs rw
";
        let v = mounts_under(mi, Path::new("/run/c/a"));
        assert_eq!(
            v,
            vec![
                PathBuf::from("/run/c/a/rootfs/with space"),
                PathBuf::from("/run/c/a/m/0"),
                PathBuf::from("/run/c/a/rootfs"),
                PathBuf::from("/run/c/a/rootfs"),
            ]
        );
    }
}
