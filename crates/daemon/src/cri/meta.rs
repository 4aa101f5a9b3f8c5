//! What the CRI remembers about pods and containers. Each one is also a containerd container
//! record in namespace `k8s.io` (so `ctr -n k8s.io containers ls` shows it and its snapshot is a
//! GC root); the CRI's own fields ride in one extension of that record, so they survive a restart.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use prost::Message;
use serde::{Deserialize, Serialize};
use tonic::Status;

/// The extension of the containerd record that holds a [`SandboxMeta`] or [`ContainerMeta`].
pub const EXTENSION: &str = "io.berth.cri.metadata";
const SANDBOX_TYPE: &str = "berth.cri/SandboxMeta";
const CONTAINER_TYPE: &str = "berth.cri/ContainerMeta";
/// containerd's label telling CRI records apart.
pub const KIND_LABEL: &str = "io.cri-containerd.kind";

mod proto_b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    Ready,
    NotReady,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxMeta {
    pub id: String,
    /// The reserved name: `<name>_<namespace>_<uid>_<attempt>`.
    pub name: String,
    #[serde(with = "proto_b64")]
    pub config_pb: Vec<u8>,
    #[serde(skip)]
    pub config: PodSandboxConfig,
    pub runtime_handler: String,
    pub netns: Option<PathBuf>,
    pub ips: Vec<String>,
    pub state: SandboxState,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    pub pid: u32,
    pub cgroup_parent: String,
    /// hostname, hosts, resolv.conf and the shm mount point.
    pub dir: PathBuf,
    pub shm_mounted: bool,
    /// The warm sandbox shim (and its guest) the pod took, if it took one.
    #[serde(default)]
    pub warm: Option<super::warm::Warm>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerMeta {
    pub id: String,
    pub sandbox_id: String,
    /// The reserved name: `<name>_<pod name>_<pod namespace>_<pod uid>_<attempt>`.
    pub name: String,
    #[serde(with = "proto_b64")]
    pub config_pb: Vec<u8>,
    #[serde(skip)]
    pub config: ContainerConfig,
    /// The image's id (config digest) and the reference the request named.
    pub image_id: String,
    pub image_ref: String,
    pub log_path: Option<PathBuf>,
    pub state: ContainerState,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub pid: u32,
    /// The image's StopSignal as a number.
    #[serde(default)]
    pub stop_signal: u32,
}

impl SandboxMeta {
    pub fn decode(mut self) -> Result<Self, Status> {
        self.config = PodSandboxConfig::decode(self.config_pb.as_slice())
            .map_err(|e| Status::internal(format!("pod {}: stored config: {e}", self.id)))?;
        Ok(self)
    }

    pub fn to_blob(&self) -> berth_store::AnyBlob {
        blob(SANDBOX_TYPE, self)
    }
}

impl ContainerMeta {
    pub fn decode(mut self) -> Result<Self, Status> {
        self.config = ContainerConfig::decode(self.config_pb.as_slice())
            .map_err(|e| Status::internal(format!("container {}: stored config: {e}", self.id)))?;
        Ok(self)
    }

    pub fn to_blob(&self) -> berth_store::AnyBlob {
        blob(CONTAINER_TYPE, self)
    }
}

fn blob<T: Serialize>(type_url: &str, v: &T) -> berth_store::AnyBlob {
    berth_store::AnyBlob {
        type_url: type_url.into(),
        value: serde_json::to_vec(v).unwrap_or_default(),
    }
}

/// A CRI record found in the metadata store at start-up.
pub enum Loaded {
    Sandbox(SandboxMeta),
    Container(ContainerMeta),
}

pub fn from_record(c: &berth_store::Container) -> Option<Result<Loaded, Status>> {
    let ext = c.extensions.get(EXTENSION)?;
    let bad = |e: serde_json::Error| Status::internal(format!("CRI record {}: {e}", c.id));
    Some(match ext.type_url.as_str() {
        SANDBOX_TYPE => serde_json::from_slice::<SandboxMeta>(&ext.value)
            .map_err(bad)
            .and_then(SandboxMeta::decode)
            .map(Loaded::Sandbox),
        CONTAINER_TYPE => serde_json::from_slice::<ContainerMeta>(&ext.value)
            .map_err(bad)
            .and_then(ContainerMeta::decode)
            .map(Loaded::Container),
        other => Err(Status::internal(format!(
            "CRI record {}: unknown type {other}",
            c.id
        ))),
    })
}

pub fn encode_config<M: Message>(m: &M) -> Vec<u8> {
    m.encode_to_vec()
}

/// A random 64-hex-digit id, as containerd's CRI makes them.
pub fn new_id() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{b}")
}

pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

#[derive(Default)]
struct Inner {
    sandboxes: BTreeMap<String, SandboxMeta>,
    containers: BTreeMap<String, ContainerMeta>,
    /// Reserved name → the id holding it.
    names: HashMap<String, String>,
}

