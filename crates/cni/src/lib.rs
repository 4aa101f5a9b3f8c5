//! CNI 1.0 client for berth's CRI: pod network namespaces and plugin chains.
//!
//! [`Cni`] loads the first network config of a directory, runs its plugins with the
//! CNI exec protocol (ADD in order, DEL in reverse, CHECK), caches what ADD ran and
//! returned under the state dir so teardown works after a restart or a config change,
//! and creates the persistent network namespaces the plugins work in.

mod cache;
mod chain;
mod config;
mod error;
mod exec;
mod keylock;
mod netns;
mod result;
mod types;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use error::Error;
pub use types::{Bandwidth, NetworkStatus, PodNetwork, PortMapping};

use chain::{Capabilities, Runner};
use config::NetworkList;
use exec::Env;

/// Default deadline for one plugin invocation.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Where configs, plugins and berth's own CNI state live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Network configs (`*.conflist`, `*.conf`, `*.json`); the first by file name is used.
    pub conf_dir: PathBuf,
    /// Plugin binaries, searched in order; also CNI_PATH for plugins that call others.
    pub bin_dirs: Vec<PathBuf>,
    /// Per-boot state: `netns/` (namespace files) and `cni-cache/` (ADD results).
    pub state_dir: PathBuf,
}

/// The CNI client. Cheap to clone; clones share the per-container locks.
#[derive(Debug, Clone)]
pub struct Cni {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    runner: Runner,
    locks: keylock::KeyLocks,
}

impl Cni {
    pub fn new(config: Config) -> Self {
        let runner = Runner {
            bin_dirs: config.bin_dirs.clone(),
            timeout: DEFAULT_PLUGIN_TIMEOUT,
        };
        Cni {
            inner: Arc::new(Inner {
                config,
                runner,
                locks: keylock::KeyLocks::default(),
            }),
        }
    }

