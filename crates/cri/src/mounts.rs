//! A container's mounts: the pod's files (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`,
//! `/dev/shm`), the CRI mounts (kubelet's volumes), and the defaults they shadow.

use std::path::{Component, Path, PathBuf};

use k8s_cri::v1::{Mount as CriMount, MountPropagation};
use oci_spec::runtime::{Mount, Spec};

use crate::error::{Error, Result};
use crate::files::{PodFiles, HOST_SHM};
use crate::mountinfo::{self, Propagation};
use crate::util;

/// A path with `.` and trailing slashes removed, for comparing destinations.
fn clean(p: &str) -> PathBuf {
    Path::new(p)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

fn in_cri_mounts(dst: &str, cri: &[CriMount]) -> bool {
    cri.iter()
        .any(|m| clean(&m.container_path) == Path::new(dst))
}

fn pod_file(container_path: &str, host: &Path, readonly: bool) -> CriMount {
    CriMount {
        container_path: container_path.to_string(),
        host_path: host.to_string_lossy().into_owned(),
        readonly,
        ..Default::default()
    }
}

/// The pod's files as mounts, for the paths the CRI mounts leave free. They follow the
/// container's read-only rootfs setting; `/dev/shm` is always writable.
pub(crate) fn pod_files(
    files: &PodFiles,
    readonly_rootfs: bool,
    cri: &[CriMount],
) -> Vec<CriMount> {
    let mut out = Vec::new();
    for (dst, host) in [
        ("/etc/hostname", &files.hostname),
        ("/etc/hosts", &files.hosts),
        ("/etc/resolv.conf", &files.resolv_conf),
    ] {
        if !in_cri_mounts(dst, cri) {
            out.push(pod_file(dst, host, readonly_rootfs));
        }
    }
    if !in_cri_mounts("/dev/shm", cri) {
        let shm = files.shm.clone().unwrap_or_else(|| PathBuf::from(HOST_SHM));
        out.push(pod_file("/dev/shm", &shm, false));
    }
    out
}

fn validate(m: &CriMount) -> Result<()> {
    let p = Path::new(&m.container_path);
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return Err(Error::InvalidValue {
            field: "mount container_path",
            value: m.container_path.clone(),
            why: "must be an absolute path without '..'",
        });
    }
    if m.image.is_some() {
        return Err(Error::Unsupported(format!(
            "image volume mount at {}",
            m.container_path
        )));
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(Error::Unsupported(format!(
            "id-mapped mount at {}",
            m.container_path
        )));
    }
    if m.host_path.is_empty() {
        return Err(Error::InvalidValue {
            field: "mount host_path",
            value: String::new(),
            why: "empty",
        });
    }
    let propagation =
        MountPropagation::try_from(m.propagation).map_err(|_| Error::InvalidValue {
            field: "mount propagation",
            value: m.propagation.to_string(),
            why: "unknown propagation mode",
        })?;
    if m.recursive_read_only && (!m.readonly || propagation != MountPropagation::PropagationPrivate)
    {
        return Err(Error::InvalidValue {
            field: "mount recursive_read_only",
            value: m.container_path.clone(),
            why: "needs readonly and private propagation",
        });
    }
    Ok(())
}

/// The host path with symlinks resolved, as the CRI asks; missing paths are an error rather
/// than created (containerd creates them; the CRI says to report it).
fn resolve_host_path(m: &CriMount) -> Result<PathBuf> {
    let path = PathBuf::from(&m.host_path);
    std::fs::canonicalize(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Error::HostPathNotFound {
            path,
            container_path: m.container_path.clone(),
        },
        _ => Error::HostPath { path, source },
    })
}

fn require_propagation(src: &Path, wanted: &'static str, ok: &[Propagation]) -> Result<()> {
    let found = mountinfo::lookup(src).map_err(|source| Error::HostPath {
        path: PathBuf::from("/proc/self/mountinfo"),
        source,
    })?;
    match found {
        Some((_, p)) if ok.contains(&p) => Ok(()),
        Some((mount_point, _)) => Err(Error::Propagation {
            path: src.to_path_buf(),
            propagation: wanted,
            mount_point,
            why: if ok.contains(&Propagation::Slave) {
                "neither shared nor slave"
            } else {
                "not shared"
            },
        }),
        None => Err(Error::Propagation {
            path: src.to_path_buf(),
            propagation: wanted,
            mount_point: PathBuf::from("/"),
            why: "not found in /proc/self/mountinfo",
        }),
    }
}

