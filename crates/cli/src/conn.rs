//! gRPC connection to the daemon: every request carries the namespace header and, during an
//! import, the lease header, via one interceptor shared by all service clients.

use std::path::Path;

use anyhow::{Context, Result};
use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    events_client::EventsClient, images_client::ImagesClient, leases_client::LeasesClient,
    namespaces_client::NamespacesClient, snapshots::snapshots_client::SnapshotsClient,
    tasks_client::TasksClient, version_client::VersionClient,
};
use containerd_client::tonic::{
    metadata::{Ascii, MetadataValue},
    service::{interceptor::InterceptedService, Interceptor},
    transport::Channel,
    Request, Status,
};

#[derive(Clone)]
pub struct Meta {
    namespace: MetadataValue<Ascii>,
    lease: Option<MetadataValue<Ascii>>,
}

impl Interceptor for Meta {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let md = req.metadata_mut();
        md.insert("containerd-namespace", self.namespace.clone());
        if let Some(l) = &self.lease {
            md.insert("containerd-lease", l.clone());
        }
        Ok(req)
    }
}

pub type Svc = InterceptedService<Channel, Meta>;

#[derive(Clone)]
pub struct Conn {
    channel: Channel,
    meta: Meta,
}

/// Messages can be large (image lists, content listings): allow up to 64 MiB like containerd's
/// own client defaults are generous.
const MAX_MESSAGE: usize = 64 << 20;

impl Conn {
    pub async fn connect(address: &Path, namespace: &str) -> Result<Self> {
        let channel = containerd_client::connect(address)
            .await
            .with_context(|| format!("cannot connect to {}", address.display()))?;
        let namespace = namespace
            .parse()
            .with_context(|| format!("invalid namespace {namespace:?}"))?;
        Ok(Conn {
            channel,
            meta: Meta {
                namespace,
                lease: None,
            },
        })
    }

    /// A connection whose requests run under `lease`.
    pub fn with_lease(&self, lease: &str) -> Result<Self> {
        let mut c = self.clone();
        c.meta.lease = Some(lease.parse().context("invalid lease id")?);
        Ok(c)
    }

    /// A raw intercepted channel, for clients this module has no helper for.
    pub fn svc_pub(&self) -> Svc {
        self.svc()
    }

    fn svc(&self) -> Svc {
        InterceptedService::new(self.channel.clone(), self.meta.clone())
    }

    pub fn content(&self) -> ContentClient<Svc> {
        ContentClient::new(self.svc())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
    pub fn images(&self) -> ImagesClient<Svc> {
        ImagesClient::new(self.svc()).max_decoding_message_size(MAX_MESSAGE)
    }
    pub fn snapshots(&self) -> SnapshotsClient<Svc> {
        SnapshotsClient::new(self.svc()).max_decoding_message_size(MAX_MESSAGE)
    }
    pub fn diff(&self) -> DiffClient<Svc> {
        DiffClient::new(self.svc())
    }
    pub fn leases(&self) -> LeasesClient<Svc> {
        LeasesClient::new(self.svc()).max_decoding_message_size(MAX_MESSAGE)
    }
    pub fn namespaces(&self) -> NamespacesClient<Svc> {
        NamespacesClient::new(self.svc()).max_decoding_message_size(MAX_MESSAGE)
    }
    pub fn version(&self) -> VersionClient<Svc> {
        VersionClient::new(self.svc())
    }
    pub fn containers(&self) -> ContainersClient<Svc> {
        ContainersClient::new(self.svc()).max_decoding_message_size(MAX_MESSAGE)
    }
    pub fn tasks(&self) -> TasksClient<Svc> {
        TasksClient::new(self.svc()).max_decoding_message_size(MAX_MESSAGE)
    }
    pub fn events(&self) -> EventsClient<Svc> {
        EventsClient::new(self.svc()).max_decoding_message_size(MAX_MESSAGE)
    }
}
