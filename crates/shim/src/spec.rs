//! Small edits and lookups on OCI bundle JSON.

use std::path::Path;

use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::Options;
use serde_json::Value;

use crate::error::{Error, Result};

const CAP_SYS_RESOURCE: u32 = 24;

/// The lowest oom_score_adj this process may give a child: without
/// CAP_SYS_RESOURCE the kernel refuses to go below our own value.
pub fn oom_score_floor() -> Option<i64> {
    if has_cap(CAP_SYS_RESOURCE) {
        return None;
    }
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn has_cap(bit: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1u64 << bit) != 0)
}

/// Raises a `process.oomScoreAdj` below `floor` to `floor`. Returns true if changed.
pub fn clamp_oom_score(process: &mut Value, floor: i64) -> bool {
    match process.get("oomScoreAdj").and_then(Value::as_i64) {
        Some(v) if v < floor => {
            process["oomScoreAdj"] = Value::from(floor);
            true
        }
        _ => false,
    }
}

/// Clamps the bundle's `config.json` in place before the runtime reads it.
pub fn clamp_bundle_oom_score(bundle: &Path) -> Result<()> {
    let Some(floor) = oom_score_floor() else {
        return Ok(());
    };
    let path = bundle.join("config.json");
    let data = std::fs::read(&path).map_err(Error::io(format!("read {}", path.display())))?;
    let mut spec: Value = serde_json::from_slice(&data)
        .map_err(|e| Error::InvalidArgument(format!("parse {}: {e}", path.display())))?;
    let changed = spec
        .get_mut("process")
        .is_some_and(|p| clamp_oom_score(p, floor));
    if changed {
        let out = serde_json::to_vec(&spec).map_err(|e| Error::Other(e.to_string()))?;
        std::fs::write(&path, out).map_err(Error::io(format!("write {}", path.display())))?;
    }
    Ok(())
}

/// The pod grouping key containerd's runc shim uses: one shim per sandbox.
pub fn sandbox_group(bundle: &Path) -> Option<String> {
    let data = std::fs::read(bundle.join("config.json")).ok()?;
    let spec: Value = serde_json::from_slice(&data).ok()?;
    spec.get("annotations")?
        .get("io.kubernetes.cri.sandbox-id")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

pub const OPTIONS_TYPE: &str = "containerd.runc.v1.Options";
const OPTIONS_FILE: &str = "options.json";

/// Decodes runtime options from an `Any` if it carries `containerd.runc.v1.Options`.
pub fn options_from_any(type_url: &str, value: &[u8]) -> Result<Option<Options>> {
    if type_url.rsplit('/').next() != Some(OPTIONS_TYPE) {
        return Ok(None);
    }
    Options::parse_from_bytes(value)
        .map(Some)
        .map_err(|e| Error::InvalidArgument(format!("runtime options: {e}")))
}

/// Saved by `start` so later calls (and `delete`) know the runtime binary/root.
pub fn write_options(bundle: &Path, o: &Options) -> Result<()> {
    let v = serde_json::json!({
        "binary_name": o.binary_name,
        "root": o.root,
        "systemd_cgroup": o.systemd_cgroup,
        "no_pivot_root": o.no_pivot_root,
        "no_new_keyring": o.no_new_keyring,
        "shim_cgroup": o.shim_cgroup,
    });
    std::fs::write(bundle.join(OPTIONS_FILE), v.to_string())
        .map_err(Error::io("write options.json"))
}

pub fn read_options(bundle: &Path) -> Option<Options> {
    let data = std::fs::read(bundle.join(OPTIONS_FILE)).ok()?;
    let v: Value = serde_json::from_slice(&data).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let b = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    Some(Options {
        binary_name: s("binary_name"),
        root: s("root"),
        shim_cgroup: s("shim_cgroup"),
        systemd_cgroup: b("systemd_cgroup"),
        no_pivot_root: b("no_pivot_root"),
        no_new_keyring: b("no_new_keyring"),
        ..Default::default()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn clamps_only_below_floor() {
        let mut p = serde_json::json!({"oomScoreAdj": -999});
        assert!(clamp_oom_score(&mut p, 0));
        assert_eq!(p["oomScoreAdj"], 0);
        let mut p = serde_json::json!({"oomScoreAdj": 100});
        assert!(!clamp_oom_score(&mut p, 0));
        let mut p = serde_json::json!({"args": ["sh"]});
        assert!(!clamp_oom_score(&mut p, 0));
    }

    #[test]
    fn options_roundtrip_through_file() {
        let d = tempfile::tempdir().unwrap();
        let o = Options {
            binary_name: "crun".into(),
            root: "/x".into(),
            systemd_cgroup: true,
            ..Default::default()
        };
        write_options(d.path(), &o).unwrap();
        let r = read_options(d.path()).unwrap();
        assert_eq!(r.binary_name, "crun");
        assert_eq!(r.root, "/x");
        assert!(r.systemd_cgroup);
        let bytes = o.write_to_bytes().unwrap();
        let parsed = options_from_any("containerd.runc.v1.Options", &bytes)
            .unwrap()
            .unwrap();
        assert_eq!(parsed.binary_name, "crun");
        assert!(options_from_any("other.Type", &bytes).unwrap().is_none());
    }

    #[test]
    fn sandbox_annotation_groups() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        )
        .unwrap();
        assert_eq!(sandbox_group(d.path()).as_deref(), Some("pod1"));
    }
}