/// One CRI mount as a bind mount; also returns the rootfs propagation it needs, if any.
fn to_oci(m: &CriMount) -> Result<(Mount, Option<&'static str>)> {
    let src = resolve_host_path(m)?;
    let mut options = vec!["rbind".to_string()];
    let mut rootfs = None;
    match MountPropagation::try_from(m.propagation) {
        Ok(MountPropagation::PropagationBidirectional) => {
            require_propagation(&src, "bidirectional", &[Propagation::Shared])?;
            options.push("rshared".into());
            rootfs = Some("rshared");
        }
        Ok(MountPropagation::PropagationHostToContainer) => {
            require_propagation(
                &src,
                "host-to-container",
                &[Propagation::Shared, Propagation::Slave],
            )?;
            options.push("rslave".into());
            rootfs = Some("rslave");
        }
        _ => options.push("rprivate".into()),
    }
    // The rest of the rootfs stays writable under a read-only volume: only the volume is ro.
    options.push(match (m.readonly, m.recursive_read_only) {
        (true, true) => "rro".into(),
        (true, false) => "ro".into(),
        _ => "rw".into(),
    });
    let mut out = Mount::default();
    out.set_destination(clean(&m.container_path));
    out.set_typ(Some("bind".into()));
    out.set_source(Some(src));
    out.set_options(Some(options));
    Ok((out, rootfs))
}

