//! The default Linux spec, field for field what containerd 1.6's `oci.GenerateSpec` produces
//! (`populateDefaultUnixSpec`), plus the PATH environment its image-config option always adds
//! and the standard character-device allow rules runc/docker grant.

use std::collections::HashSet;
use std::path::PathBuf;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, UserBuilder,
};

use crate::error::Result;

/// The PATH every container gets unless its image or the user sets another.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// OCI runtime-spec version containerd 1.6 writes.
const OCI_VERSION: &str = "1.0.2-dev";

const DEFAULT_CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

const MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// (destination, type, source, options) of containerd's default mounts, in its order.
const MOUNTS: [(&str, &str, &str, &[&str]); 7] = [
    ("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
    (
        "/dev",
        "tmpfs",
        "tmpfs",
        &["nosuid", "strictatime", "mode=755", "size=65536k"],
    ),
    (
        "/dev/pts",
        "devpts",
        "devpts",
        &[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ],
    ),
    (
        "/dev/shm",
        "tmpfs",
        "shm",
        &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    ),
    (
        "/dev/mqueue",
        "mqueue",
        "mqueue",
        &["nosuid", "noexec", "nodev"],
    ),
    (
        "/sys",
        "sysfs",
        "sysfs",
        &["nosuid", "noexec", "nodev", "ro"],
    ),
    (
        "/run",
        "tmpfs",
        "tmpfs",
        &["nosuid", "strictatime", "mode=755", "size=65536k"],
    ),
];

/// Character devices every container may use: null, zero, full, random, urandom, tty,
/// console, ptmx, the pty slaves, and tun (major, minor or any, access).
const ALLOWED_CHAR_DEVICES: [(i64, Option<i64>, &str); 10] = [
    (1, Some(3), "rwm"),
    (1, Some(5), "rwm"),
    (1, Some(7), "rwm"),
    (1, Some(8), "rwm"),
    (1, Some(9), "rwm"),
    (5, Some(0), "rwm"),
    (5, Some(1), "rwm"),
    (5, Some(2), "rwm"),
    (136, None, "rwm"),
    (10, Some(200), "rwm"),
];

pub(crate) fn default_caps() -> HashSet<Capability> {
    DEFAULT_CAPS.iter().copied().collect()
}

pub(crate) fn default_mounts() -> Result<Vec<Mount>> {
    MOUNTS
        .iter()
        .map(|(dst, typ, src, opts)| {
            Ok(MountBuilder::default()
                .destination(PathBuf::from(dst))
                .typ(*typ)
                .source(PathBuf::from(src))
                .options(opts.iter().map(|o| o.to_string()).collect::<Vec<_>>())
                .build()?)
        })
        .collect()
}

fn device_rules() -> Result<Vec<LinuxDeviceCgroup>> {
    let mut rules = vec![LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()?];
    for (major, minor, access) in ALLOWED_CHAR_DEVICES {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(major)
            .access(access);
        if let Some(minor) = minor {
            b = b.minor(minor);
        }
        rules.push(b.build()?);
    }
    Ok(rules)
}

/// The spec containerd generates for container `id` in namespace `ns`: runs `sh`-less (no args
/// yet) as root in `rootfs`, with cgroups path `/<ns>/<id>`.
pub fn default_spec(ns: &str, id: &str) -> Result<Spec> {
    let caps = default_caps();
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()?;
    // The builder fills the other sets from its own defaults; containerd leaves them unset.
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .args(Vec::<String>::new())
        .env(vec![DEFAULT_PATH_ENV.to_string()])
        .cwd("/")
        .no_new_privileges(true)
        .capabilities(capabilities)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(1024u64)
            .soft(1024u64)
            .build()?])
        .build()?;
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
    .collect::<std::result::Result<Vec<_>, _>>()?;
    let linux = LinuxBuilder::default()
        .masked_paths(
            MASKED_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            READONLY_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
        )
        .cgroups_path(PathBuf::from(format!("/{ns}/{id}")))
        .resources(
            LinuxResourcesBuilder::default()
                .devices(device_rules()?)
                .build()?,
        )
        .namespaces(namespaces)
        .build()?;
    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_string());
    spec.set_root(Some(
        RootBuilder::default()
            .path(PathBuf::from("rootfs"))
            .readonly(false)
            .build()?,
    ));
    spec.set_process(Some(process));
    spec.set_hostname(None);
    spec.set_mounts(Some(default_mounts()?));
    spec.set_annotations(None);
    spec.set_linux(Some(linux));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(ns: &str, id: &str) -> serde_json::Value {
        serde_json::to_value(default_spec(ns, id).expect("spec")).expect("json")
    }

    #[test]
    fn process_defaults() {
        let v = json("default", "c1");
        let p = &v["process"];
        assert_eq!(p["terminal"], false);
        assert_eq!(p["cwd"], "/");
        assert_eq!(p["user"]["uid"], 0);
        assert_eq!(p["user"]["gid"], 0);
        assert_eq!(p["noNewPrivileges"], true);
        assert_eq!(p["env"], serde_json::json!([DEFAULT_PATH_ENV]));
        assert_eq!(
            p["rlimits"],
            serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}])
        );
        for set in ["bounding", "effective", "permitted"] {
            let mut caps: Vec<&str> = p["capabilities"][set]
                .as_array()
                .expect("caps")
                .iter()
                .map(|c| c.as_str().expect("str"))
                .collect();
            caps.sort();
            assert_eq!(
                caps,
                [
                    "CAP_AUDIT_WRITE",
                    "CAP_CHOWN",
                    "CAP_DAC_OVERRIDE",
                    "CAP_FOWNER",
                    "CAP_FSETID",
                    "CAP_KILL",
                    "CAP_MKNOD",
                    "CAP_NET_BIND_SERVICE",
                    "CAP_NET_RAW",
                    "CAP_SETFCAP",
                    "CAP_SETGID",
                    "CAP_SETPCAP",
                    "CAP_SETUID",
                    "CAP_SYS_CHROOT"
                ]
            );
        }
        assert!(p["capabilities"].get("inheritable").is_none());
        assert!(p["capabilities"].get("ambient").is_none());
    }

    #[test]
    fn root_mounts_and_no_hostname() {
        let v = json("default", "c1");
        assert_eq!(v["ociVersion"], OCI_VERSION);
        assert_eq!(v["root"]["path"], "rootfs");
        assert!(v.get("hostname").is_none());
        let dsts: Vec<&str> = v["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .map(|m| m["destination"].as_str().expect("dst"))
            .collect();
        assert_eq!(
            dsts,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/run"
            ]
        );
        assert_eq!(v["mounts"][5]["options"][3], "ro");
        assert_eq!(v["mounts"][3]["source"], "shm");
    }

    #[test]
    fn linux_defaults() {
        let v = json("k8s.io", "abc");
        let l = &v["linux"];
        assert_eq!(l["cgroupsPath"], "/k8s.io/abc");
        let ns: Vec<&str> = l["namespaces"]
            .as_array()
            .expect("ns")
            .iter()
            .map(|n| n["type"].as_str().expect("type"))
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "network"]);
        assert_eq!(l["maskedPaths"].as_array().map(Vec::len), Some(10));
        assert_eq!(l["readonlyPaths"][3], "/proc/sys");
        let devs = l["resources"]["devices"].as_array().expect("devices");
        assert_eq!(
            devs[0],
            serde_json::json!({"allow": false, "access": "rwm"})
        );
        assert!(devs[1..]
            .iter()
            .all(|d| d["allow"] == true && d["type"] == "c"));
        assert!(devs
            .iter()
            .any(|d| d["major"] == 1 && d["minor"] == 3 && d["access"] == "rwm"));
        assert!(devs
            .iter()
            .any(|d| d["major"] == 136 && d.get("minor").is_none()));
    }

    #[test]
    fn round_trips_through_json() {
        let spec = default_spec("default", "c1").expect("spec");
        let bytes = crate::to_json(&spec).expect("json");
        let back: Spec = serde_json::from_slice(&bytes).expect("parse");
        assert_eq!(back, spec);
    }
}
