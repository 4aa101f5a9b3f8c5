use std::collections::HashMap;

use berth_api::server::introspection::introspection_server::Introspection;
use berth_api::services::v1::*;
use berth_api::types::Platform;
use tonic::{Request, Response, Status};

use super::Service;

/// berth's parts, described the way containerd describes its plugins.
fn plugins(s: &Service) -> Vec<Plugin> {
    let host = Platform {
        os: "linux".into(),
        architecture: host_arch().into(),
        ..Default::default()
    };
    let plugin = |t: &str, id: &str, requires: &[&str]| Plugin {
        r#type: t.into(),
        id: id.into(),
        requires: requires.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    };
    let mut out = vec![
        plugin("io.containerd.content.v1", "content", &[]),
        plugin(
            "io.containerd.metadata.v1",
            "redb",
            &["io.containerd.content.v1", "io.containerd.snapshotter.v1"],
        ),
        plugin(
            "io.containerd.differ.v1",
            "walking",
            &["io.containerd.metadata.v1"],
        ),
        plugin("io.containerd.event.v1", "exchange", &[]),
        plugin(
            "io.containerd.gc.v1",
            "scheduler",
            &["io.containerd.metadata.v1"],
        ),
        plugin(
            "io.containerd.lease.v1",
            "manager",
            &["io.containerd.metadata.v1"],
        ),
    ];
    for name in s.snapshotters.keys() {
        let mut p = plugin("io.containerd.snapshotter.v1", name, &[]);
        p.platforms = vec![host.clone()];
        p.exports = HashMap::from([(
            "root".to_string(),
            s.root.join("snapshots").join(name).display().to_string(),
        )]);
        out.push(p);
    }
    for id in [
        "content",
        "diff",
        "events",
        "images",
        "introspection",
        "leases",
        "namespaces",
        "snapshots",
        "version",
    ] {
        out.push(plugin(
            "io.containerd.grpc.v1",
            id,
            &["io.containerd.metadata.v1"],
        ));
    }
    out
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

struct PluginFields<'a>(&'a Plugin);

impl berth_store::filters::Adaptor for PluginFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "type" => Some(self.0.r#type.clone()),
            "id" => Some(self.0.id.clone()),
            "capabilities" => Some(self.0.capabilities.join(",")),
            _ => None,
        }
    }
}

#[tonic::async_trait]
impl Introspection for Service {
    async fn plugins(
        &self,
        req: Request<PluginsRequest>,
    ) -> Result<Response<PluginsResponse>, Status> {
        let filter = berth_store::filters::parse(&req.into_inner().filters)
            .map_err(crate::status::from_store)?;
        let plugins = plugins(self)
            .into_iter()
            .filter(|p| filter.matches(&PluginFields(p)))
            .collect();
        Ok(Response::new(PluginsResponse { plugins }))
    }

    async fn server(&self, _req: Request<()>) -> Result<Response<ServerResponse>, Status> {
        Ok(Response::new(ServerResponse {
            uuid: self.uuid.clone(),
            pid: std::process::id() as u64,
            pidns: pid_namespace_inode(),
            deprecations: vec![],
        }))
    }

    async fn plugin_info(
        &self,
        req: Request<PluginInfoRequest>,
    ) -> Result<Response<PluginInfoResponse>, Status> {
        let req = req.into_inner();
        let plugin = plugins(self)
            .into_iter()
            .find(|p| p.r#type == req.r#type && p.id == req.id)
            .ok_or_else(|| {
                Status::not_found(format!("plugin {}.{} not found", req.r#type, req.id))
            })?;
        Ok(Response::new(PluginInfoResponse {
            plugin: Some(plugin),
            extra: None,
        }))
    }
}

fn pid_namespace_inode() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid")
        .map(|m| m.ino())
        .unwrap_or(0)
}
