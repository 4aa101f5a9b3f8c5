//! Applying one layer tar onto a directory.
//!
//! Every entry is resolved beneath the root (see `root`), so nothing is written outside it,
//! whatever the tar contains. Whiteouts become overlayfs whiteouts or deletions depending on
//! [`WhiteoutMode`].

use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;

use crate::digest::HashingReader;
use crate::error::{Error, IoContext, Result};
use crate::guard::{TarGuard, MAX_EXTENSION};
use crate::media;
use crate::path::{entry_path, link_target, RelPath};
use crate::root::{is_dir, list_dir, lstat_at, proc_path, remove_all_at, Root};

/// How whiteout entries are materialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Into an overlayfs upper dir: 0/0 character devices and `trusted.overlay.opaque`.
    Overlay,
    /// Into a merged tree: delete what the whiteout hides.
    Remove,
}

/// Options for [`apply_layer`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub whiteouts: WhiteoutMode,
    /// Lower directories, nearest first: hard link targets may live there (overlay mode).
    pub parents: Vec<PathBuf>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            whiteouts: WhiteoutMode::Remove,
            parents: Vec::new(),
        }
    }
}

/// What was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `sha256:<hex>` of the uncompressed tar stream.
    pub diff_id: String,
    /// Size of the uncompressed tar stream.
    pub size: u64,
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Applies the layer read from `r` onto `root`.
pub fn apply_layer(
    r: impl Read + Send,
    media_type: &str,
    root: &Path,
    opts: &ApplyOptions,
) -> Result<Applied> {
    let stream = media::open(r, media_type)?;
    let mut hashing = HashingReader::new(stream);
    {
        let mut applier = Applier::new(root, opts)?;
        let mut archive = tar::Archive::new(TarGuard::new(&mut hashing));
        applier.apply_all(&mut archive)?;
        applier.finish()?;
    }
    // The diff_id covers every byte, including the end-of-archive blocks and any padding.
    io::copy(&mut hashing, &mut io::sink()).map_err(Error::reading)?;
    let (diff_id, size) = hashing.finish();
    Ok(Applied { diff_id, size })
}

/// Owner, mode, times and xattrs of an entry.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    times: Timestamps,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn invalid(what: &str, e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("{what}: {e}"))
}

impl Meta {
    fn read<R: Read>(entry: &mut tar::Entry<'_, R>, path: &RelPath) -> Result<Meta> {
        let h = entry.header();
        let mode = h.mode().map_err(|e| invalid("tar mode", e))? & 0o7777;
        let uid = h.uid().map_err(|e| invalid("tar uid", e))?;
        let gid = h.gid().map_err(|e| invalid("tar gid", e))?;
        let uid = u32::try_from(uid).map_err(|_| invalid("tar uid", uid))?;
        let gid = u32::try_from(gid).map_err(|_| invalid("tar gid", gid))?;
        let secs = h.mtime().map_err(|e| invalid("tar mtime", e))?;
        let mut mtime = Timespec {
            tv_sec: i64::try_from(secs).map_err(|_| invalid("tar mtime", secs))?,
            tv_nsec: 0,
        };
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions().map_err(Error::reading)? {
            for ext in exts {
                let ext = ext.map_err(Error::reading)?;
                let Ok(key) = ext.key() else {
                    return Err(Error::InvalidArgument(format!(
                        "non-UTF-8 PAX key on {}",
                        path.display()
                    )));
                };
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    let value = ext.value_bytes();
                    if value.len() as u64 > MAX_EXTENSION {
                        return Err(Error::InvalidArgument(format!(
                            "xattr {name} on {} exceeds {MAX_EXTENSION} bytes",
                            path.display()
                        )));
                    }
                    // A layer must not steer overlayfs (opaque, redirect, metacopy...).
                    if !name.starts_with("trusted.overlay.") && !name.is_empty() {
                        xattrs.push((name.to_string(), value.to_vec()));
                    }
                } else if key == "mtime" {
                    if let Some(t) = ext.value().ok().and_then(parse_pax_time) {
                        mtime = t;
                    }
                }
            }
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            times: Timestamps {
                last_access: mtime,
                last_modification: mtime,
            },
            xattrs,
        })
    }
}

