//! berth's wire types.
//!
//! Messages are `containerd-client`'s (re-exported here as [`types`], [`services`], [`events`]);
//! this crate adds the gRPC server traits that `containerd-client` does not generate.

pub use containerd_client::{events, google, services, to_any, types};
pub use tonic;

pub mod metrics;

/// Server traits for `containerd.services.*.v1`, one module per proto package.
#[allow(clippy::all, missing_docs)]
pub mod server {
    pub mod containers {
        tonic::include_proto!("containerd.services.containers.v1");
    }
    pub mod content {
        tonic::include_proto!("containerd.services.content.v1");
    }
    pub mod diff {
        tonic::include_proto!("containerd.services.diff.v1");
    }
    pub mod events {
        tonic::include_proto!("containerd.services.events.v1");
    }
    pub mod images {
        tonic::include_proto!("containerd.services.images.v1");
    }
    pub mod introspection {
        tonic::include_proto!("containerd.services.introspection.v1");
    }
    pub mod leases {
        tonic::include_proto!("containerd.services.leases.v1");
    }
    pub mod namespaces {
        tonic::include_proto!("containerd.services.namespaces.v1");
    }
    pub mod snapshots {
        tonic::include_proto!("containerd.services.snapshots.v1");
    }
    pub mod streaming {
        tonic::include_proto!("containerd.services.streaming.v1");
    }
    pub mod tasks {
        tonic::include_proto!("containerd.services.tasks.v1");
    }
    pub mod transfer {
        tonic::include_proto!("containerd.services.transfer.v1");
    }
    pub mod version {
        tonic::include_proto!("containerd.services.version.v1");
    }
}