    /// Replaces the per-plugin deadline (default [`DEFAULT_PLUGIN_TIMEOUT`]). A builder
    /// step: the result does not share per-container locks with earlier clones.
    pub fn with_plugin_timeout(self, timeout: Duration) -> Self {
        let mut runner = self.inner.runner.clone();
        runner.timeout = timeout;
        Cni {
            inner: Arc::new(Inner {
                config: self.inner.config.clone(),
                runner,
                locks: keylock::KeyLocks::default(),
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The directory holding the namespace files of [`Cni::create_netns`].
    pub fn netns_dir(&self) -> PathBuf {
        self.inner.config.state_dir.join("netns")
    }

    fn cache_dir(&self) -> PathBuf {
        self.inner.config.state_dir.join("cni-cache")
    }

    /// Ok when the first network config loads and every plugin it names (IPAM included)
    /// is installed; otherwise the reason, naming the directory or plugin. Reads the
    /// config dir synchronously (a few small files).
    pub fn status(&self) -> Result<(), Error> {
        let list = config::load_first(&self.inner.config.conf_dir)?;
        for plugin in &list.plugins {
            exec::find_plugin(&plugin.kind, &self.inner.config.bin_dirs)?;
            if let Some(ipam) = &plugin.ipam {
                exec::find_plugin(ipam, &self.inner.config.bin_dirs)?;
            }
        }
        Ok(())
    }

    /// Creates a persistent network namespace `<state_dir>/netns/<name>` with `lo` up
    /// and returns its path. Fails with [`Error::NetnsExists`] if the name is taken.
    pub async fn create_netns(&self, name: &str) -> Result<PathBuf, Error> {
        netns::create(self.netns_dir(), name.to_string()).await
    }

    /// Unmounts and deletes a namespace made by [`Cni::create_netns`]. Idempotent.
    /// Refuses paths outside the netns dir, so a bad argument cannot unmount anything else.
    pub async fn remove_netns(&self, path: &Path) -> Result<(), Error> {
        let dir = self.netns_dir();
        let inside = path.parent() == Some(dir.as_path())
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| validate::netns_name(n).is_ok());
        if !inside {
            return Err(Error::InvalidArgument {
                what: "netns path",
                why: format!(
                    "{} is not a namespace under {}",
                    path.display(),
                    dir.display()
                ),
            });
        }
        netns::remove(path.to_path_buf()).await
    }

    /// ADD: attaches the pod to the network of the first config in the conf dir.
    ///
    /// The cache entry is written before the first plugin runs and completed before this
    /// returns, so a teardown always knows what to undo. If a plugin fails, everything is
    /// deleted again (DEL over the whole list) and the plugin's error returned.
    pub async fn setup(&self, net: &PodNetwork) -> Result<NetworkStatus, Error> {
        let args = check_request(net)?;
        let _guard = self.inner.locks.lock(&net.container_id).await;
        let cache_dir = self.cache_dir();

        let conf_dir = self.inner.config.conf_dir.clone();
        let list = blocking(move || config::load_first(&conf_dir)).await?;

        if let Some(old) = read_cache(&cache_dir, &net.container_id).await? {
            // ADD twice without DEL is forbidden by the spec; a leftover entry means an
            // earlier setup was interrupted, so finish undoing it first.
            tracing::warn!(container_id = %net.container_id, "CNI cache entry exists at setup; tearing the old network down first");
            self.del_entry(&cache_dir, &old, &net.netns).await?;
        }

        let mut entry = cache::Entry {
            format: cache::Entry::new_format(),
            container_id: net.container_id.clone(),
            ifname: net.ifname.clone(),
            netns: net.netns.clone(),
            args: net.args.clone(),
            port_mappings: net.port_mappings.clone(),
            bandwidth: net.bandwidth,
            config_path: list.source.clone(),
            config: list.to_json(),
            result: None,
        };
        write_cache(&cache_dir, &entry).await?;

        let env = Env {
            container_id: net.container_id.clone(),
            netns: net.netns.display().to_string(),
            ifname: net.ifname.clone(),
            args,
            cni_path: self.inner.runner.cni_path(),
        };
        let caps = Capabilities {
            port_mappings: &net.port_mappings,
            bandwidth: net.bandwidth.as_ref(),
        };
        let mut progress = None;
        let added = self
            .inner
            .runner
            .add(&list, &env, caps, &mut progress)
            .await;
        let failure = match added {
            Ok(result) => {
                entry.result = Some(result.clone());
                match write_cache(&cache_dir, &entry).await {
                    Ok(()) => {
                        return Ok(NetworkStatus {
                            interfaces_ips: result::pod_ips(&result, &net.ifname),
                            result_json: result,
                        })
                    }
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };

        tracing::warn!(container_id = %net.container_id, error = %failure, "CNI ADD failed; deleting what was added");
        if let Err(e) = self
            .inner
            .runner
            .del(&list, &env, caps, progress.as_ref())
            .await
        {
            // Often the same broken config that failed ADD. The entry is dropped anyway:
            // kept, it would pin that config and make every later teardown fail even
            // after the config is fixed; without it teardown uses the current config.
            tracing::error!(container_id = %net.container_id, error = %e, "CNI DEL after failed ADD also failed");
        }
        if let Err(e) = remove_cache(&cache_dir, &net.container_id).await {
            tracing::warn!(container_id = %net.container_id, error = %e, "removing CNI cache after failed ADD");
        }
        Err(failure)
    }

    /// DEL: detaches the pod, in reverse plugin order, with the config and result cached
    /// by setup (the current config when nothing is cached). A missing namespace or an
    /// already-deleted network is fine; the cache entry is removed on success.
    pub async fn teardown(&self, net: &PodNetwork) -> Result<(), Error> {
        validate::container_id(&net.container_id).map_err(|why| Error::InvalidArgument {
            what: "container id",
            why,
        })?;
        let _guard = self.inner.locks.lock(&net.container_id).await;
        let cache_dir = self.cache_dir();

        if let Some(entry) = read_cache(&cache_dir, &net.container_id).await? {
            return self.del_entry(&cache_dir, &entry, &net.netns).await;
        }

        // Nothing cached: setup never finished writing, or this is a retry after success.
        // DEL with the current config cleans up whatever the plugins still hold.
        let args = check_request(net)?;
        let conf_dir = self.inner.config.conf_dir.clone();
        let list = match blocking(move || config::load_first(&conf_dir)).await {
            Ok(list) => list,
            Err(Error::NoConfig { dir }) => {
                tracing::warn!(container_id = %net.container_id, dir = %dir.display(), "no CNI cache and no config; nothing to tear down");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let env = Env {
            container_id: net.container_id.clone(),
            netns: live_netns(&[&net.netns]).await,
            ifname: net.ifname.clone(),
            args,
            cni_path: self.inner.runner.cni_path(),
        };
        let caps = Capabilities {
            port_mappings: &net.port_mappings,
            bandwidth: net.bandwidth.as_ref(),
        };
        self.inner.runner.del(&list, &env, caps, None).await
    }

    /// DEL from a cache entry, then removes the entry.
    async fn del_entry(
        &self,
        cache_dir: &Path,
        entry: &cache::Entry,
        netns: &Path,
    ) -> Result<(), Error> {
        let list = cached_list(cache_dir, entry)?;
        let env = Env {
            container_id: entry.container_id.clone(),
            netns: live_netns(&[netns, &entry.netns]).await,
            ifname: entry.ifname.clone(),
            args: validate::cni_args(&entry.args).map_err(|why| {
                Error::invalid_config(cache::path(cache_dir, &entry.container_id), why)
            })?,
            cni_path: self.inner.runner.cni_path(),
        };
        let caps = Capabilities {
            port_mappings: &entry.port_mappings,
            bandwidth: entry.bandwidth.as_ref(),
        };
        self.inner
            .runner
            .del(&list, &env, caps, entry.result.as_ref())
            .await?;
        remove_cache(cache_dir, &entry.container_id).await
    }

    /// CHECK with the cached result, when the config's cniVersion has CHECK (>= 0.4.0)
    /// and the list does not disable it; otherwise Ok without running anything.
    pub async fn check(&self, net: &PodNetwork) -> Result<(), Error> {
        validate::container_id(&net.container_id).map_err(|why| Error::InvalidArgument {
            what: "container id",
            why,
        })?;
        let _guard = self.inner.locks.lock(&net.container_id).await;
        let cache_dir = self.cache_dir();
        let not_set_up = || Error::NotSetUp {
            container_id: net.container_id.clone(),
        };
        let entry = read_cache(&cache_dir, &net.container_id)
            .await?
            .ok_or_else(not_set_up)?;
        let result = entry.result.as_ref().ok_or_else(not_set_up)?;
        let list = cached_list(&cache_dir, &entry)?;
        if list.disable_check || !list.version().supports_check() {
            return Ok(());
        }
        let env = Env {
            container_id: entry.container_id.clone(),
            netns: net.netns.display().to_string(),
            ifname: entry.ifname.clone(),
            args: validate::cni_args(&entry.args).map_err(|why| {
                Error::invalid_config(cache::path(&cache_dir, &entry.container_id), why)
            })?,
            cni_path: self.inner.runner.cni_path(),
        };
        let caps = Capabilities {
            port_mappings: &entry.port_mappings,
            bandwidth: entry.bandwidth.as_ref(),
        };
        self.inner.runner.check(&list, &env, caps, result).await
    }

    /// The status recorded by a completed setup, e.g. to report pod IPs after a daemon
    /// restart; `None` when the pod has no (complete) network.
    pub async fn cached_status(&self, container_id: &str) -> Result<Option<NetworkStatus>, Error> {
        validate::container_id(container_id).map_err(|why| Error::InvalidArgument {
            what: "container id",
            why,
        })?;
        let entry = read_cache(&self.cache_dir(), container_id).await?;
        Ok(entry.and_then(|e| {
            let ifname = e.ifname;
            e.result.map(|r| NetworkStatus {
                interfaces_ips: result::pod_ips(&r, &ifname),
                result_json: r,
            })
        }))
    }
}

/// Validates what setup passes to plugins; returns CNI_ARGS.
fn check_request(net: &PodNetwork) -> Result<String, Error> {
    let invalid = |what| move |why| Error::InvalidArgument { what, why };
    validate::container_id(&net.container_id).map_err(invalid("container id"))?;
    validate::ifname(&net.ifname).map_err(invalid("interface name"))?;
    if net.netns.as_os_str().is_empty() || !net.netns.is_absolute() {
        return Err(Error::InvalidArgument {
            what: "netns path",
            why: format!("{:?} is not an absolute path", net.netns),
        });
    }
    validate::cni_args(&net.args).map_err(invalid("CNI args"))
}

fn cached_list(cache_dir: &Path, entry: &cache::Entry) -> Result<NetworkList, Error> {
    NetworkList::parse(
        &cache::path(cache_dir, &entry.container_id),
        entry.config.clone(),
        true,
    )
}

/// The first of `candidates` that is a live namespace, or "" so DEL cleans up what it
/// can without one (plugins fail on a path that is not a namespace).
async fn live_netns(candidates: &[&Path]) -> String {
    let candidates: Vec<PathBuf> = candidates
        .iter()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.to_path_buf())
        .collect();
    let found =
        tokio::task::spawn_blocking(move || candidates.into_iter().find(|p| netns::is_netns(p)))
            .await
            .ok()
            .flatten();
    found.map(|p| p.display().to_string()).unwrap_or_default()
}

async fn blocking<T, F>(f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Error> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Error::io(
            "run blocking CNI task",
            PathBuf::new(),
            std::io::Error::other(e),
        )
    })?
}

async fn read_cache(dir: &Path, id: &str) -> Result<Option<cache::Entry>, Error> {
    let (dir, id) = (dir.to_path_buf(), id.to_string());
    blocking(move || cache::read(&dir, &id)).await
}

async fn write_cache(dir: &Path, entry: &cache::Entry) -> Result<(), Error> {
    let (dir, entry) = (dir.to_path_buf(), entry.clone());
    blocking(move || cache::write(&dir, &entry)).await
}

async fn remove_cache(dir: &Path, id: &str) -> Result<(), Error> {
    let (dir, id) = (dir.to_path_buf(), id.to_string());
    blocking(move || cache::remove(&dir, &id)).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::os::unix::fs::PermissionsExt;

    /// A conf dir with a list of script plugins that log each call (command + stdin)
    /// to one file; `fail` names the plugin whose ADD fails.
    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        fn new(plugins: &[&str], fail: Option<&str>) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let bin = dir.path().join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::create_dir_all(dir.path().join("conf")).unwrap();
            let log = dir.path().join("log");
            for name in plugins {
                let fail_add = if fail == Some(*name) {
                    r#"echo '{"code":100,"msg":"planned failure"}'; exit 1"#
                } else {
                    ""
                };
                let script = format!(
                    "#!/bin/sh\nin=$(cat)\nprintf '%s %s\\n' \"$CNI_COMMAND\" \"$in\" >> {log}\n\
                     if [ \"$CNI_COMMAND\" = ADD ]; then {fail_add}\n\
                     printf '{{\"cniVersion\":\"1.0.0\",\"by\":\"{name}\",\"ips\":[{{\"address\":\"10.9.9.9/24\"}}]}}'; fi\n",
                    log = log.display()
                );
                let path = bin.join(name);
                std::fs::write(&path, script).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            let list = json!({
                "cniVersion": "1.0.0",
                "name": "fake",
                "plugins": plugins.iter().map(|p| json!({"type": p})).collect::<Vec<_>>(),
            });
            std::fs::write(dir.path().join("conf/10-fake.conflist"), list.to_string()).unwrap();
            Fake { dir }
        }

        fn cni(&self) -> Cni {
            Cni::new(Config {
                conf_dir: self.dir.path().join("conf"),
                bin_dirs: vec![self.dir.path().join("bin")],
                state_dir: self.dir.path().join("state"),
            })
        }

        /// (command, plugin type, prevResult.by) per call, in call order.
        fn calls(&self) -> Vec<(String, String, Option<String>)> {
            let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
            log.lines()
                .map(|l| {
                    let (cmd, stdin) = l.split_once(' ').unwrap();
                    let v: Value = serde_json::from_str(stdin).unwrap();
                    assert_eq!(v["name"], "fake");
                    assert_eq!(v["cniVersion"], "1.0.0");
                    let prev = v["prevResult"]["by"].as_str().map(str::to_string);
                    (
                        cmd.to_string(),
                        v["type"].as_str().unwrap().to_string(),
                        prev,
                    )
                })
                .collect()
        }
    }

    fn call(cmd: &str, plugin: &str, prev: Option<&str>) -> (String, String, Option<String>) {
        (cmd.into(), plugin.into(), prev.map(str::to_string))
    }

    fn pod(id: &str) -> PodNetwork {
        PodNetwork {
            container_id: id.into(),
            netns: "/proc/self/ns/net".into(),
            ifname: "eth0".into(),
            args: vec![],
            port_mappings: vec![],
            bandwidth: None,
        }
    }

    #[tokio::test]
    async fn add_chains_results_del_runs_in_reverse_check_in_order() {
        let fake = Fake::new(&["a", "b", "c"], None);
        let cni = fake.cni();
        let status = cni.setup(&pod("p1")).await.unwrap();
        assert_eq!(status.result_json["by"], "c");
        assert_eq!(
            status.interfaces_ips,
            vec!["10.9.9.9".parse::<std::net::IpAddr>().unwrap()]
        );
        cni.check(&pod("p1")).await.unwrap();
        cni.teardown(&pod("p1")).await.unwrap();
        assert_eq!(
            fake.calls(),
            vec![
                call("ADD", "a", None),
                call("ADD", "b", Some("a")),
                call("ADD", "c", Some("b")),
                call("CHECK", "a", Some("c")),
                call("CHECK", "b", Some("c")),
                call("CHECK", "c", Some("c")),
                call("DEL", "c", Some("c")),
                call("DEL", "b", Some("c")),
                call("DEL", "a", Some("c")),
            ]
        );
    }

    #[tokio::test]
    async fn failed_add_deletes_the_whole_list_in_reverse() {
        let fake = Fake::new(&["a", "b", "c"], Some("b"));
        let cni = fake.cni();
        let err = cni.setup(&pod("p2")).await.unwrap_err();
        assert!(
            matches!(&err, Error::Plugin { plugin, code: Some(100), .. } if plugin == "b"),
            "{err:?}"
        );
        assert_eq!(
            fake.calls(),
            vec![
                call("ADD", "a", None),
                call("ADD", "b", Some("a")),
                call("DEL", "c", Some("a")),
                call("DEL", "b", Some("a")),
                call("DEL", "a", Some("a")),
            ]
        );
        assert!(!fake.dir.path().join("state/cni-cache/p2").exists());
        assert!(matches!(
            cni.check(&pod("p2")).await,
            Err(Error::NotSetUp { .. })
        ));
    }

    #[tokio::test]
    async fn interrupted_setup_is_undone_before_a_new_add() {
        let fake = Fake::new(&["a"], None);
        let cni = fake.cni();
        cni.setup(&pod("p3")).await.unwrap();
        // Same id again without teardown (e.g. a retried request after a crash).
        cni.setup(&pod("p3")).await.unwrap();
        assert_eq!(
            fake.calls(),
            vec![
                call("ADD", "a", None),
                call("DEL", "a", Some("a")),
                call("ADD", "a", None)
            ]
        );
    }

    #[tokio::test]
    async fn disable_check_skips_check() {
        let fake = Fake::new(&["a"], None);
        let conf = fake.dir.path().join("conf/10-fake.conflist");
        let mut list: Value = serde_json::from_slice(&std::fs::read(&conf).unwrap()).unwrap();
        list["disableCheck"] = json!(true);
        std::fs::write(&conf, list.to_string()).unwrap();
        let cni = fake.cni();
        cni.setup(&pod("p4")).await.unwrap();
        cni.check(&pod("p4")).await.unwrap();
        assert_eq!(fake.calls(), vec![call("ADD", "a", None)]);
    }
}
