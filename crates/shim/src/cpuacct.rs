//! CPU usage of a cgroup v1 container from `cpuacct`: containerd-shim's v1 collector reads only
//! `cpu.stat` (throttling, and v2's usage keys, which v1 lacks), so usage would read zero.

use std::path::PathBuf;

use containerd_shim_protos::cgroups::metrics::Metrics;

/// The cpuacct directory of `pid`'s cgroup, from /proc/<pid>/cgroup and the hierarchy's mount.
fn cpuacct_dir(pid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "cpuacct")
            .then(|| path.trim_start_matches('/').to_string())
    })?;
    [
        "/sys/fs/cgroup/cpuacct",
        "/sys/fs/cgroup/cpu,cpuacct",
        "/sys/fs/cgroup/cpuacct,cpu",
    ]
    .iter()
    .map(|m| PathBuf::from(m).join(&rel))
    .find(|d| d.join("cpuacct.usage").exists())
}

fn read_u64(dir: &std::path::Path, file: &str) -> Option<u64> {
    std::fs::read_to_string(dir.join(file))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Fills total, user, kernel and per-CPU usage (nanoseconds) where cpuacct has them.
pub fn fill(metrics: &mut Metrics, pid: u32) {
    let Some(dir) = cpuacct_dir(pid) else {
        return;
    };
    let usage = metrics
        .cpu
        .mut_or_insert_default()
        .usage
        .mut_or_insert_default();
    if let Some(total) = read_u64(&dir, "cpuacct.usage") {
        usage.total = total;
    }
    if let Some(user) = read_u64(&dir, "cpuacct.usage_user") {
        usage.user = user;
    }
    if let Some(sys) = read_u64(&dir, "cpuacct.usage_sys") {
        usage.kernel = sys;
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("cpuacct.usage_percpu")) {
        usage.per_cpu = text
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cgroup_usage_is_read_on_v1_hosts() {
        let mut m = Metrics::new();
        fill(&mut m, std::process::id());
        if cpuacct_dir(std::process::id()).is_some() {
            // This test process has used CPU to get here.
            assert!(m.cpu.usage.total > 0);
            assert!(!m.cpu.usage.per_cpu.is_empty());
        } else {
            assert!(m.cpu.is_none(), "nothing invented without cpuacct");
        }
    }
}
