//! berthd's configuration: one TOML file, every key optional, flags override it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Persistent data: metadata, content, snapshots.
    pub root: PathBuf,
    /// Per-boot state (tmpfs): sockets, runtime state.
    pub state: PathBuf,
    /// gRPC unix socket.
    pub address: PathBuf,
    /// Default snapshotter for clients that do not name one.
    pub snapshotter: String,
    /// Seconds to wait after a delete before garbage collection runs (coalesces bursts of deletes).
    pub gc_delay_ms: u64,
    pub registry: RegistryConfig,
    pub cri: CriConfig,
    pub sandbox: SandboxConfig,
}

/// `[sandbox]`: the guest-kernel runtime (`io.containerd.berth-sandbox.v2`, CRI handler
/// `sandbox`). berthd hands these to the sandbox shim as a JSON file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// The User-Mode Linux kernel (Debian's user-mode-linux package).
    pub kernel: PathBuf,
    /// The statically linked guest agent; empty: beside the shim or /usr/local/lib/berth.
    pub agent: PathBuf,
    /// Guest memory of a pod that sets no memory limit (UML needs at least 64).
    pub memory_mb: u64,
    /// The unprivileged host uid guest kernels run as (guest root maps to it).
    pub host_uid: u32,
    pub boot_timeout_secs: u64,
    /// Guests booted ahead of pods (0: none), so a sandboxed pod starts about as fast as a
    /// runc one. Each holds `memory_mb` of host memory while it waits.
    pub pool_size: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            kernel: "/usr/bin/linux.uml".into(),
            agent: PathBuf::new(),
            memory_mb: 128,
            host_uid: 1_000_000_000,
            boot_timeout_secs: 30,
            pool_size: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// containerd's hosts.toml layout: `<config_path>/<host>/hosts.toml`.
    pub config_path: PathBuf,
    /// A pull fails when a registry sends nothing for this long (containerd's
    /// `image_pull_progress_timeout`).
    pub stall_timeout_secs: u64,
    /// Layers of one pull downloaded at once.
    pub max_concurrent_downloads: usize,
    /// Credentials per registry host: `[registry.credentials."registry.example.com"]`.
    pub credentials: BTreeMap<String, RegistryCredentials>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryCredentials {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CriConfig {
    pub enabled: bool,
    pub sandbox_image: String,
    pub default_runtime: String,
    pub stream_server_address: String,
    pub stream_server_port: u16,
    /// An exec/attach/port-forward connection with no traffic for this long is closed
    /// (containerd's `stream_idle_timeout`, the kubelet's 4 h).
    pub stream_idle_timeout_secs: u64,
    /// Serve exec/attach/port-forward over TLS (containerd's `enable_tls_streaming`): with the
    /// key pair below, or a self-signed certificate made at start-up when they are empty.
    pub enable_tls_streaming: bool,
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
    pub cni: CniConfig,
    pub runtimes: BTreeMap<String, RuntimeConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    pub runtime_type: String,
    pub options: BTreeMap<String, toml::Value>,
    /// Pod annotations passed into the pause container's OCI spec (glob patterns, `*` wildcard),
    /// as containerd's `pod_annotations`; others stay CRI metadata only.
    pub pod_annotations: Vec<String>,
    /// Container annotations passed into the container's OCI spec (containerd's
    /// `container_annotations`).
    pub container_annotations: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: "/var/lib/berth".into(),
            state: "/run/berth".into(),
            address: "/run/berth/berth.sock".into(),
            snapshotter: "overlayfs".into(),
            gc_delay_ms: 100,
            registry: RegistryConfig::default(),
            cri: CriConfig::default(),
            sandbox: SandboxConfig::default(),
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            config_path: "/etc/berth/certs.d".into(),
            stall_timeout_secs: 300,
            max_concurrent_downloads: 3,
            credentials: BTreeMap::new(),
        }
    }
}

impl Default for CriConfig {
    fn default() -> Self {
        let runtime = |binary: &str| RuntimeConfig {
            runtime_type: "io.containerd.berth.v2".into(),
            options: BTreeMap::from([("binary_name".into(), toml::Value::from(binary))]),
            ..Default::default()
        };
        CriConfig {
            enabled: true,
            sandbox_image: "registry.k8s.io/pause:3.10".into(),
            default_runtime: "runc".into(),
            stream_server_address: "127.0.0.1".into(),
            stream_server_port: 0,
            stream_idle_timeout_secs: 4 * 3600,
            enable_tls_streaming: false,
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            cni: CniConfig::default(),
            runtimes: BTreeMap::from([
                ("runc".into(), runtime("runc")),
                ("crun".into(), runtime("crun")),
                (
                    "sandbox".into(),
                    RuntimeConfig {
                        runtime_type: crate::sandbox::RUNTIME_TYPE.into(),
                        ..Default::default()
                    },
                ),
            ]),
        }
    }
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
        }
    }
}

impl Config {
    /// Reads `path`; a missing file is only an error when the operator named it explicitly.
    pub fn load(path: &Path, explicit: bool) -> anyhow::Result<Config> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                Config::parse(&text).with_context(|| format!("parse config {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(Config::default())
            }
            Err(e) => Err(e).with_context(|| format!("read config {}", path.display())),
        }
    }

    /// A config file's settings over the defaults. RuntimeClass handlers a file declares are
    /// added to the default ones (`runc`, `crun`, `sandbox`) or replace them by name, as
    /// containerd merges `runtimes` tables: declaring one handler does not remove the others.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let mut c: Config = toml::from_str(text)?;
        for (name, rt) in CriConfig::default().runtimes {
            c.cri.runtimes.entry(name).or_insert(rt);
        }
        Ok(c)
    }

    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_and_keeps_design_keys() {
        let text = Config::default().to_toml().expect("serialise");
        for key in [
            "root = ",
            "state = ",
            "address = ",
            "[registry]",
            "config_path",
            "[cri]",
            "sandbox_image",
            "[cri.cni]",
            "bin_dirs",
            "[cri.runtimes.runc]",
            "runtime_type",
        ] {
            assert!(text.contains(key), "default config lacks {key}:\n{text}");
        }
        let back: Config = toml::from_str(&text).expect("parse default");
        assert_eq!(back.address, Config::default().address);
    }

    #[test]
    fn partial_file_keeps_defaults_and_unknown_keys_fail() {
        let c: Config =
            toml::from_str("root = \"/tmp/x\"\n[cri]\nenabled = false\n").expect("parse");
        assert_eq!(c.root, PathBuf::from("/tmp/x"));
        assert_eq!(c.state, PathBuf::from("/run/berth"));
        assert!(!c.cri.enabled);
        assert_eq!(c.cri.default_runtime, "runc");
        assert!(toml::from_str::<Config>("rooot = \"/x\"").is_err());
    }

    #[test]
    fn declared_handlers_join_the_default_ones() {
        let c = Config::parse(
            "[cri.runtimes.runc]\nruntime_type = \"io.containerd.berth.v2\"\n\
             options = { binary_name = \"runc\", root = \"/x/runc\" }\n\
             [cri.runtimes.kata]\nruntime_type = \"io.containerd.kata.v2\"\n",
        )
        .expect("parse");
        let names: Vec<&str> = c.cri.runtimes.keys().map(String::as_str).collect();
        assert_eq!(names, ["crun", "kata", "runc", "sandbox"]);
        assert_eq!(
            c.cri.runtimes["runc"]
                .options
                .get("root")
                .and_then(|v| v.as_str()),
            Some("/x/runc"),
            "a declared handler replaces the default of that name"
        );
    }
}