/// PAX times are decimal seconds with an optional fraction ("1700000000.123456789").
fn parse_pax_time(s: &str) -> Option<Timespec> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let tv_sec: i64 = secs.parse().ok()?;
    if frac.is_empty() {
        return Some(Timespec { tv_sec, tv_nsec: 0 });
    }
    let digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut nsec: i64 = digits.parse().ok()?;
    for _ in digits.len()..9 {
        nsec *= 10;
    }
    // Negative times round toward zero in the text; keep nsec non-negative as the kernel wants.
    Some(Timespec {
        tv_sec,
        tv_nsec: if tv_sec < 0 { 0 } else { nsec as _ },
    })
}

struct Applier {
    root: Root,
    mode: WhiteoutMode,
    lowers: Vec<Root>,
    /// Paths (and their ancestors) this layer wrote: opaque whiteouts keep them.
    written: HashSet<RelPath>,
    /// Directory times, applied after all children are written.
    dir_times: RefCell<Vec<(RelPath, Timestamps)>>,
}

impl Applier {
    fn new(root: &Path, opts: &ApplyOptions) -> Result<Self> {
        let lowers = match opts.whiteouts {
            WhiteoutMode::Overlay => opts
                .parents
                .iter()
                .map(|p| Root::open(p))
                .collect::<Result<_>>()?,
            WhiteoutMode::Remove => Vec::new(),
        };
        Ok(Applier {
            root: Root::open(root)?,
            mode: opts.whiteouts,
            lowers,
            written: HashSet::new(),
            dir_times: RefCell::new(Vec::new()),
        })
    }

