//! Conversions between store records and containerd's wire messages.

use std::time::SystemTime;

use berth_api::services::v1 as pb;
use berth_api::types as pbt;
use prost_types::Timestamp;

pub fn ts(t: SystemTime) -> Option<Timestamp> {
    Some(t.into())
}

pub fn from_ts(t: Option<Timestamp>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(t).ok())
        .unwrap_or_else(SystemTime::now)
}

pub fn paths(mask: Option<prost_types::FieldMask>) -> Vec<String> {
    mask.map(|m| m.paths).unwrap_or_default()
}

pub fn descriptor_to_pb(d: berth_store::Descriptor) -> pbt::Descriptor {
    pbt::Descriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        annotations: d.annotations,
    }
}

pub fn descriptor_from_pb(d: pbt::Descriptor) -> berth_store::Descriptor {
    berth_store::Descriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        annotations: d.annotations,
    }
}

pub fn image_to_pb(i: berth_store::Image) -> pb::Image {
    pb::Image {
        name: i.name,
        labels: i.labels,
        target: Some(descriptor_to_pb(i.target)),
        created_at: ts(i.created_at),
        updated_at: ts(i.updated_at),
    }
}

pub fn image_from_pb(i: pb::Image) -> berth_store::Image {
    berth_store::Image {
        name: i.name,
        labels: i.labels,
        target: descriptor_from_pb(i.target.unwrap_or_default()),
        created_at: from_ts(i.created_at),
        updated_at: from_ts(i.updated_at),
    }
}

pub fn content_to_pb(c: berth_store::ContentInfo) -> pb::Info {
    pb::Info {
        digest: c.digest,
        size: c.size,
        created_at: ts(c.created_at),
        updated_at: ts(c.updated_at),
        labels: c.labels,
    }
}

pub fn content_from_pb(c: pb::Info) -> berth_store::ContentInfo {
    berth_store::ContentInfo {
        digest: c.digest,
        size: c.size,
        created_at: from_ts(c.created_at),
        updated_at: from_ts(c.updated_at),
        labels: c.labels,
    }
}

pub fn ingest_to_pb(s: berth_store::IngestStatus) -> pb::Status {
    pb::Status {
        started_at: ts(s.started_at),
        updated_at: ts(s.updated_at),
        r#ref: s.reference,
        offset: s.offset,
        total: s.total,
        expected: s.expected.unwrap_or_default(),
    }
}

pub fn lease_to_pb(l: berth_store::Lease) -> pb::Lease {
    pb::Lease {
        id: l.id,
        created_at: ts(l.created_at),
        labels: l.labels,
    }
}

pub fn mount_to_pb(m: berth_snapshot::Mount) -> pbt::Mount {
    pbt::Mount {
        r#type: m.mount_type,
        source: m.source,
        target: m.target,
        options: m.options,
    }
}

pub fn mount_from_pb(m: pbt::Mount) -> berth_snapshot::Mount {
    berth_snapshot::Mount {
        mount_type: m.r#type,
        source: m.source,
        target: m.target,
        options: m.options,
    }
}

pub fn mounts_to_pb(ms: Vec<berth_snapshot::Mount>) -> Vec<pbt::Mount> {
    ms.into_iter().map(mount_to_pb).collect()
}

pub fn any_to_blob(a: prost_types::Any) -> berth_store::AnyBlob {
    berth_store::AnyBlob {
        type_url: a.type_url,
        value: a.value,
    }
}

pub fn blob_to_any(b: berth_store::AnyBlob) -> prost_types::Any {
    prost_types::Any {
        type_url: b.type_url,
        value: b.value,
    }
}

pub fn container_to_pb(c: berth_store::Container) -> pb::Container {
    pb::Container {
        id: c.id,
        labels: c.labels,
        image: c.image,
        runtime: Some(pb::container::Runtime {
            name: c.runtime.name,
            options: c.runtime.options.map(blob_to_any),
        }),
        spec: c.spec.map(blob_to_any),
        snapshotter: c.snapshotter,
        snapshot_key: c.snapshot_key,
        created_at: ts(c.created_at),
        updated_at: ts(c.updated_at),
        extensions: c
            .extensions
            .into_iter()
            .map(|(k, v)| (k, blob_to_any(v)))
            .collect(),
        sandbox: c.sandbox,
    }
}

pub fn container_from_pb(c: pb::Container) -> berth_store::Container {
    let runtime = c.runtime.unwrap_or_default();
    berth_store::Container {
        id: c.id,
        labels: c.labels,
        image: c.image,
        runtime: berth_store::Runtime {
            name: runtime.name,
            options: runtime.options.map(any_to_blob),
        },
        spec: c.spec.map(any_to_blob),
        snapshotter: c.snapshotter,
        snapshot_key: c.snapshot_key,
        created_at: from_ts(c.created_at),
        updated_at: from_ts(c.updated_at),
        extensions: c
            .extensions
            .into_iter()
            .map(|(k, v)| (k, any_to_blob(v)))
            .collect(),
        sandbox: c.sandbox,
    }
}

/// Snapshot mounts as the task manager takes them.
pub fn to_runtime_mounts(mounts: Vec<berth_snapshot::Mount>) -> Vec<berth_runtime::Mount> {
    mounts
        .into_iter()
        .map(|m| berth_runtime::Mount {
            r#type: m.mount_type,
            source: m.source,
            target: m.target,
            options: m.options,
        })
        .collect()
}
