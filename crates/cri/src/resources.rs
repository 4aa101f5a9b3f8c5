//! CRI resource limits as the spec's cgroup settings, and the OOM score adjustment.

use k8s_cri::v1::LinuxContainerResources;
use oci_spec::runtime::{LinuxHugepageLimit, Spec};

use crate::error::{Error, Result};
use crate::util;

/// `requested` within the kernel's range, and no lower than the lowest value the daemon may
/// set (it cannot give a child a lower score than its own without CAP_SYS_RESOURCE).
pub(crate) fn clamp_oom(requested: i64, min: i32) -> i32 {
    let v = requested.clamp(-1000, 1000) as i32;
    v.max(min.clamp(-1000, 1000))
}

fn non_negative(field: &'static str, v: i64) -> Result<()> {
    if v < 0 {
        return Err(Error::InvalidValue {
            field,
            value: v.to_string(),
            why: "must not be negative",
        });
    }
    Ok(())
}

/// The cgroup settings of `r` alone, for UpdateContainerResources on a running container.
pub fn linux_resources(r: &LinuxContainerResources) -> Result<oci_spec::runtime::LinuxResources> {
    let mut spec = Spec::default();
    apply(&mut spec, r, -1000)?;
    Ok(spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .unwrap_or_default())
}

/// Applies the non-zero fields (zero means "not specified" in the CRI).
pub(crate) fn apply(spec: &mut Spec, r: &LinuxContainerResources, oom_min: i32) -> Result<()> {
    non_negative("cpu_period", r.cpu_period)?;
    non_negative("cpu_shares", r.cpu_shares)?;
    non_negative("memory_limit_in_bytes", r.memory_limit_in_bytes)?;
    if r.cpu_quota < -1 {
        return Err(Error::InvalidValue {
            field: "cpu_quota",
            value: r.cpu_quota.to_string(),
            why: "want -1 (unlimited) or a positive number of microseconds",
        });
    }
    if r.memory_swap_limit_in_bytes < -1 {
        return Err(Error::InvalidValue {
            field: "memory_swap_limit_in_bytes",
            value: r.memory_swap_limit_in_bytes.to_string(),
            why: "want -1 (unlimited) or a number of bytes",
        });
    }
    let hugepages = r
        .hugepage_limits
        .iter()
        .map(|h| {
            let limit = i64::try_from(h.limit).map_err(|_| Error::InvalidValue {
                field: "hugepage limit",
                value: h.limit.to_string(),
                why: "too large",
            })?;
            let mut l = LinuxHugepageLimit::default();
            l.set_page_size(h.page_size.clone());
            l.set_limit(limit);
            Ok(l)
        })
        .collect::<Result<Vec<_>>>()?;

    let res = util::resources_mut(spec);
    let mut cpu = res.cpu().clone().unwrap_or_default();
    if r.cpu_period != 0 {
        cpu.set_period(Some(r.cpu_period as u64));
    }
    if r.cpu_quota != 0 {
        cpu.set_quota(Some(r.cpu_quota));
    }
    if r.cpu_shares != 0 {
        cpu.set_shares(Some(r.cpu_shares as u64));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.set_cpus(Some(r.cpuset_cpus.clone()));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.set_mems(Some(r.cpuset_mems.clone()));
    }
    if cpu != Default::default() {
        res.set_cpu(Some(cpu));
    }
    let mut mem = res.memory().unwrap_or_default();
    if r.memory_limit_in_bytes != 0 {
        mem.set_limit(Some(r.memory_limit_in_bytes));
    }
    if r.memory_swap_limit_in_bytes != 0 {
        mem.set_swap(Some(r.memory_swap_limit_in_bytes));
    }
    if mem != Default::default() {
        res.set_memory(Some(mem));
    }
    if !hugepages.is_empty() {
        res.set_hugepage_limits(Some(hugepages));
    }
    if !r.unified.is_empty() {
        let unified = res.unified_mut().get_or_insert_with(Default::default);
        unified.extend(r.unified.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    util::process_mut(spec).set_oom_score_adj(Some(clamp_oom(r.oom_score_adj, oom_min)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::HugepageLimit;

    fn json(spec: &Spec) -> serde_json::Value {
        serde_json::to_value(spec).expect("json")
    }

    #[test]
    fn oom_clamping() {
        assert_eq!(clamp_oom(-998, -1000), -998);
        assert_eq!(clamp_oom(-998, 0), 0);
        assert_eq!(clamp_oom(500, 0), 500);
        assert_eq!(clamp_oom(-5000, -2000), -1000);
        assert_eq!(clamp_oom(5000, 0), 1000);
    }

    #[test]
    fn all_fields() {
        let mut spec = berth_spec::default_spec("k8s.io", "c").expect("spec");
        let r = LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: -997,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            unified: [("memory.high".to_string(), "1000000".to_string())].into(),
            memory_swap_limit_in_bytes: 128 << 20,
        };
        apply(&mut spec, &r, -500).expect("apply");
        let j = json(&spec);
        let res = &j["linux"]["resources"];
        assert_eq!(res["cpu"]["period"], 100_000);
        assert_eq!(res["cpu"]["quota"], 50_000);
        assert_eq!(res["cpu"]["shares"], 512);
        assert_eq!(res["cpu"]["cpus"], "0-1");
        assert_eq!(res["cpu"]["mems"], "0");
        assert_eq!(res["memory"]["limit"], 64 << 20);
        assert_eq!(res["memory"]["swap"], 128 << 20);
        assert_eq!(res["hugepageLimits"][0]["pageSize"], "2MB");
        assert_eq!(res["hugepageLimits"][0]["limit"], 4 << 20);
        assert_eq!(res["unified"]["memory.high"], "1000000");
        assert_eq!(j["process"]["oomScoreAdj"], -500);
        // The default device rules are untouched.
        assert_eq!(res["devices"][0]["allow"], false);
    }

    #[test]
    fn zero_means_unset() {
        let mut spec = berth_spec::default_spec("k8s.io", "c").expect("spec");
        apply(&mut spec, &LinuxContainerResources::default(), -1000).expect("apply");
        let j = json(&spec);
        assert!(j["linux"]["resources"].get("cpu").is_none());
        assert!(j["linux"]["resources"].get("memory").is_none());
        assert_eq!(j["process"]["oomScoreAdj"], 0);
    }

    #[test]
    fn negative_values_are_refused() {
        let mut spec = berth_spec::default_spec("k8s.io", "c").expect("spec");
        for r in [
            LinuxContainerResources {
                cpu_shares: -2,
                ..Default::default()
            },
            LinuxContainerResources {
                memory_limit_in_bytes: -1,
                ..Default::default()
            },
            LinuxContainerResources {
                cpu_quota: -5,
                ..Default::default()
            },
        ] {
            let e = apply(&mut spec, &r, 0).expect_err("negative");
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{e}");
        }
        let ok = LinuxContainerResources {
            cpu_quota: -1,
            ..Default::default()
        };
        apply(&mut spec, &ok, 0).expect("unlimited quota");
    }
}