    fn apply_all<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<()> {
        for entry in archive.entries().map_err(Error::reading)? {
            let mut entry = entry.map_err(Error::reading)?;
            self.apply_entry(&mut entry)?;
        }
        Ok(())
    }

    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let ty = entry.header().entry_type();
        if ty.is_pax_global_extensions() {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let path = entry_path(&raw)?;

        if let Some((parent, name)) = path.split_last() {
            let name = name.as_bytes();
            if name.starts_with(WHITEOUT_PREFIX) {
                if name == WHITEOUT_OPAQUE {
                    return self.opaque(&parent);
                }
                if name.starts_with(WHITEOUT_META_PREFIX) {
                    // Other AUFS metadata (.wh..wh.plnk, ...) has no meaning here.
                    return Ok(());
                }
                let target = &name[WHITEOUT_PREFIX.len()..];
                if target.is_empty() || target == b"." || target == b".." {
                    return Err(Error::InvalidArgument(format!(
                        "invalid whiteout {}",
                        path.display()
                    )));
                }
                let meta = Meta::read(entry, &path)?;
                return self.whiteout(&parent, OsStr::from_bytes(target), &meta);
            }
        }

        let meta = Meta::read(entry, &path)?;
        use tar::EntryType as T;
        match ty {
            T::Directory => self.make_dir(&path, &meta)?,
            // Old tars mark directories only with a trailing slash.
            T::Regular if raw.ends_with(b"/") => self.make_dir(&path, &meta)?,
            T::Regular | T::Continuous => self.make_file(&path, &meta, entry)?,
            T::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| {
                    Error::InvalidArgument(format!("symlink {} has no target", path.display()))
                })?;
                let target = target.into_owned();
                self.make_symlink(&path, &target, &meta)?
            }
            T::Link => {
                let target = entry.link_name_bytes().ok_or_else(|| {
                    Error::InvalidArgument(format!("hard link {} has no target", path.display()))
                })?;
                let target = link_target(&target)?;
                self.make_hardlink(&path, &target)?
            }
            T::Char | T::Block | T::Fifo => {
                let h = entry.header();
                let major = h.device_major().map_err(|e| invalid("device major", e))?;
                let minor = h.device_minor().map_err(|e| invalid("device minor", e))?;
                let dev = rustix::fs::makedev(major.unwrap_or(0), minor.unwrap_or(0));
                let ft = match ty {
                    T::Char => FileType::CharacterDevice,
                    T::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                self.make_node(&path, ft, dev, &meta)?
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unsupported tar entry type {:?} for {}",
                    other.as_byte() as char,
                    path.display()
                )))
            }
        }
        self.mark_written(&path);
        Ok(())
    }

    fn mark_written(&mut self, path: &RelPath) {
        for n in 1..=path.components().len() {
            self.written.insert(path.prefix(n));
        }
    }

    /// The directory `rel`, creating missing components (with the metadata the same
    /// directory has in the nearest lower layer, so overlay mode does not alter it).
    fn ensure_dir(&self, rel: &RelPath) -> Result<OwnedFd> {
        if let Some(fd) = self.root.dir(rel)? {
            return Ok(fd);
        }
        for n in 1..=rel.components().len() {
            let pre = rel.prefix(n);
            if self.root.dir(&pre)?.is_some() {
                continue;
            }
            let Some((pp, name)) = pre.split_last() else {
                continue;
            };
            let pfd = self.root.dir(&pp)?.ok_or_else(|| {
                Error::InvalidArgument(format!("cannot create parent {}", pp.display()))
            })?;
            match rustix::fs::mkdirat(&pfd, name.as_os_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) => {}
                Err(Errno::EXIST) => {
                    return Err(Error::InvalidArgument(format!(
                        "{} exists but is not a directory (dangling symlink?)",
                        pre.display()
                    )))
                }
                Err(e) => return Err(e).ctx(|| format!("mkdir {}", pre.display())),
            }
            self.copy_lower_dir_meta(&pre, &pfd, name)?;
        }
        self.root
            .dir(rel)?
            .ok_or_else(|| Error::InvalidArgument(format!("cannot create {}", rel.display())))
    }

    fn copy_lower_dir_meta(&self, rel: &RelPath, pfd: &OwnedFd, name: &OsStr) -> Result<()> {
        for lower in &self.lowers {
            // A lower layer that cannot be resolved safely simply does not count.
            let Ok(Some(lfd)) = lower.dir_rw(rel) else {
                continue;
            };
            let st = rustix::fs::fstat(&lfd).ctx(|| format!("stat lower {}", rel.display()))?;
            let times = Timestamps {
                last_access: Timespec {
                    tv_sec: st.st_atime as _,
                    tv_nsec: st.st_atime_nsec as _,
                },
                last_modification: Timespec {
                    tv_sec: st.st_mtime as _,
                    tv_nsec: st.st_mtime_nsec as _,
                },
            };
            let meta = Meta {
                mode: st.st_mode & 0o7777,
                uid: st.st_uid,
                gid: st.st_gid,
                times,
                xattrs: Vec::new(),
            };
            let dfd = open_dir_at(pfd, name)?;
            set_meta_fd(&dfd, &meta, rel)?;
            // Children are written next, so the time is set at the end with the others.
            self.dir_times.borrow_mut().push((rel.clone(), meta.times));
            break;
        }
        Ok(())
    }

    /// Parent directory handle, final name and what is there now.
    fn slot(&self, path: &RelPath) -> Result<(OwnedFd, OsString, Option<rustix::fs::Stat>)> {
        let (parent, name) = path
            .split_last()
            .ok_or_else(|| Error::InvalidArgument("the root can only be a directory".into()))?;
        let pfd = self.ensure_dir(&parent)?;
        let existing = lstat_at(&pfd, name)?;
        Ok((pfd, name.clone(), existing))
    }

    fn make_dir(&mut self, path: &RelPath, meta: &Meta) -> Result<()> {
        let dfd = if path.is_root() {
            self.root
                .dir_rw(path)?
                .ok_or_else(|| Error::InvalidArgument("apply root vanished".into()))?
        } else {
            let (pfd, name, existing) = self.slot(path)?;
            match existing {
                Some(st) if is_dir(&st) => {}
                other => {
                    if other.is_some() {
                        remove_all_at(&pfd, &name)?;
                    }
                    rustix::fs::mkdirat(&pfd, &name, Mode::from_raw_mode(0o700))
                        .ctx(|| format!("mkdir {}", path.display()))?;
                }
            }
            open_dir_at(&pfd, &name)?
        };
        set_meta_fd(&dfd, meta, path)?;
        self.dir_times
            .borrow_mut()
            .push((path.clone(), meta.times.clone()));
        Ok(())
    }

    fn make_file<R: Read>(
        &mut self,
        path: &RelPath,
        meta: &Meta,
        data: &mut tar::Entry<'_, R>,
    ) -> Result<()> {
        let (pfd, name, existing) = self.slot(path)?;
        if existing.is_some() {
            remove_all_at(&pfd, &name)?;
        }
        let fd = rustix::fs::openat(
            &pfd,
            &name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .ctx(|| format!("create {}", path.display()))?;
        let mut file = File::from(fd);
        let mut buf = vec![0u8; 128 * 1024];
        loop {
            let n = data.read(&mut buf).map_err(Error::reading)?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n])
                .ctx(|| format!("write {}", path.display()))?;
        }
        set_meta_fd(&file, meta, path)?;
        rustix::fs::futimens(&file, &meta.times).ctx(|| format!("utimes {}", path.display()))
    }

    fn make_symlink(&mut self, path: &RelPath, target: &[u8], meta: &Meta) -> Result<()> {
        if target.contains(&0) {
            return Err(Error::InvalidArgument(format!(
                "symlink {} target contains NUL",
                path.display()
            )));
        }
        let (pfd, name, existing) = self.slot(path)?;
        if existing.is_some() {
            remove_all_at(&pfd, &name)?;
        }
        rustix::fs::symlinkat(OsStr::from_bytes(target), &pfd, &name)
            .ctx(|| format!("symlink {}", path.display()))?;
        set_meta_at(&pfd, &name, meta, path, false)
    }

    fn make_node(&mut self, path: &RelPath, ft: FileType, dev: u64, meta: &Meta) -> Result<()> {
        let (pfd, name, existing) = self.slot(path)?;
        if existing.is_some() {
            remove_all_at(&pfd, &name)?;
        }
        rustix::fs::mknodat(&pfd, &name, ft, Mode::from_raw_mode(meta.mode), dev)
            .ctx(|| format!("mknod {}", path.display()))?;
        set_meta_at(&pfd, &name, meta, path, true)
    }

    fn make_hardlink(&mut self, path: &RelPath, target: &RelPath) -> Result<()> {
        if path == target {
            return Err(Error::InvalidArgument(format!(
                "hard link {} points to itself",
                path.display()
            )));
        }
        let (tparent, tname) = target.split_last().ok_or_else(|| {
            Error::InvalidArgument(format!("hard link {} has an empty target", path.display()))
        })?;
        let mut tpfd = self.root.dir(&tparent)?;
        let mut found = match &tpfd {
            Some(fd) => lstat_at(fd, tname)?.filter(|st| !is_whiteout(st)),
            None => None,
        };
        if found.is_none() {
            if let Some(st) = self.copy_up(target)? {
                found = Some(st);
                tpfd = self.root.dir(&tparent)?;
            }
        }
        let (Some(st), Some(tpfd)) = (found, tpfd) else {
            return Err(Error::InvalidArgument(format!(
                "hard link target {} of {} does not exist",
                target.display(),
                path.display()
            )));
        };
        if is_dir(&st) {
            return Err(Error::InvalidArgument(format!(
                "hard link {} targets a directory",
                path.display()
            )));
        }
        let (pfd, name, existing) = self.slot(path)?;
        if existing.is_some() {
            remove_all_at(&pfd, &name)?;
        }
        rustix::fs::linkat(&tpfd, tname, &pfd, &name, AtFlags::empty())
            .ctx(|| format!("link {} -> {}", path.display(), target.display()))
    }

    /// Overlay mode: a hard link target that lives in a lower layer is copied into the
    /// upper dir first (the link must be to an inode in the same filesystem).
    fn copy_up(&self, target: &RelPath) -> Result<Option<rustix::fs::Stat>> {
        let Some((tparent, tname)) = target.split_last() else {
            return Ok(None);
        };
        for lower in &self.lowers {
            let Some(lpfd) = lower.dir(&tparent)? else {
                continue;
            };
            let Some(st) = lstat_at(&lpfd, tname)? else {
                continue;
            };
            if is_whiteout(&st) {
                return Ok(None);
            }
            let meta = Meta {
                mode: st.st_mode & 0o7777,
                uid: st.st_uid,
                gid: st.st_gid,
                times: Timestamps {
                    last_access: Timespec {
                        tv_sec: st.st_mtime as _,
                        tv_nsec: st.st_mtime_nsec as _,
                    },
                    last_modification: Timespec {
                        tv_sec: st.st_mtime as _,
                        tv_nsec: st.st_mtime_nsec as _,
                    },
                },
                xattrs: Vec::new(),
            };
            let upfd = self.ensure_dir(&tparent)?;
            let ft = FileType::from_raw_mode(st.st_mode);
            match ft {
                FileType::RegularFile => {
                    let src = rustix::fs::openat(
                        &lpfd,
                        tname,
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .ctx(|| format!("open lower {}", target.display()))?;
                    let dst = rustix::fs::openat(
                        &upfd,
                        tname,
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )
                    .ctx(|| format!("copy up {}", target.display()))?;
                    let mut dst = File::from(dst);
                    io::copy(&mut File::from(src), &mut dst)
                        .ctx(|| format!("copy up {}", target.display()))?;
                    set_meta_fd(&dst, &meta, target)?;
                    rustix::fs::futimens(&dst, &meta.times)
                        .ctx(|| format!("utimes {}", target.display()))?;
                }
                FileType::Symlink => {
                    let link = rustix::fs::readlinkat(&lpfd, tname, Vec::new())
                        .ctx(|| format!("readlink lower {}", target.display()))?;
                    rustix::fs::symlinkat(OsStr::from_bytes(link.as_bytes()), &upfd, tname)
                        .ctx(|| format!("copy up {}", target.display()))?;
                    set_meta_at(&upfd, tname, &meta, target, false)?;
                }
                FileType::Directory => return Ok(Some(st)),
                _ => {
                    rustix::fs::mknodat(
                        &upfd,
                        tname,
                        ft,
                        Mode::from_raw_mode(meta.mode),
                        st.st_rdev,
                    )
                    .ctx(|| format!("copy up {}", target.display()))?;
                    set_meta_at(&upfd, tname, &meta, target, true)?;
                }
            }
            return lstat_at(&upfd, tname);
        }
        Ok(None)
    }

    fn whiteout(&mut self, parent: &RelPath, name: &OsStr, meta: &Meta) -> Result<()> {
        match self.mode {
            WhiteoutMode::Overlay => {
                let pfd = self.ensure_dir(parent)?;
                remove_all_at(&pfd, name)?;
                rustix::fs::mknodat(&pfd, name, FileType::CharacterDevice, Mode::empty(), 0)
                    .ctx(|| format!("whiteout {}", parent.join(&name.to_os_string()).display()))?;
                rustix::fs::chownat(
                    &pfd,
                    name,
                    Some(Uid::from_raw(meta.uid)),
                    Some(Gid::from_raw(meta.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .ctx(|| format!("chown whiteout {name:?}"))
            }
            WhiteoutMode::Remove => match self.root.dir(parent)? {
                Some(pfd) => remove_all_at(&pfd, name),
                None => Ok(()),
            },
        }
    }

    fn opaque(&mut self, dir: &RelPath) -> Result<()> {
        match self.mode {
            WhiteoutMode::Overlay => {
                drop(self.ensure_dir(dir)?);
                let dfd = self.root.dir_rw(dir)?.ok_or_else(|| {
                    Error::InvalidArgument(format!("opaque dir {} vanished", dir.display()))
                })?;
                rustix::fs::fsetxattr(&dfd, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                    .ctx(|| format!("mark {} opaque", dir.display()))
            }
            WhiteoutMode::Remove => {
                let Some(dfd) = self.root.dir_rw(dir)? else {
                    return Ok(());
                };
                for child in list_dir(&dfd)? {
                    if !self.written.contains(&dir.join(&child)) {
                        remove_all_at(&dfd, &child)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Sets directory times last, so writing children does not disturb them.
    fn finish(self) -> Result<()> {
        for (rel, times) in self.dir_times.into_inner().iter().rev() {
            let fd = match self.root.dir_rw(rel) {
                Ok(Some(fd)) => fd,
                // Removed or replaced later in the same layer.
                Ok(None) | Err(Error::InvalidArgument(_)) => continue,
                Err(e) => return Err(e),
            };
            rustix::fs::futimens(&fd, times).ctx(|| format!("utimes {}", rel.display()))?;
        }
        Ok(())
    }
}

fn is_whiteout(st: &rustix::fs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

fn open_dir_at(pfd: &OwnedFd, name: &OsStr) -> Result<OwnedFd> {
    rustix::fs::openat(
        pfd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open dir {name:?}"))
}

/// Owner, then mode (chown clears setuid), then xattrs, through an open fd.
fn set_meta_fd(fd: &impl AsFd, meta: &Meta, path: &RelPath) -> Result<()> {
    rustix::fs::fchown(
        fd,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
    )
    .ctx(|| format!("chown {}", path.display()))?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))
        .ctx(|| format!("chmod {}", path.display()))?;
    for (name, value) in &meta.xattrs {
        tolerate_unsupported(rustix::fs::fsetxattr(
            fd,
            name.as_str(),
            value,
            XattrFlags::empty(),
        ))
        .ctx(|| format!("setxattr {name} on {}", path.display()))?;
    }
    Ok(())
}

/// The same for entries we do not open (symlinks, devices, fifos), by parent fd and name.
fn set_meta_at(
    pfd: &OwnedFd,
    name: &OsStr,
    meta: &Meta,
    path: &RelPath,
    chmod: bool,
) -> Result<()> {
    rustix::fs::chownat(
        pfd,
        name,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .ctx(|| format!("chown {}", path.display()))?;
    if chmod {
        // The node was just created by us and is not a symlink, so following is moot.
        rustix::fs::chmodat(pfd, name, Mode::from_raw_mode(meta.mode), AtFlags::empty())
            .ctx(|| format!("chmod {}", path.display()))?;
    }
    let proc = proc_path(pfd, name);
    for (xname, value) in &meta.xattrs {
        tolerate_unsupported(rustix::fs::lsetxattr(
            &proc,
            xname.as_str(),
            value,
            XattrFlags::empty(),
        ))
        .ctx(|| format!("setxattr {xname} on {}", path.display()))?;
    }
    rustix::fs::utimensat(pfd, name, &meta.times, AtFlags::SYMLINK_NOFOLLOW)
        .ctx(|| format!("utimes {}", path.display()))
}

/// Xattrs the filesystem cannot store (or, for `user.*`, cannot store on this file type)
/// are skipped, as containerd does.
fn tolerate_unsupported(r: rustix::io::Result<()>) -> rustix::io::Result<()> {
    match r {
        Err(Errno::NOTSUP) | Err(Errno::PERM) => Ok(()),
        other => other,
    }
}
