//! Decoding a task's metrics Any: containerd's cgroup v1 and v2 `Metrics` messages. Only the
//! fields `ctr task metrics` shows are declared; prost skips the rest of the wire data.

use anyhow::{bail, Result};
use prost::Message;
use serde_json::{json, Value};

use berth_api::metrics::{v1, v2};

/// Metric name → value, in display order (cgroup file names, as ctr prints them).
pub fn decode(any: &prost_types::Any) -> Result<Vec<(String, Value)>> {
    let mut out: Vec<(String, Value)> = Vec::new();
    let mut put = |k: &str, v: Value| out.push((k.to_string(), v));
    if any.type_url.ends_with("cgroups.v1.Metrics") {
        let m = v1::Metrics::decode(any.value.as_slice())?;
        if let Some(mem) = m.memory {
            let u = mem.usage.unwrap_or_default();
            put("memory.usage_in_bytes", json!(u.usage));
            put("memory.limit_in_bytes", json!(u.limit));
            put("memory.max_usage_in_bytes", json!(u.max));
            put("memory.failcnt", json!(u.failcnt));
            put("memory.stat.cache", json!(mem.cache));
            put("memory.stat.rss", json!(mem.rss));
        }
        if let Some(u) = m.cpu.and_then(|c| c.usage) {
            put("cpuacct.usage", json!(u.total));
            put("cpuacct.usage_percpu", json!(u.per_cpu));
            put("cpuacct.usage_user", json!(u.user));
            put("cpuacct.usage_sys", json!(u.kernel));
        }
        if let Some(p) = m.pids {
            put("pids.current", json!(p.current));
            put("pids.limit", json!(p.limit));
        }
    } else if any.type_url.ends_with("cgroups.v2.Metrics") {
        let m = v2::Metrics::decode(any.value.as_slice())?;
        if let Some(mem) = m.memory {
            put("memory.usage", json!(mem.usage));
            put("memory.usage_limit", json!(mem.usage_limit));
            put("memory.swap_usage", json!(mem.swap_usage));
            put("memory.swap_limit", json!(mem.swap_limit));
        }
        if let Some(c) = m.cpu {
            put("cpu.usage_usec", json!(c.usage_usec));
            put("cpu.user_usec", json!(c.user_usec));
            put("cpu.system_usec", json!(c.system_usec));
        }
        if let Some(p) = m.pids {
            put("pids.current", json!(p.current));
            put("pids.limit", json!(p.limit));
        }
    } else {
        bail!("cannot decode metrics of type {:?}", any.type_url);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_roundtrip() {
        let m = v1::Metrics {
            pids: Some(v1::PidsStat {
                current: 3,
                limit: 0,
            }),
            cpu: Some(v1::CpuStat {
                usage: Some(v1::CpuUsage {
                    total: 1000,
                    kernel: 1,
                    user: 2,
                    per_cpu: vec![600, 400],
                }),
            }),
            memory: Some(v1::MemoryStat {
                cache: 5,
                rss: 6,
                usage: Some(v1::MemoryEntry {
                    limit: 16 << 20,
                    usage: 4096,
                    max: 8192,
                    failcnt: 0,
                }),
                ..Default::default()
            }),
        };
        let any = prost_types::Any {
            type_url: "io.containerd.cgroups.v1.Metrics".into(),
            value: m.encode_to_vec(),
        };
        let d = decode(&any).expect("decode");
        let get = |k: &str| d.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("memory.usage_in_bytes"), Some(json!(4096)));
        assert_eq!(get("memory.limit_in_bytes"), Some(json!(16 << 20)));
        assert_eq!(get("cpuacct.usage_percpu"), Some(json!([600, 400])));
        assert_eq!(get("pids.current"), Some(json!(3)));
        let bad = prost_types::Any {
            type_url: "x.Other".into(),
            value: vec![],
        };
        assert!(decode(&bad).is_err());
    }
}
