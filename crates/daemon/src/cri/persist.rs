//! The durable side of CRI objects: their containerd container record and rootfs snapshot.

use std::collections::HashMap;

use tonic::Status;

use super::meta::{EXTENSION, KIND_LABEL};
use super::NAMESPACE;
use crate::daemon::{backend_key, blocking};
use crate::services::Service;
use crate::status::IntoStatus;

const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// What a new container record holds.
pub struct NewRecord {
    pub id: String,
    pub kind: &'static str,
    pub labels: HashMap<String, String>,
    pub image: String,
    pub runtime_type: String,
    pub runtime_options: Option<prost_types::Any>,
    pub spec: Vec<u8>,
    pub sandbox: String,
    pub meta: berth_store::AnyBlob,
}

impl Service {
    /// A writable snapshot `id` over the image's layers (also the container's GC root once
    /// its record exists: callers create both under one collector hold).
    pub async fn cri_prepare_rootfs(
        &self,
        id: &str,
        chain_id: &str,
    ) -> Result<Vec<berth_snapshot::Mount>, Status> {
        let sn = self.snapshotter("")?;
        let key = backend_key(NAMESPACE, id);
        let parent = backend_key(NAMESPACE, chain_id);
        blocking(move || sn.prepare(&key, Some(&parent), HashMap::new()).status()).await
    }

    pub async fn cri_rootfs_mounts(&self, id: &str) -> Result<Vec<berth_snapshot::Mount>, Status> {
        let sn = self.snapshotter("")?;
        let key = backend_key(NAMESPACE, id);
        blocking(move || sn.mounts(&key).status()).await
    }

    /// Removes the snapshot; one that is already gone is fine.
    pub async fn cri_remove_rootfs(&self, id: &str) -> Result<(), Status> {
        let sn = self.snapshotter("")?;
        let key = backend_key(NAMESPACE, id);
        match blocking(move || sn.remove(&key).status()).await {
            Err(e) if !super::is_not_found(&e) => Err(e),
            _ => Ok(()),
        }
    }

    pub async fn cri_create_record(&self, r: NewRecord) -> Result<(), Status> {
        let snapshotter = self.snapshotter("")?.name().to_string();
        let store = self.store.clone();
        blocking(move || {
            let mut labels = r.labels;
            labels.insert(KIND_LABEL.into(), r.kind.into());
            let now = std::time::SystemTime::now();
            store
                .container_create(
                    NAMESPACE,
                    berth_store::Container {
                        id: r.id.clone(),
                        labels,
                        image: r.image,
                        runtime: berth_store::Runtime {
                            name: r.runtime_type,
                            options: r.runtime_options.map(|a| berth_store::AnyBlob {
                                type_url: a.type_url,
                                value: a.value,
                            }),
                        },
                        spec: Some(berth_store::AnyBlob {
                            type_url: SPEC_TYPE.into(),
                            value: r.spec,
                        }),
                        snapshotter,
                        snapshot_key: r.id,
                        created_at: now,
                        updated_at: now,
                        extensions: HashMap::from([(EXTENSION.to_string(), r.meta)]),
                        sandbox: r.sandbox,
                    },
                )
                .status()
                .map(|_| ())
        })
        .await
    }

    /// Rewrites the CRI extension of a record.
    pub async fn cri_save_meta(&self, id: &str, meta: berth_store::AnyBlob) -> Result<(), Status> {
        let store = self.store.clone();
        let id = id.to_string();
        blocking(move || {
            let mut c = store.container_get(NAMESPACE, &id).status()?;
            c.extensions.insert(EXTENSION.to_string(), meta);
            store
                .container_update(NAMESPACE, c, &[format!("extensions.{EXTENSION}")])
                .status()
                .map(|_| ())
        })
        .await
    }

    pub async fn cri_record_spec(&self, id: &str) -> Result<Vec<u8>, Status> {
        let store = self.store.clone();
        let id = id.to_string();
        blocking(move || {
            let c = store.container_get(NAMESPACE, &id).status()?;
            c.spec
                .map(|s| s.value)
                .ok_or_else(|| Status::failed_precondition(format!("container {id} has no spec")))
        })
        .await
    }

    pub async fn cri_update_spec(&self, id: &str, spec: Vec<u8>) -> Result<(), Status> {
        let store = self.store.clone();
        let id = id.to_string();
        blocking(move || {
            let mut c = store.container_get(NAMESPACE, &id).status()?;
            c.spec = Some(berth_store::AnyBlob {
                type_url: SPEC_TYPE.into(),
                value: spec,
            });
            store
                .container_update(NAMESPACE, c, &["spec".to_string()])
                .status()
                .map(|_| ())
        })
        .await
    }

    /// Deletes the record (gone already is fine) and lets the collector take its snapshot.
    pub async fn cri_delete_record(&self, id: &str) -> Result<(), Status> {
        let store = self.store.clone();
        let id2 = id.to_string();
        match blocking(move || store.container_delete(NAMESPACE, &id2).status()).await {
            Err(e) if !super::is_not_found(&e) => return Err(e),
            _ => {}
        }
        self.gc.schedule();
        Ok(())
    }

    /// Every CRI record of the store (start-up).
    pub async fn cri_stored_records(&self) -> Result<Vec<berth_store::Container>, Status> {
        let store = self.store.clone();
        blocking(move || {
            let filter = berth_store::filters::parse(&[]).status()?;
            store.container_list(NAMESPACE, &filter).status()
        })
        .await
    }
}
