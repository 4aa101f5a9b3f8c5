//! Host devices in a container: the device node (type, numbers, mode, owner read from the
//! host) plus the cgroup rule that lets the container use it.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use k8s_cri::v1::Device;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, Spec};

use crate::error::{Error, Result};
use crate::util;

/// `/dev` entries a privileged container does not get from the host: they are the container's
/// own (pts, shm, mqueue) or meaningless inside it.
const HOST_DEV_SKIP: &[&str] = &[
    "pts",
    "shm",
    "fd",
    "mqueue",
    ".lxc",
    ".lxd-mounts",
    ".udev",
    "console",
];

/// glibc's `major()`/`minor()` for a 64-bit `dev_t`.
fn major(dev: u64) -> i64 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)) as i64
}

fn minor(dev: u64) -> i64 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0xff)) as i64
}

/// The device node described by `meta` as it should appear at `container`; None when it is not a
/// device (for directory walks).
fn node(container: &Path, meta: &std::fs::Metadata) -> Option<LinuxDevice> {
    let ft = meta.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else if ft.is_fifo() {
        LinuxDeviceType::P
    } else {
        return None;
    };
    let mut d = LinuxDevice::default();
    d.set_path(container.to_path_buf());
    d.set_typ(typ);
    d.set_major(major(meta.rdev()));
    d.set_minor(minor(meta.rdev()));
    d.set_file_mode(Some(meta.mode() & 0o777));
    d.set_uid(Some(meta.uid()));
    d.set_gid(Some(meta.gid()));
    Some(d)
}

fn rule(d: &LinuxDevice, access: &str) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(true);
    r.set_typ(Some(d.typ()));
    r.set_major(Some(d.major()));
    r.set_minor(Some(d.minor()));
    r.set_access(Some(access.to_string()));
    r
}

/// Every device under `dir` (recursively), mapped under `container`.
fn walk(dir: &Path, container: &Path, skip: &[&str], out: &mut Vec<LinuxDevice>) -> Result<()> {
    let err = |source| Error::HostPath {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let name = entry.file_name();
        if skip.iter().any(|s| name == **s) {
            continue;
        }
        // Symlinks (like /dev/fd, /dev/core) are not followed: the real node is listed too.
        let meta = match std::fs::symlink_metadata(entry.path()) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err(e)),
        };
        let target = container.join(&name);
        if meta.is_dir() {
            walk(&entry.path(), &target, &[], out)?;
        } else if let Some(d) = node(&target, &meta) {
            out.push(d);
        }
    }
    Ok(())
}

fn valid_access(p: &str) -> bool {
    !p.is_empty() && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
}

/// Adds the CRI devices: a device path adds that device, a directory every device under it.
pub(crate) fn add(spec: &mut Spec, devices: &[Device]) -> Result<()> {
    let mut nodes = Vec::new();
    let mut rules = Vec::new();
    for dev in devices {
        let access = if dev.permissions.is_empty() {
            "rwm"
        } else {
            dev.permissions.as_str()
        };
        if !valid_access(access) {
            return Err(Error::InvalidValue {
                field: "device permissions",
                value: dev.permissions.clone(),
                why: "want a combination of r, w and m",
            });
        }
        let container = PathBuf::from(&dev.container_path);
        if !container.is_absolute() {
            return Err(Error::InvalidValue {
                field: "device container_path",
                value: dev.container_path.clone(),
                why: "must be absolute",
            });
        }
        let host = PathBuf::from(&dev.host_path);
        let real = std::fs::canonicalize(&host).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => Error::DeviceNotFound(host.clone()),
            _ => Error::HostPath {
                path: host.clone(),
                source,
            },
        })?;
        let meta = std::fs::metadata(&real).map_err(|source| Error::HostPath {
            path: real.clone(),
            source,
        })?;
        let found = if meta.is_dir() {
            let mut v = Vec::new();
            walk(&real, &container, &[], &mut v)?;
            v
        } else {
            vec![node(&container, &meta).ok_or_else(|| Error::NotADevice(host.clone()))?]
        };
        for d in found {
            rules.push(rule(&d, access));
            nodes.push(d);
        }
    }
    if nodes.is_empty() {
        return Ok(());
    }
    util::linux_mut(spec)
        .devices_mut()
        .get_or_insert_with(Vec::new)
        .extend(nodes);
    util::resources_mut(spec)
        .devices_mut()
        .get_or_insert_with(Vec::new)
        .extend(rules);
    Ok(())
}

