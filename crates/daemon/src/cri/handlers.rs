//! RuntimeClass handlers: `[cri.runtimes.<handler>]` names a shim (`runtime_type`) and its
//! options; a pod picks one with `runtime_handler`, the empty handler is `default_runtime`.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;
use tonic::Status;

use crate::config::CriConfig;

/// containerd's `containerd.runc.v1.Options` (api/types/runc/options/oci.proto): the options
/// berth's shim and containerd's runc shim read. Only the fields berth sets are declared.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RuncOptions {
    #[prost(string, tag = "6")]
    pub binary_name: String,
    #[prost(string, tag = "7")]
    pub root: String,
    #[prost(bool, tag = "9")]
    pub systemd_cgroup: bool,
}

const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";

#[derive(Debug, Clone)]
pub struct Handler {
    pub name: String,
    pub runtime_type: String,
    pub options: Option<prost_types::Any>,
    /// Set when the handler's runtime binary is not installed: the reason it cannot run pods.
    pub unavailable: Option<String>,
    pub pod_annotations: Vec<String>,
    pub container_annotations: Vec<String>,
    /// The runtime reads the pod's network from its namespace when the sandbox is created
    /// (a guest kernel takes the interface over), so CNI ADD must finish first.
    pub network_first: bool,
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|&i| tail.is_char_boundary(i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

/// The annotations a handler lets through into an OCI spec.
pub fn allowed(
    patterns: &[String],
    annotations: &std::collections::HashMap<String, String>,
) -> std::collections::HashMap<String, String> {
    annotations
        .iter()
        .filter(|(k, _)| patterns.iter().any(|p| glob(p, k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub struct Handlers {
    default: String,
    by_name: BTreeMap<String, Handler>,
}

fn on_path(binary: &str) -> bool {
    if binary.contains('/') {
        return Path::new(binary).is_file();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(binary).is_file()))
        .unwrap_or(false)
}

impl Handlers {
    pub fn from_config(cfg: &CriConfig, sandbox_kernel: &Path) -> Handlers {
        let mut by_name = BTreeMap::new();
        for (name, rt) in &cfg.runtimes {
            let text = |k: &str| {
                rt.options
                    .get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let opts = RuncOptions {
                binary_name: text("binary_name"),
                root: text("root"),
                systemd_cgroup: rt
                    .options
                    .get("systemd_cgroup")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
            };
            let sandboxed = rt.runtime_type == crate::sandbox::RUNTIME_TYPE;
            let unavailable = if sandboxed {
                crate::sandbox::unavailable(sandbox_kernel)
            } else {
                (!opts.binary_name.is_empty() && !on_path(&opts.binary_name))
                    .then(|| format!("its runtime binary {:?} is not installed", opts.binary_name))
            };
            let options = (opts != RuncOptions::default()).then(|| prost_types::Any {
                type_url: RUNC_OPTIONS_TYPE.into(),
                value: opts.encode_to_vec(),
            });
            by_name.insert(
                name.clone(),
                Handler {
                    name: name.clone(),
                    runtime_type: rt.runtime_type.clone(),
                    options,
                    unavailable,
                    pod_annotations: rt.pod_annotations.clone(),
                    container_annotations: rt.container_annotations.clone(),
                    network_first: sandboxed,
                },
            );
        }
        Handlers {
            default: cfg.default_runtime.clone(),
            by_name,
        }
    }

    /// The handler a pod asked for; an unknown or unusable one is InvalidArgument naming it.
    pub fn get(&self, requested: &str) -> Result<&Handler, Status> {
        let name = if requested.is_empty() {
            &self.default
        } else {
            requested
        };
        let h = self.by_name.get(name).ok_or_else(|| {
            Status::invalid_argument(format!(
                "no runtime for handler {name:?} is configured (configured: {})",
                self.by_name.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        if let Some(why) = &h.unavailable {
            return Err(Status::invalid_argument(format!(
                "runtime handler {name:?} cannot run pods: {why}"
            )));
        }
        Ok(h)
    }

    /// Handler names and whether each can run pods (for Status' verbose info).
    pub fn summary(&self) -> Vec<(String, bool)> {
        self.by_name
            .values()
            .map(|h| (h.name.clone(), h.unavailable.is_none()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_annotations_pass() {
        let a: std::collections::HashMap<String, String> = [
            ("io.katacontainers.config.hypervisor.x", "1"),
            ("example.com/keep", "2"),
            ("example.com/drop", "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let kept = allowed(
            &["io.katacontainers.*".into(), "example.com/keep".into()],
            &a,
        );
        assert_eq!(kept.len(), 2);
        assert!(!kept.contains_key("example.com/drop"));
        assert!(allowed(&[], &a).is_empty());
        assert!(glob("*", "anything"));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("a*c", "abd"));
    }

    #[test]
    fn default_unknown_and_missing_binaries() {
        let mut cfg = CriConfig::default();
        cfg.runtimes.insert(
            "ghost".into(),
            crate::config::RuntimeConfig {
                runtime_type: "io.containerd.berth.v2".into(),
                options: [(
                    "binary_name".into(),
                    toml::Value::from("no-such-runtime-xyz"),
                )]
                .into(),
                ..Default::default()
            },
        );
        let h = Handlers::from_config(&cfg, Path::new("/usr/bin/linux.uml"));
        let e = h.get("nope").expect_err("unknown");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("\"nope\""), "{}", e.message());
        let e = h.get("ghost").expect_err("missing binary");
        assert!(
            e.message().contains("no-such-runtime-xyz"),
            "{}",
            e.message()
        );
        let missing = Handlers::from_config(&cfg, Path::new("/nonexistent/linux.uml"));
        let e = missing.get("sandbox").expect_err("no guest kernel");
        assert!(
            e.message().contains("/nonexistent/linux.uml") && e.message().contains("sandbox"),
            "{}",
            e.message()
        );
        if on_path("runc") {
            let d = h.get("").expect("default");
            assert_eq!(d.name, "runc");
            let any = d.options.as_ref().expect("options");
            let o = RuncOptions::decode(any.value.as_slice()).expect("decode");
            assert_eq!(o.binary_name, "runc");
        }
    }
}