/// The in-memory index of CRI records (the store holds the durable copy).
#[derive(Default)]
pub struct Records {
    inner: Mutex<Inner>,
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An id or a unique prefix of one (crictl shows and accepts truncated ids).
fn resolve<'a, V>(map: &'a BTreeMap<String, V>, wanted: &str) -> Option<&'a str> {
    if wanted.is_empty() {
        return None;
    }
    if let Some((k, _)) = map.get_key_value(wanted) {
        return Some(k);
    }
    let mut hits = map
        .range(wanted.to_string()..)
        .take_while(|(k, _)| k.starts_with(wanted));
    match (hits.next(), hits.next()) {
        (Some((k, _)), None) => Some(k),
        _ => None,
    }
}

impl Records {
    /// Reserves `name` for `id`; Err(holder) when another id holds it.
    pub fn reserve(&self, name: &str, id: &str) -> Result<(), String> {
        let mut g = lock(&self.inner);
        match g.names.get(name) {
            Some(holder) if holder != id => Err(holder.clone()),
            _ => {
                g.names.insert(name.to_string(), id.to_string());
                Ok(())
            }
        }
    }

    pub fn release(&self, name: &str, id: &str) {
        let mut g = lock(&self.inner);
        if g.names.get(name).map(String::as_str) == Some(id) {
            g.names.remove(name);
        }
    }

    pub fn put_sandbox(&self, s: SandboxMeta) {
        let mut g = lock(&self.inner);
        g.names.insert(s.name.clone(), s.id.clone());
        g.sandboxes.insert(s.id.clone(), s);
    }

    pub fn put_container(&self, c: ContainerMeta) {
        let mut g = lock(&self.inner);
        g.names.insert(c.name.clone(), c.id.clone());
        g.containers.insert(c.id.clone(), c);
    }

    pub fn sandbox(&self, id: &str) -> Option<SandboxMeta> {
        let g = lock(&self.inner);
        let key = resolve(&g.sandboxes, id)?;
        g.sandboxes.get(key).cloned()
    }

    pub fn container(&self, id: &str) -> Option<ContainerMeta> {
        let g = lock(&self.inner);
        let key = resolve(&g.containers, id)?;
        g.containers.get(key).cloned()
    }

    pub fn sandboxes(&self) -> Vec<SandboxMeta> {
        lock(&self.inner).sandboxes.values().cloned().collect()
    }

    pub fn containers(&self) -> Vec<ContainerMeta> {
        lock(&self.inner).containers.values().cloned().collect()
    }

    pub fn containers_of(&self, sandbox_id: &str) -> Vec<ContainerMeta> {
        lock(&self.inner)
            .containers
            .values()
            .filter(|c| c.sandbox_id == sandbox_id)
            .cloned()
            .collect()
    }

    /// Changes a sandbox in memory and returns the new value (the caller persists it).
    pub fn update_sandbox(
        &self,
        id: &str,
        f: impl FnOnce(&mut SandboxMeta),
    ) -> Option<SandboxMeta> {
        let mut g = lock(&self.inner);
        let s = g.sandboxes.get_mut(id)?;
        f(s);
        Some(s.clone())
    }

    pub fn update_container(
        &self,
        id: &str,
        f: impl FnOnce(&mut ContainerMeta),
    ) -> Option<ContainerMeta> {
        let mut g = lock(&self.inner);
        let c = g.containers.get_mut(id)?;
        f(c);
        Some(c.clone())
    }

    pub fn remove_sandbox(&self, id: &str) {
        let mut g = lock(&self.inner);
        if let Some(s) = g.sandboxes.remove(id) {
            if g.names.get(&s.name) == Some(&s.id) {
                g.names.remove(&s.name);
            }
        }
    }

    pub fn remove_container(&self, id: &str) {
        let mut g = lock(&self.inner);
        if let Some(c) = g.containers.remove(id) {
            if g.names.get(&c.name) == Some(&c.id) {
                g.names.remove(&c.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_reserved_once_and_ids_resolve_by_unique_prefix() {
        let r = Records::default();
        r.reserve("a_ns_uid_0", "id1").expect("first");
        assert_eq!(r.reserve("a_ns_uid_0", "id2"), Err("id1".to_string()));
        r.release("a_ns_uid_0", "id2");
        assert!(
            r.reserve("a_ns_uid_0", "id2").is_err(),
            "only the holder releases"
        );
        r.release("a_ns_uid_0", "id1");
        r.reserve("a_ns_uid_0", "id2").expect("after release");

        let mut m = BTreeMap::new();
        m.insert("abc123".to_string(), ());
        m.insert("abd456".to_string(), ());
        assert_eq!(resolve(&m, "abc"), Some("abc123"));
        assert_eq!(resolve(&m, "ab"), None, "ambiguous");
        assert_eq!(resolve(&m, "abd456"), Some("abd456"));
        assert_eq!(resolve(&m, "x"), None);
    }
}