/// A privileged container: every host device at its own path, and no device restrictions.
pub(crate) fn add_all_host(spec: &mut Spec) -> Result<()> {
    let mut nodes = Vec::new();
    walk(
        Path::new("/dev"),
        Path::new("/dev"),
        HOST_DEV_SKIP,
        &mut nodes,
    )?;
    util::linux_mut(spec).set_devices(Some(nodes));
    let mut all = LinuxDeviceCgroup::default();
    all.set_allow(true);
    all.set_access(Some("rwm".into()));
    util::resources_mut(spec).set_devices(Some(vec![all]));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(container: &str, host: &str, perms: &str) -> Device {
        Device {
            container_path: container.into(),
            host_path: host.into(),
            permissions: perms.into(),
        }
    }

    /// glibc's `makedev`, the inverse of `major`/`minor`.
    fn makedev(ma: u64, mi: u64) -> u64 {
        ((ma & 0xfff) << 8) | ((ma & !0xfff) << 32) | (mi & 0xff) | ((mi & !0xff) << 12)
    }

    #[test]
    fn numbers_from_dev_t() {
        assert_eq!((major(0x103), minor(0x103)), (1, 3));
        for (ma, mi) in [(1, 3), (259, 65536), (4095, 255), (4096, 1 << 20)] {
            let dev = makedev(ma, mi);
            assert_eq!((major(dev), minor(dev)), (ma as i64, mi as i64));
        }
    }

    #[test]
    fn adds_node_and_rule() {
        let mut spec = berth_spec::default_spec("k8s.io", "c").expect("spec");
        let before = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.devices().as_ref())
            .map_or(0, Vec::len);
        add(&mut spec, &[dev("/dev/mynull", "/dev/null", "rw")]).expect("add");
        let linux = spec.linux().as_ref().expect("linux");
        let d = &linux.devices().as_ref().expect("devices")[0];
        assert_eq!(d.path(), Path::new("/dev/mynull"));
        assert_eq!((d.typ(), d.major(), d.minor()), (LinuxDeviceType::C, 1, 3));
        assert_eq!(d.file_mode(), Some(0o666));
        let rules = linux
            .resources()
            .as_ref()
            .and_then(|r| r.devices().as_ref())
            .expect("rules");
        assert_eq!(rules.len(), before + 1);
        let r = rules.last().expect("rule");
        assert!(r.allow());
        assert_eq!((r.major(), r.minor()), (Some(1), Some(3)));
        assert_eq!(r.access().as_deref(), Some("rw"));
    }

    #[test]
    fn default_permissions_and_symlinks() {
        let d = tempfile::tempdir().expect("tempdir");
        let link = d.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
        let mut spec = berth_spec::default_spec("k8s.io", "c").expect("spec");
        add(&mut spec, &[dev("/dev/z", &link.to_string_lossy(), "")]).expect("add");
        let linux = spec.linux().as_ref().expect("linux");
        let node = &linux.devices().as_ref().expect("devices")[0];
        assert_eq!((node.major(), node.minor()), (1, 5));
        let r = linux
            .resources()
            .as_ref()
            .and_then(|r| r.devices().as_ref())
            .and_then(|v| v.last())
            .expect("rule");
        assert_eq!(r.access().as_deref(), Some("rwm"));
    }

    #[test]
    fn errors_name_the_device() {
        let mut spec = berth_spec::default_spec("k8s.io", "c").expect("spec");
        let e =
            add(&mut spec, &[dev("/dev/x", "/dev/berth-no-such-device", "")]).expect_err("missing");
        assert!(
            matches!(&e, Error::DeviceNotFound(p) if p == Path::new("/dev/berth-no-such-device"))
        );
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
        let f = tempfile::NamedTempFile::new().expect("file");
        let e =
            add(&mut spec, &[dev("/dev/x", &f.path().to_string_lossy(), "")]).expect_err("file");
        assert!(matches!(e, Error::NotADevice(_)));
        let e = add(&mut spec, &[dev("/dev/x", "/dev/null", "rwx")]).expect_err("perms");
        assert!(e.to_string().contains("rwx"));
        let e = add(&mut spec, &[dev("x", "/dev/null", "r")]).expect_err("relative");
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
    }

    #[test]
    fn host_devices_for_privileged() {
        let mut spec = berth_spec::default_spec("k8s.io", "c").expect("spec");
        add_all_host(&mut spec).expect("host devices");
        let linux = spec.linux().as_ref().expect("linux");
        let nodes = linux.devices().as_ref().expect("devices");
        assert!(nodes.iter().any(|d| d.path() == Path::new("/dev/null")));
        assert!(!nodes.iter().any(|d| d.path().starts_with("/dev/pts")));
        let rules = linux
            .resources()
            .as_ref()
            .and_then(|r| r.devices().as_ref())
            .expect("rules");
        assert_eq!(rules.len(), 1);
        assert!(rules[0].allow() && rules[0].typ().is_none());
    }
}
