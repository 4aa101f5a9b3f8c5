//! Running a network list: ADD in order passing each result on, DEL in reverse, CHECK
//! in order, each plugin getting the list's name/version and its runtimeConfig.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::{NetworkList, Plugin};
use crate::error::Error;
use crate::exec::{self, Env, Op};
use crate::types::{Bandwidth, PortMapping};

/// Per-pod data for plugins that declare the matching capability.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Capabilities<'a> {
    pub port_mappings: &'a [PortMapping],
    pub bandwidth: Option<&'a Bandwidth>,
}

#[derive(Debug, Clone)]
pub(crate) struct Runner {
    pub bin_dirs: Vec<PathBuf>,
    pub timeout: Duration,
}

/// The config one plugin reads on stdin.
pub(crate) fn plugin_stdin(
    list: &NetworkList,
    plugin: &Plugin,
    prev_result: Option<&Value>,
    caps: Capabilities<'_>,
) -> Vec<u8> {
    let mut conf = plugin.conf.clone();
    // The list's name and version win, so every plugin of a chain agrees on them.
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));

    let mut runtime = match conf.remove("runtimeConfig") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    if plugin.has_capability("portMappings") && !caps.port_mappings.is_empty() {
        runtime.insert("portMappings".into(), to_value(caps.port_mappings));
    }
    if plugin.has_capability("bandwidth") {
        if let Some(bw) = caps.bandwidth {
            runtime.insert("bandwidth".into(), to_value(bw));
        }
    }
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }

    match prev_result {
        Some(prev) => {
            conf.insert("prevResult".into(), prev.clone());
        }
        None => {
            conf.remove("prevResult");
        }
    }
    // Serializing a Map of Values cannot fail.
    serde_json::to_vec(&Value::Object(conf)).unwrap_or_default()
}

fn to_value<T: serde::Serialize + ?Sized>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl Runner {
    pub fn cni_path(&self) -> String {
        self.bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Every plugin binary of the list, resolved up front so a missing one fails the
    /// operation before anything was changed.
    fn binaries(&self, list: &NetworkList) -> Result<Vec<PathBuf>, Error> {
        list.plugins
            .iter()
            .map(|p| exec::find_plugin(&p.kind, &self.bin_dirs))
            .collect()
    }

    /// ADD through the list; returns the final result. On error the caller undoes.
    /// `progress` receives each intermediate result, so a failure midway can still hand
    /// DEL the latest known state.
    pub async fn add(
        &self,
        list: &NetworkList,
        env: &Env,
        caps: Capabilities<'_>,
        progress: &mut Option<Value>,
    ) -> Result<Value, Error> {
        let bins = self.binaries(list)?;
        for (plugin, bin) in list.plugins.iter().zip(&bins) {
            let stdin = plugin_stdin(list, plugin, progress.as_ref(), caps);
            let out = exec::run(&plugin.kind, bin, Op::Add, env, stdin, self.timeout).await?;
            let result: Value = serde_json::from_slice(&out).map_err(|e| Error::Plugin {
                plugin: plugin.kind.clone(),
                command: Op::Add.as_str(),
                code: None,
                msg: format!("printed no valid result: {e}"),
                details: String::from_utf8_lossy(&out).chars().take(512).collect(),
            })?;
            if !result.is_object() {
                return Err(Error::Plugin {
                    plugin: plugin.kind.clone(),
                    command: Op::Add.as_str(),
                    code: None,
                    msg: "result is not a JSON object".into(),
                    details: String::new(),
                });
            }
            *progress = Some(result);
        }
        progress
            .clone()
            .ok_or_else(|| Error::invalid_config(&list.source, "no plugins"))
    }

    /// DEL through the list in reverse; stops at the first failure as the spec says.
    pub async fn del(
        &self,
        list: &NetworkList,
        env: &Env,
        caps: Capabilities<'_>,
        prev_result: Option<&Value>,
    ) -> Result<(), Error> {
        let bins = self.binaries(list)?;
        for (plugin, bin) in list.plugins.iter().zip(&bins).rev() {
            let stdin = plugin_stdin(list, plugin, prev_result, caps);
            exec::run(&plugin.kind, bin, Op::Del, env, stdin, self.timeout).await?;
        }
        Ok(())
    }

    pub async fn check(
        &self,
        list: &NetworkList,
        env: &Env,
        caps: Capabilities<'_>,
        prev_result: &Value,
    ) -> Result<(), Error> {
        let bins = self.binaries(list)?;
        for (plugin, bin) in list.plugins.iter().zip(&bins) {
            let stdin = plugin_stdin(list, plugin, Some(prev_result), caps);
            exec::run(&plugin.kind, bin, Op::Check, env, stdin, self.timeout).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn list() -> NetworkList {
        NetworkList::parse(
            Path::new("t.conflist"),
            json!({
                "cniVersion": "1.0.0", "name": "net",
                "plugins": [
                    {"type": "bridge", "name": "ignored", "cniVersion": "0.1.0", "bridge": "br0"},
                    {"type": "portmap", "capabilities": {"portMappings": true},
                     "runtimeConfig": {"other": 1}},
                    {"type": "bandwidth", "capabilities": {"bandwidth": true}}
                ]
            }),
            true,
        )
        .unwrap()
    }

    fn stdin(list: &NetworkList, i: usize, prev: Option<&Value>, caps: Capabilities<'_>) -> Value {
        serde_json::from_slice(&plugin_stdin(list, &list.plugins[i], prev, caps)).unwrap()
    }

    #[test]
    fn list_name_and_version_override_plugin_ones() {
        let l = list();
        let caps = Capabilities {
            port_mappings: &[],
            bandwidth: None,
        };
        let v = stdin(&l, 0, None, caps);
        assert_eq!(v["name"], "net");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["bridge"], "br0");
        assert!(v.get("prevResult").is_none());
        assert!(v.get("runtimeConfig").is_none());
    }

    #[test]
    fn runtime_config_only_for_declared_capabilities() {
        let l = list();
        let pm = [PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: "127.0.0.1".into(),
        }];
        let bw = Bandwidth {
            ingress_rate: 1000,
            ingress_burst: 10,
            egress_rate: 2000,
            egress_burst: 20,
        };
        let caps = Capabilities {
            port_mappings: &pm,
            bandwidth: Some(&bw),
        };
        let prev = json!({"cniVersion": "1.0.0", "ips": []});

        let bridge = stdin(&l, 0, Some(&prev), caps);
        assert!(bridge.get("runtimeConfig").is_none());
        assert_eq!(bridge["prevResult"], prev);

        let portmap = stdin(&l, 1, Some(&prev), caps);
        assert_eq!(
            portmap["runtimeConfig"],
            json!({"other": 1, "portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}]})
        );

        let bandwidth = stdin(&l, 2, None, caps);
        assert_eq!(
            bandwidth["runtimeConfig"],
            json!({"bandwidth": {"ingressRate": 1000, "ingressBurst": 10, "egressRate": 2000, "egressBurst": 20}})
        );
    }

    #[test]
    fn empty_host_ip_is_omitted() {
        let l = list();
        let pm = [PortMapping {
            host_port: 1,
            container_port: 2,
            protocol: "udp".into(),
            host_ip: String::new(),
        }];
        let v = stdin(
            &l,
            1,
            None,
            Capabilities {
                port_mappings: &pm,
                bandwidth: None,
            },
        );
        assert_eq!(
            v["runtimeConfig"]["portMappings"][0],
            json!({"hostPort": 1, "containerPort": 2, "protocol": "udp"})
        );
    }
}