/// Replaces the spec's mounts: defaults not shadowed by a CRI or pod-file mount (nothing under
/// `/dev` if `/dev` itself is mounted), the cgroup filesystem, then the CRI mounts (winning
/// over pod files at the same path), shallowest first so a parent never hides a child.
pub(crate) fn apply(
    spec: &mut Spec,
    cri: &[CriMount],
    pod_files: Vec<CriMount>,
    privileged: bool,
) -> Result<()> {
    for m in cri {
        validate(m)?;
    }
    let mut wanted: Vec<CriMount> = cri.to_vec();
    wanted.extend(pod_files);
    // Stable: equal depths keep CRI order, with CRI mounts before pod files.
    wanted.sort_by_key(|m| clean(&m.container_path).components().count());

    let mut converted = Vec::with_capacity(wanted.len());
    let mut rootfs_propagation: Option<&'static str> = None;
    for m in &wanted {
        let (mount, prop) = to_oci(m)?;
        if prop == Some("rshared") || (prop.is_some() && rootfs_propagation.is_none()) {
            rootfs_propagation = prop;
        }
        converted.push(mount);
    }

    let dests: Vec<PathBuf> = wanted.iter().map(|m| clean(&m.container_path)).collect();
    let dev_mounted = dests.iter().any(|d| d == Path::new("/dev"));
    let mut cgroup = Mount::default();
    cgroup.set_destination("/sys/fs/cgroup".into());
    cgroup.set_typ(Some("cgroup".into()));
    cgroup.set_source(Some("cgroup".into()));
    let mut cg_opts = vec!["nosuid", "noexec", "nodev", "relatime"];
    if !privileged {
        cg_opts.push("ro");
    }
    cgroup.set_options(Some(cg_opts.iter().map(|s| s.to_string()).collect()));

    let all = util::mounts_mut(spec);
    all.push(cgroup);
    all.retain(|m| {
        let d = m.destination();
        let shadowed = dests.iter().any(|w| w == d);
        let under_dev = dev_mounted && d.starts_with("/dev") && d != Path::new("/dev");
        !shadowed && !under_dev
    });
    all.extend(converted);
    if let Some(p) = rootfs_propagation {
        util::linux_mut(spec).set_rootfs_propagation(Some(p.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(container: &str, host: &Path) -> CriMount {
        pod_file(container, host, false)
    }

    fn files(dir: &Path) -> PodFiles {
        for f in ["hostname", "hosts", "resolv.conf"] {
            std::fs::write(dir.join(f), "x\n").expect("write");
        }
        std::fs::create_dir_all(dir.join("shm")).expect("shm");
        PodFiles {
            hostname: dir.join("hostname"),
            hosts: dir.join("hosts"),
            resolv_conf: dir.join("resolv.conf"),
            shm: Some(dir.join("shm")),
        }
    }

    fn by_dst<'a>(spec: &'a Spec, dst: &str) -> Vec<&'a Mount> {
        spec.mounts()
            .iter()
            .flatten()
            .filter(|m| m.destination() == Path::new(dst))
            .collect()
    }

    #[test]
    fn pod_files_yield_to_cri_mounts() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = files(d.path());
        let all = pod_files(&f, true, &[]);
        let dsts: Vec<&str> = all.iter().map(|m| m.container_path.as_str()).collect();
        assert_eq!(
            dsts,
            [
                "/etc/hostname",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/dev/shm"
            ]
        );
        assert!(all[..3].iter().all(|m| m.readonly));
        assert!(!all[3].readonly);
        let cri = vec![m("/etc/hosts/", d.path())];
        let some = pod_files(&f, false, &cri);
        assert!(!some.iter().any(|m| m.container_path == "/etc/hosts"));
        let host_ipc = PodFiles { shm: None, ..f };
        let shm = pod_files(&host_ipc, false, &[]).pop().expect("shm");
        assert_eq!(shm.host_path, "/dev/shm");
    }

    #[test]
    fn cri_mounts_replace_defaults_and_sort() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = files(d.path());
        std::fs::create_dir_all(d.path().join("vol/sub")).expect("vol");
        let link = d.path().join("link");
        std::os::unix::fs::symlink(d.path().join("vol"), &link).expect("symlink");
        let mut ro = m("/data/sub", &d.path().join("vol/sub"));
        ro.readonly = true;
        let cri = vec![ro, m("/data", &link), m("/run", &d.path().join("vol"))];
        let mut spec = berth_spec::default_spec("k8s.io", "c").expect("spec");
        apply(&mut spec, &cri, pod_files(&f, false, &cri), false).expect("apply");
        let dsts: Vec<String> = spec
            .mounts()
            .iter()
            .flatten()
            .map(|m| m.destination().display().to_string())
            .collect();
        // Defaults (minus the shadowed /run and /dev/shm), cgroup, then mounts by depth.
        assert_eq!(
            dsts,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/data",
                "/run",
                "/data/sub",
                "/etc/hostname",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/dev/shm"
            ]
        );
        let data = by_dst(&spec, "/data")[0];
        // The symlink is resolved to its target.
        let real = std::fs::canonicalize(d.path().join("vol")).expect("canon");
        assert_eq!(data.source().as_deref(), Some(real.as_path()));
        assert_eq!(
            data.options().as_deref().expect("opts"),
            ["rbind", "rprivate", "rw"]
        );
        let sub = by_dst(&spec, "/data/sub")[0];
        assert_eq!(
            sub.options().as_deref().expect("opts"),
            ["rbind", "rprivate", "ro"]
        );
        let cg = by_dst(&spec, "/sys/fs/cgroup")[0];
        assert!(cg.options().iter().flatten().any(|o| o == "ro"));
        assert_eq!(by_dst(&spec, "/dev/shm")[0].typ().as_deref(), Some("bind"));
    }

    #[test]
    fn dev_mount_hides_default_dev_children() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut spec = berth_spec::default_spec("k8s.io", "c").expect("spec");
        apply(&mut spec, &[m("/dev", d.path())], Vec::new(), true).expect("apply");
        let devs: Vec<_> = spec
            .mounts()
            .iter()
            .flatten()
            .filter(|m| m.destination().starts_with("/dev"))
            .collect();
        assert_eq!(devs.len(), 1);
        assert_eq!(devs[0].typ().as_deref(), Some("bind"));
        let cg = by_dst(&spec, "/sys/fs/cgroup")[0];
        assert!(
            !cg.options().iter().flatten().any(|o| o == "ro"),
            "privileged: rw"
        );
    }

    #[test]
    fn missing_host_path_is_named() {
        let d = tempfile::tempdir().expect("tempdir");
        let gone = d.path().join("gone");
        let mut spec = berth_spec::default_spec("k8s.io", "c").expect("spec");
        let e = apply(&mut spec, &[m("/x", &gone)], Vec::new(), false).expect_err("missing");
        assert!(matches!(&e, Error::HostPathNotFound { path, .. } if *path == gone));
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
        assert!(e.to_string().contains(&gone.display().to_string()));
    }

    #[test]
    fn bad_mounts_are_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut spec = berth_spec::default_spec("k8s.io", "c").expect("spec");
        for bad in [
            m("relative", d.path()),
            m("/a/../b", d.path()),
            CriMount {
                propagation: 7,
                ..m("/a", d.path())
            },
            CriMount {
                recursive_read_only: true,
                ..m("/a", d.path())
            },
            CriMount {
                host_path: String::new(),
                ..m("/a", d.path())
            },
        ] {
            let e =
                apply(&mut spec, std::slice::from_ref(&bad), Vec::new(), false).expect_err("bad");
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{bad:?}: {e}");
        }
        let img = CriMount {
            image: Some(Default::default()),
            host_path: String::new(),
            ..m("/a", d.path())
        };
        let e = apply(&mut spec, &[img], Vec::new(), false).expect_err("image");
        assert_eq!(e.kind(), crate::ErrorKind::Unimplemented);
    }

    #[test]
    fn recursive_read_only() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut spec = berth_spec::default_spec("k8s.io", "c").expect("spec");
        let rro = CriMount {
            readonly: true,
            recursive_read_only: true,
            ..m("/a", d.path())
        };
        apply(&mut spec, &[rro], Vec::new(), false).expect("apply");
        let a = by_dst(&spec, "/a")[0];
        assert_eq!(
            a.options().as_deref().expect("opts"),
            ["rbind", "rprivate", "rro"]
        );
    }

    /// A tmpfs mounted on a tempdir for one test, unmounted (then removed) on drop.
    struct TmpMount {
        dir: tempfile::TempDir,
    }

    impl TmpMount {
        fn new() -> TmpMount {
            let dir = tempfile::tempdir().expect("tempdir");
            let ok = std::process::Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "berth-cri-test",
                    &dir.path().to_string_lossy(),
                ])
                .status()
                .expect("mount")
                .success();
            assert!(ok, "mount tmpfs");
            TmpMount { dir }
        }

        fn make(&self, how: &str) {
            let ok = std::process::Command::new("mount")
                .arg(how)
                .arg(self.dir.path())
                .status()
                .expect("mount")
                .success();
            assert!(ok, "mount {how}");
        }
    }

    impl Drop for TmpMount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }

    fn with_propagation(host: &Path, p: MountPropagation) -> CriMount {
        CriMount {
            propagation: p as i32,
            ..m("/vol", host)
        }
    }

    #[test]
    fn propagation_needs_a_matching_host_mount() {
        let tm = TmpMount::new();
        tm.make("--make-private");
        let mut spec = berth_spec::default_spec("k8s.io", "c").expect("spec");
        for p in [
            MountPropagation::PropagationBidirectional,
            MountPropagation::PropagationHostToContainer,
        ] {
            let e = apply(
                &mut spec,
                &[with_propagation(tm.dir.path(), p)],
                Vec::new(),
                false,
            )
            .expect_err("private source");
            assert_eq!(e.kind(), crate::ErrorKind::FailedPrecondition, "{e}");
            assert!(
                e.to_string().contains(&tm.dir.path().display().to_string()),
                "{e}"
            );
        }
        tm.make("--make-shared");
        let mut spec = berth_spec::default_spec("k8s.io", "c").expect("spec");
        let slave = with_propagation(tm.dir.path(), MountPropagation::PropagationHostToContainer);
        apply(&mut spec, &[slave], Vec::new(), false).expect("shared source, rslave");
        assert_eq!(
            spec.linux()
                .as_ref()
                .and_then(|l| l.rootfs_propagation().clone())
                .as_deref(),
            Some("rslave")
        );
        assert!(by_dst(&spec, "/vol")[0]
            .options()
            .iter()
            .flatten()
            .any(|o| o == "rslave"));
        let mut spec = berth_spec::default_spec("k8s.io", "c").expect("spec");
        let mut sub = with_propagation(tm.dir.path(), MountPropagation::PropagationHostToContainer);
        sub.container_path = "/vol2".into();
        let shared = with_propagation(tm.dir.path(), MountPropagation::PropagationBidirectional);
        apply(&mut spec, &[sub, shared], Vec::new(), false).expect("shared source, rshared");
        assert_eq!(
            spec.linux()
                .as_ref()
                .and_then(|l| l.rootfs_propagation().clone())
                .as_deref(),
            Some("rshared"),
            "rshared wins over rslave"
        );
    }
}
