//! `--user` / image `User` resolution the way containerd's `oci.WithUser` does it: `uid`,
//! `uid:gid`, `name`, `name:group` (and mixes), names looked up in the rootfs's `/etc/passwd`
//! and `/etc/group`. The rootfs is untrusted: its files are opened with `RESOLVE_IN_ROOT`, so a
//! symlinked `/etc/passwd` cannot point outside it, and their size is bounded.

use std::io::Read;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::error::{Error, Result};

/// Larger account databases than this are hostile, not real.
const MAX_DB_SIZE: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: every group in `/etc/group` listing the user as a member.
    pub additional_gids: Vec<u32>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Reads `rel` (like `etc/passwd`) inside `rootfs`, never leaving it. A missing file is empty.
fn read_in_root(rootfs: &Path, rel: &str) -> Result<String> {
    let err = |source: std::io::Error| Error::RootfsRead {
        path: format!("/{rel}"),
        source,
    };
    let dir = rustix::fs::open(
        rootfs,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(e.into()))?;
    let fd = match rustix::fs::openat2(
        &dir,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(String::new()),
        Err(e) => return Err(err(e.into())),
    };
    let file = std::fs::File::from(fd);
    if !file.metadata().map_err(err)?.is_file() {
        return Err(err(std::io::Error::other("not a regular file")));
    }
    let mut buf = Vec::new();
    file.take(MAX_DB_SIZE + 1)
        .read_to_end(&mut buf)
        .map_err(err)?;
    if buf.len() as u64 > MAX_DB_SIZE {
        return Err(Error::RootfsFileTooLarge {
            path: format!("/{rel}"),
            max: MAX_DB_SIZE,
        });
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// `name:x:uid:gid:...` lines; malformed lines are skipped as libc's getpwent does.
fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
            })
        })
        .collect()
}

/// `name:x:gid:member,member` lines.
fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 || f[0].is_empty() {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_id(s: &str, whole: &str) -> Result<u32> {
    s.parse().map_err(|_| Error::InvalidUser(whole.to_string()))
}

/// Resolves `user` (`uid`, `uid:gid`, `name`, `name:group`, …). Without a rootfs only numeric
/// forms work; a bare uid then gets gid 0, as containerd does when no passwd entry matches.
pub fn resolve_user(user: &str, rootfs: Option<&Path>) -> Result<ResolvedUser> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if u.is_empty() || g.is_some_and(str::is_empty) {
        return Err(Error::InvalidUser(user.to_string()));
    }
    let passwd = match rootfs {
        Some(r) => parse_passwd(&read_in_root(r, "etc/passwd")?),
        None => Vec::new(),
    };
    let groups = match rootfs {
        Some(r) => parse_group(&read_in_root(r, "etc/group")?),
        None => Vec::new(),
    };
    let (uid, primary_gid, name) = if is_numeric(u) {
        let uid = parse_id(u, user)?;
        match passwd.iter().find(|p| p.uid == uid) {
            Some(p) => (uid, p.gid, Some(p.name.clone())),
            None => (uid, 0, None),
        }
    } else {
        let p = passwd
            .iter()
            .find(|p| p.name == u)
            .ok_or_else(|| Error::UserNotFound(u.to_string()))?;
        (p.uid, p.gid, Some(p.name.clone()))
    };
    let gid = match g {
        None => primary_gid,
        Some(g) if is_numeric(g) => parse_id(g, user)?,
        Some(g) => {
            groups
                .iter()
                .find(|e| e.name == g)
                .ok_or_else(|| Error::GroupNotFound(g.to_string()))?
                .gid
        }
    };
    let mut additional_gids = Vec::new();
    if let Some(name) = &name {
        for e in &groups {
            // A group named after the user is its private primary group, not a supplement.
            if e.name != *name
                && e.members.iter().any(|m| m == name)
                && !additional_gids.contains(&e.gid)
            {
                additional_gids.push(e.gid);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(d.path().join("etc")).expect("etc");
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\n\
             nobody:x:65534:65534:nobody:/:/bin/false\nwww:x:33:33::/var/www:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nwww:x:33:\nnogroup:x:65534:\nstaff:x:50:www,other\naudio:x:29:www\n",
        )
        .expect("group");
        d
    }

    fn r(user: &str, root: Option<&Path>) -> Result<ResolvedUser> {
        resolve_user(user, root)
    }

    #[test]
    fn numeric_without_rootfs() {
        let u = r("65534", None).expect("uid");
        assert_eq!((u.uid, u.gid), (65534, 0));
        let u = r("1000:100", None).expect("uid:gid");
        assert_eq!((u.uid, u.gid), (1000, 100));
        assert!(matches!(r("www", None), Err(Error::UserNotFound(_))));
        assert!(matches!(r("", None), Err(Error::InvalidUser(_))));
        assert!(matches!(r("1:", None), Err(Error::InvalidUser(_))));
        assert!(matches!(r("99999999999", None), Err(Error::InvalidUser(_))));
    }

    #[test]
    fn names_and_numbers_from_rootfs() {
        let d = rootfs();
        let root = Some(d.path());
        let u = r("65534", root).expect("uid");
        assert_eq!((u.uid, u.gid), (65534, 65534));
        let u = r("www", root).expect("name");
        assert_eq!((u.uid, u.gid), (33, 33));
        assert_eq!(u.additional_gids, [50, 29]);
        let u = r("www:nogroup", root).expect("name:group");
        assert_eq!((u.uid, u.gid), (33, 65534));
        let u = r("33:7", root).expect("uid:gid");
        assert_eq!((u.uid, u.gid), (33, 7));
        let u = r("4242", root).expect("unknown uid");
        assert_eq!((u.uid, u.gid), (4242, 0));
        assert!(matches!(r("nope", root), Err(Error::UserNotFound(_))));
        assert!(matches!(r("www:nope", root), Err(Error::GroupNotFound(_))));
    }

    #[test]
    fn missing_files_are_empty() {
        let d = tempfile::tempdir().expect("tempdir");
        let u = r("5", Some(d.path())).expect("uid");
        assert_eq!((u.uid, u.gid), (5, 0));
        assert!(matches!(
            r("x", Some(d.path())),
            Err(Error::UserNotFound(_))
        ));
    }

    #[test]
    fn symlink_cannot_escape_rootfs() {
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("passwd"), "evil:x:7:7::/:/bin/sh\n").expect("w");
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(d.path().join("etc")).expect("etc");
        std::os::unix::fs::symlink(outside.path().join("passwd"), d.path().join("etc/passwd"))
            .expect("symlink");
        // Resolved inside the root, the absolute target does not exist: no user found.
        assert!(matches!(
            r("evil", Some(d.path())),
            Err(Error::UserNotFound(_))
        ));
    }
}
