//! Capability names as the CRI sends them (`NET_ADMIN`, `CAP_NET_ADMIN`, `ALL`, any case) and
//! the capability sets of a spec's process.

use std::collections::HashSet;

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, Spec};

use crate::error::{Error, Result};

/// (name without `CAP_`, kernel number, value): the kernel numbers decide which capabilities
/// "ALL" and privileged mean on this host (those up to `/proc/sys/kernel/cap_last_cap`).
const TABLE: [(&str, u32, Capability); 41] = [
    ("CHOWN", 0, Capability::Chown),
    ("DAC_OVERRIDE", 1, Capability::DacOverride),
    ("DAC_READ_SEARCH", 2, Capability::DacReadSearch),
    ("FOWNER", 3, Capability::Fowner),
    ("FSETID", 4, Capability::Fsetid),
    ("KILL", 5, Capability::Kill),
    ("SETGID", 6, Capability::Setgid),
    ("SETUID", 7, Capability::Setuid),
    ("SETPCAP", 8, Capability::Setpcap),
    ("LINUX_IMMUTABLE", 9, Capability::LinuxImmutable),
    ("NET_BIND_SERVICE", 10, Capability::NetBindService),
    ("NET_BROADCAST", 11, Capability::NetBroadcast),
    ("NET_ADMIN", 12, Capability::NetAdmin),
    ("NET_RAW", 13, Capability::NetRaw),
    ("IPC_LOCK", 14, Capability::IpcLock),
    ("IPC_OWNER", 15, Capability::IpcOwner),
    ("SYS_MODULE", 16, Capability::SysModule),
    ("SYS_RAWIO", 17, Capability::SysRawio),
    ("SYS_CHROOT", 18, Capability::SysChroot),
    ("SYS_PTRACE", 19, Capability::SysPtrace),
    ("SYS_PACCT", 20, Capability::SysPacct),
    ("SYS_ADMIN", 21, Capability::SysAdmin),
    ("SYS_BOOT", 22, Capability::SysBoot),
    ("SYS_NICE", 23, Capability::SysNice),
    ("SYS_RESOURCE", 24, Capability::SysResource),
    ("SYS_TIME", 25, Capability::SysTime),
    ("SYS_TTY_CONFIG", 26, Capability::SysTtyConfig),
    ("MKNOD", 27, Capability::Mknod),
    ("LEASE", 28, Capability::Lease),
    ("AUDIT_WRITE", 29, Capability::AuditWrite),
    ("AUDIT_CONTROL", 30, Capability::AuditControl),
    ("SETFCAP", 31, Capability::Setfcap),
    ("MAC_OVERRIDE", 32, Capability::MacOverride),
    ("MAC_ADMIN", 33, Capability::MacAdmin),
    ("SYSLOG", 34, Capability::Syslog),
    ("WAKE_ALARM", 35, Capability::WakeAlarm),
    ("BLOCK_SUSPEND", 36, Capability::BlockSuspend),
    ("AUDIT_READ", 37, Capability::AuditRead),
    ("PERFMON", 38, Capability::Perfmon),
    ("BPF", 39, Capability::Bpf),
    ("CHECKPOINT_RESTORE", 40, Capability::CheckpointRestore),
];

/// One CRI capability name; `ALL` is handled by the caller.
pub(crate) fn parse(name: &str) -> Result<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    TABLE
        .iter()
        .find(|(n, _, _)| *n == bare)
        .map(|(_, _, c)| *c)
        .ok_or_else(|| Error::UnknownCapability(name.to_string()))
}

pub(crate) fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// The highest capability number the running kernel knows; runc refuses or warns about the
/// others, so "all capabilities" means these.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Every capability the host kernel has.
pub(crate) fn all() -> Capabilities {
    let last = last_cap();
    TABLE
        .iter()
        .filter(|(_, n, _)| *n <= last)
        .map(|(_, _, c)| *c)
        .collect()
}

/// Sets bounding, effective and permitted to `caps` (inheritable and ambient stay empty, as
/// containerd does since the inheritable-set CVE-2022-24769).
pub(crate) fn set_all_sets(spec: &mut Spec, caps: Capabilities) {
    let process = crate::util::process_mut(spec);
    let mut c = process.capabilities().clone().unwrap_or(empty());
    c.set_bounding(Some(caps.clone()));
    c.set_effective(Some(caps.clone()));
    c.set_permitted(Some(caps));
    c.set_inheritable(None);
    process.set_capabilities(Some(c));
}

fn empty() -> LinuxCapabilities {
    let mut c = LinuxCapabilities::default();
    c.set_bounding(None);
    c.set_effective(None);
    c.set_inheritable(None);
    c.set_permitted(None);
    c.set_ambient(None);
    c
}

/// The bounding set: every capability the container's processes can ever hold.
pub(crate) fn bounding(spec: &Spec) -> HashSet<Capability> {
    spec.process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().clone())
        .unwrap_or_default()
}

/// Applies the CRI add/drop lists the way containerd does: "ALL" in add starts from every
/// capability, "ALL" in drop from none, then the named ones are added and dropped.
/// `ambient` names are added to every set including ambient and inheritable.
pub(crate) fn apply(
    spec: &mut Spec,
    add: &[String],
    drop: &[String],
    ambient: &[String],
) -> Result<()> {
    let mut set = bounding(spec);
    if add.iter().any(|c| is_all(c)) {
        set = all();
    }
    if drop.iter().any(|c| is_all(c)) {
        set.clear();
    }
    for name in add.iter().chain(ambient).filter(|c| !is_all(c)) {
        set.insert(parse(name)?);
    }
    for name in drop.iter().filter(|c| !is_all(c)) {
        set.remove(&parse(name)?);
    }
    let ambient_set = ambient
        .iter()
        .filter(|c| !is_all(c))
        .map(|c| parse(c))
        .collect::<Result<HashSet<_>>>()?;
    // A dropped capability leaves every set, ambient ones included.
    let ambient_set: HashSet<_> = ambient_set.intersection(&set).copied().collect();
    set_all_sets(spec, set);
    if !ambient_set.is_empty() {
        let process = crate::util::process_mut(spec);
        let mut c = process.capabilities().clone().unwrap_or(empty());
        c.set_inheritable(Some(ambient_set.clone()));
        c.set_ambient(Some(ambient_set));
        process.set_capabilities(Some(c));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_or_without_prefix() {
        assert_eq!(parse("net_admin").expect("bare"), Capability::NetAdmin);
        assert_eq!(
            parse("CAP_SYS_ADMIN").expect("prefixed"),
            Capability::SysAdmin
        );
        assert!(matches!(
            parse("CAP_FLY"),
            Err(Error::UnknownCapability(n)) if n == "CAP_FLY"
        ));
        assert!(is_all("all") && is_all("ALL") && !is_all("CHOWN"));
    }

    #[test]
    fn all_follows_kernel() {
        let a = all();
        assert!(a.contains(&Capability::Chown));
        assert_eq!(a.len() as u32, last_cap().min(40) + 1);
    }
}
