//! Pod sandboxes: the pause container that holds the pod's namespaces, the pod's network
//! (a named network namespace set up by CNI), its /etc files and /dev/shm.
//!
//! Every teardown step is idempotent, and a RunPodSandbox that fails midway runs the same
//! teardown over what it made, so nothing (name, netns, IP, mount, snapshot, record, task) is
//! left behind and a retry can succeed.

use std::path::Path;

use k8s_cri::v1::{
    NamespaceMode, PodSandboxConfig, PodSandboxFilter, PodSandboxState, RunPodSandboxRequest,
};
use tonic::Status;

use super::meta::{now_nanos, SandboxMeta, SandboxState};
use super::persist::NewRecord;
use super::{images, required, NAMESPACE};
use crate::convert::to_runtime_mounts;
use crate::daemon::blocking;
use crate::services::Service;
use crate::status::IntoStatus;

const SHM_SIZE: &str = "size=65536k";

/// The pod's namespace choices (absent options mean POD for each).
pub fn namespace_mode(cfg: &PodSandboxConfig) -> (NamespaceMode, NamespaceMode, NamespaceMode) {
    let opts = cfg
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    let mode = |v: i32| NamespaceMode::try_from(v).unwrap_or(NamespaceMode::Pod);
    match opts {
        Some(o) => (mode(o.network), mode(o.pid), mode(o.ipc)),
        None => (NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod),
    }
}

pub fn pod_files(dir: &Path, with_shm: bool) -> berth_cri::PodFiles {
    berth_cri::PodFiles {
        hostname: dir.join("hostname"),
        hosts: dir.join("hosts"),
        resolv_conf: dir.join("resolv.conf"),
        shm: with_shm.then(|| dir.join("shm")),
    }
}

fn host_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Writes hostname, hosts and resolv.conf for the pod.
fn write_pod_files(dir: &Path, cfg: &PodSandboxConfig, host_network: bool) -> Result<(), Status> {
    let io = |what: &str, e: std::io::Error| Status::internal(format!("{what}: {e}"));
    std::fs::create_dir_all(dir).map_err(|e| io("create pod dir", e))?;
    let files = pod_files(dir, false);
    let hostname = if host_network {
        host_hostname()
    } else if cfg.hostname.is_empty() {
        cfg.metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default()
    } else {
        cfg.hostname.clone()
    };
    std::fs::write(&files.hostname, format!("{hostname}\n"))
        .map_err(|e| io("write hostname", e))?;
    let hosts = if host_network {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        berth_cri::hosts_file(&hostname, &[])
    };
    std::fs::write(&files.hosts, hosts).map_err(|e| io("write hosts", e))?;
    let resolv = match berth_cri::resolv_conf(cfg.dns_config.as_ref()) {
        Some(text) => text,
        None => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    std::fs::write(&files.resolv_conf, resolv).map_err(|e| io("write resolv.conf", e))?;
    Ok(())
}

fn mount_shm(target: &Path) -> Result<(), Status> {
    use nix::mount::{mount, MsFlags};
    std::fs::create_dir_all(target)
        .map_err(|e| Status::internal(format!("create {}: {e}", target.display())))?;
    mount(
        Some("shm"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,{SHM_SIZE}").as_str()),
    )
    .map_err(|e| Status::internal(format!("mount pod shm at {}: {e}", target.display())))
}

fn unmount_shm(target: &Path) -> Result<(), Status> {
    match nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Status::internal(format!(
            "unmount pod shm {}: {e}",
            target.display()
        ))),
    }
}

/// The lowest oom_score_adj this daemon may give (containerd's restrict_oom_score_adj).
pub fn oom_score_adj_min() -> i32 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn cni_status(e: berth_cni::Error) -> Status {
    Status::unknown(format!("pod network: {e}"))
}

impl Service {
    /// The pause image, pulled when missing.
    async fn sandbox_image(&self) -> Result<images::RunnableImage, Status> {
        let wanted = self.cri.config.sandbox_image.clone();
        let store = self.store.clone();
        let w = wanted.clone();
        if let Some(img) = blocking(move || images::resolve_runnable(&store, &w)).await? {
            return Ok(img);
        }
        let reference = berth_image::Reference::parse(&wanted)
            .map_err(|e| Status::invalid_argument(format!("sandbox image {wanted:?}: {e}")))?;
        self.pull_into(
            NAMESPACE.to_string(),
            self.registry.clone(),
            &reference.to_string(),
        )
        .await
        .map_err(|e| {
            Status::new(
                e.code(),
                format!("pull sandbox image {wanted}: {}", e.message()),
            )
        })?;
        let store = self.store.clone();
        blocking(move || images::resolve_runnable(&store, &wanted))
            .await?
            .ok_or_else(|| Status::internal("sandbox image pulled but not found"))
    }

    pub async fn cri_run_pod(&self, req: RunPodSandboxRequest) -> Result<String, Status> {
        let cfg = required(req.config, "pod sandbox config")?;
        let md = required(cfg.metadata.clone(), "pod sandbox metadata")?;
        for (field, v) in [
            ("name", &md.name),
            ("namespace", &md.namespace),
            ("uid", &md.uid),
        ] {
            if v.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "pod sandbox metadata.{field} must not be empty"
                )));
            }
        }
        if !cfg.log_directory.is_empty() && !Path::new(&cfg.log_directory).is_absolute() {
            return Err(Status::invalid_argument(format!(
                "pod sandbox log_directory {:?} must be an absolute path",
                cfg.log_directory
            )));
        }
        let handler = self.cri.handlers.get(&req.runtime_handler)?.clone();
        let id = super::meta::new_id();
        let name = format!("{}_{}_{}_{}", md.name, md.namespace, md.uid, md.attempt);
        self.cri.records.reserve(&name, &id).map_err(|holder| {
            Status::already_exists(format!(
                "pod sandbox name {name:?} is reserved for {holder}"
            ))
        })?;
        let _lock = self.cri.lock(&id).await;
        let (net_mode, _, ipc_mode) = namespace_mode(&cfg);
        let mut meta = SandboxMeta {
            id: id.clone(),
            name: name.clone(),
            config_pb: super::meta::encode_config(&cfg),
            config: cfg,
            runtime_handler: handler.name.clone(),
            netns: None,
            ips: vec![],
            state: SandboxState::NotReady,
            created_at: now_nanos(),
            pid: 0,
            cgroup_parent: String::new(),
            dir: self.cri.sandbox_dir(&id),
            shm_mounted: false,
            warm: None,
        };
        meta.cgroup_parent = meta
            .config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        match self
            .setup_pod(&mut meta, &handler, net_mode, ipc_mode)
            .await
        {
            Ok(()) => Ok(id),
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "RunPodSandbox failed: undoing");
                if let Err(u) = self.destroy_pod(&meta).await {
                    tracing::warn!(pod = %name, error = %u, "undo RunPodSandbox");
                }
                if meta.warm.is_some() {
                    let s = self.clone();
                    tokio::spawn(async move { s.cri.warm.fill(&s.cri.cni).await });
                }
                self.cri.records.remove_sandbox(&id);
                self.cri.records.release(&name, &id);
                self.cri.forget_lock(&id);
                Err(e)
            }
        }
    }

    async fn setup_pod(
        &self,
        meta: &mut SandboxMeta,
        handler: &super::handlers::Handler,
        net_mode: NamespaceMode,
        ipc_mode: NamespaceMode,
    ) -> Result<(), Status> {
        let id = meta.id.clone();
        // Where a pod start spends its time, for `--log-level debug`.
        let t0 = std::time::Instant::now();
        let phase = |what: &str| {
            tracing::debug!(pod = %id, ms = t0.elapsed().as_secs_f64() * 1e3, "{what} done");
        };
        let image = self.sandbox_image().await?;
        phase("sandbox image");
        let host_network = net_mode == NamespaceMode::Node;
        let dir = meta.dir.clone();
        let cfg = meta.config.clone();
        blocking(move || write_pod_files(&dir, &cfg, host_network)).await?;
        let files = pod_files(&meta.dir, ipc_mode != NamespaceMode::Node);
        if let Some(shm) = files.shm.clone() {
            blocking(move || mount_shm(&shm)).await?;
            phase("pod files and shm");
            meta.shm_mounted = true;
        }
        // A sandboxed pod takes a warm guest if one waits: its namespace becomes the pod's.
        if !host_network && handler.network_first {
            if let Some(w) = self.cri.warm.take() {
                meta.netns = Some(w.netns.clone());
                meta.warm = Some(w);
            }
        }
        let net = if host_network {
            None
        } else {
            let netns = match &meta.warm {
                Some(w) => w.netns.clone(),
                None => self.cri.cni.create_netns(&id).await.map_err(cni_status)?,
            };
            phase("netns");
            meta.netns = Some(netns);
            Some(self.pod_network(meta)?)
        };
        // The pause container needs the namespace, not its addresses: CNI ADD runs while the
        // pause task is made (each failure path tears both down).
        let cni = async {
            let Some(net) = &net else {
                return Ok(Vec::new());
            };
            let status = self.cri.cni.setup(net).await.map_err(cni_status)?;
            phase("CNI ADD");
            Ok::<_, Status>(
                status
                    .interfaces_ips
                    .iter()
                    .map(|ip| ip.to_string())
                    .collect(),
            )
        };
        let pause = self.create_pause(meta.clone(), handler, &image, &files, &phase);
        let (ips, pid) = if handler.network_first {
            let ips = cni.await;
            match ips {
                Ok(ips) => (Ok(ips), pause.await),
                Err(e) => (Err(e), Err(Status::aborted("pod network failed"))),
            }
        } else {
            tokio::join!(cni, pause)
        };
        meta.ips = ips?;
        meta.pid = pid?;
        meta.state = SandboxState::Ready;
        if meta.warm.is_some() {
            // The replacement boots once this pod is up, not while it starts.
            let s = self.clone();
            tokio::spawn(async move { s.cri.warm.fill(&s.cri.cni).await });
        }
        self.cri.records.put_sandbox(meta.clone());
        self.cri_save_meta(&id, meta.to_blob()).await?;
        self.watch_sandbox(&id);
        tracing::info!(pod = %meta.name, id = %id, ips = ?meta.ips, "pod sandbox ready");
        Ok(())
    }

    /// Spec, snapshot and record of the pause container, then its task, started; its pid.
    async fn create_pause(
        &self,
        meta: SandboxMeta,
        handler: &super::handlers::Handler,
        image: &images::RunnableImage,
        files: &berth_cri::PodFiles,
        phase: &(dyn Fn(&str) + Sync),
    ) -> Result<u32, Status> {
        let id = meta.id.clone();
        let image_cfg = berth_spec::ImageRuntimeConfig::from_image_config(&image.config)
            .map_err(|e| Status::failed_precondition(format!("sandbox image config: {e}")))?;
        // Only the handler's allowed annotations reach the runtime (a sandbox runtime reads them).
        let mut spec_cfg = meta.config.clone();
        spec_cfg.annotations =
            super::handlers::allowed(&handler.pod_annotations, &spec_cfg.annotations);
        let spec = berth_cri::sandbox_spec(&berth_cri::SandboxSpec {
            id: &id,
            config: &spec_cfg,
            image: &image_cfg,
            rootfs: None,
            netns: meta.netns.as_deref(),
            files,
            cgroup_parent: &meta.cgroup_parent,
            oom_score_adj_min: oom_score_adj_min(),
        })
        .map_err(super::container::spec_status)?;
        let mut spec = berth_spec::to_json(&spec)
            .map_err(|e| Status::internal(format!("sandbox spec: {e}")))?;
        if let Some(w) = &meta.warm {
            spec = super::warm::annotate(spec, &w.address);
        }

        let rootfs = {
            let _hold = self.gc.hold().await;
            let mounts = self.cri_prepare_rootfs(&id, &image.chain_id).await?;
            let labels = meta.config.labels.clone();
            let created = self
                .cri_create_record(NewRecord {
                    id: id.clone(),
                    kind: "sandbox",
                    labels,
                    image: image.name.clone(),
                    runtime_type: handler.runtime_type.clone(),
                    runtime_options: handler.options.clone(),
                    spec: spec.clone(),
                    sandbox: String::new(),
                    meta: meta.to_blob(),
                })
                .await;
            if let Err(e) = created {
                let _ = self.cri_remove_rootfs(&id).await;
                return Err(e);
            }
            mounts
        };
        self.cri.records.put_sandbox(meta);
        phase("spec, snapshot and record");
        let pid = self
            .tasks
            .create(
                NAMESPACE,
                berth_runtime::CreateTask {
                    id: id.clone(),
                    spec,
                    runtime: handler.runtime_type.clone(),
                    runtime_options: handler.options.clone(),
                    rootfs: to_runtime_mounts(rootfs),
                    ..Default::default()
                },
            )
            .await
            .status()?;
        self.tasks.start(NAMESPACE, &id, "").await.status()?;
        phase("task create and start");
        Ok(pid)
    }

    /// The CNI view of a pod: its netns, CNI_ARGS and port mappings.
    pub fn pod_network(&self, meta: &SandboxMeta) -> Result<berth_cni::PodNetwork, Status> {
        let netns = meta
            .netns
            .clone()
            .ok_or_else(|| Status::internal("pod has no network namespace"))?;
        let md = meta.config.metadata.clone().unwrap_or_default();
        let port_mappings = meta
            .config
            .port_mappings
            .iter()
            .filter(|p| p.host_port > 0)
            .map(|p| berth_cni::PortMapping {
                host_port: p.host_port as u16,
                container_port: p.container_port as u16,
                protocol: match k8s_cri::v1::Protocol::try_from(p.protocol) {
                    Ok(k8s_cri::v1::Protocol::Udp) => "udp",
                    Ok(k8s_cri::v1::Protocol::Sctp) => "sctp",
                    _ => "tcp",
                }
                .to_string(),
                host_ip: p.host_ip.clone(),
            })
            .collect();
        Ok(berth_cni::PodNetwork {
            container_id: meta.id.clone(),
            netns,
            ifname: "eth0".into(),
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAMESPACE".into(), md.namespace),
                ("K8S_POD_NAME".into(), md.name),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), meta.id.clone()),
                ("K8S_POD_UID".into(), md.uid),
            ],
            port_mappings,
            bandwidth: None,
        })
    }

    /// Marks the pod NotReady when its pause process exits.
    pub fn watch_sandbox(&self, id: &str) {
        let s = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            if s.tasks.wait(NAMESPACE, &id, "").await.is_err() {
                return;
            }
            if let Some(meta) = s.cri.records.update_sandbox(&id, |m| {
                m.state = SandboxState::NotReady;
            }) {
                let _ = s.cri_save_meta(&id, meta.to_blob()).await;
            }
        });
    }

    /// Stops the pod's containers and pause process, tears down its network and shm.
    /// Idempotent: a stopped pod stops again without error.
    pub async fn cri_stop_pod(&self, id: &str) -> Result<(), Status> {
        let meta = self.cri_pod(id)?;
        for c in self.cri.records.containers_of(&meta.id) {
            self.cri_stop_container(&c.id, 0).await?;
        }
        let _lock = self.cri.lock(&meta.id).await;
        let meta = self.cri.records.sandbox(&meta.id).unwrap_or(meta);
        self.stop_pod_resources(&meta).await?;
        if let Some(m) = self.cri.records.update_sandbox(&meta.id, |m| {
            m.state = SandboxState::NotReady;
            m.netns = None;
            m.shm_mounted = false;
        }) {
            self.cri_save_meta(&m.id, m.to_blob()).await?;
        }
        Ok(())
    }

    /// Pause task, network, shm: what a stopped pod no longer holds.
    async fn stop_pod_resources(&self, meta: &SandboxMeta) -> Result<(), Status> {
        self.kill_and_delete_task(&meta.id).await?;
        if let Some(netns) = &meta.netns {
            let net = self.pod_network(meta)?;
            self.cri.cni.teardown(&net).await.map_err(cni_status)?;
            self.cri.cni.remove_netns(netns).await.map_err(cni_status)?;
        }
        if meta.shm_mounted || meta.dir.join("shm").exists() {
            let shm = meta.dir.join("shm");
            blocking(move || unmount_shm(&shm)).await?;
        }
        Ok(())
    }

    /// SIGKILL, wait, delete; a task that is gone already is fine.
    pub async fn kill_and_delete_task(&self, id: &str) -> Result<(), Status> {
        match self.tasks.kill(NAMESPACE, id, "", 9, false).await {
            Ok(()) => {
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    self.tasks.wait(NAMESPACE, id, ""),
                )
                .await;
            }
            Err(e) if e.kind() == berth_runtime::ErrorKind::NotFound => return Ok(()),
            // Already stopped (kill of a dead process) or unreachable: delete decides.
            Err(e) => tracing::debug!(id = %id, error = %e, "SIGKILL before delete"),
        }
        match self.tasks.delete(NAMESPACE, id).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == berth_runtime::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(crate::status::from_runtime(e)),
        }
    }

    /// Everything a pod holds, released (run failure undo and RemovePodSandbox).
    async fn destroy_pod(&self, meta: &SandboxMeta) -> Result<(), Status> {
        self.stop_pod_resources(meta).await?;
        if let Some(w) = &meta.warm {
            self.cri.warm.release(&self.cri.cni, w).await;
        }
        // Snapshot first: the collector must not race us for it once the record is gone.
        self.cri_remove_rootfs(&meta.id).await?;
        self.cri_delete_record(&meta.id).await?;
        let dir = meta.dir.clone();
        blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Status::internal(format!("remove {}: {e}", dir.display())))
            }
            _ => Ok(()),
        })
        .await
    }

    pub async fn cri_remove_pod(&self, id: &str) -> Result<(), Status> {
        let Some(meta) = self.cri.records.sandbox(id) else {
            return Ok(());
        };
        for c in self.cri.records.containers_of(&meta.id) {
            self.cri_remove_container(&c.id).await?;
        }
        let _lock = self.cri.lock(&meta.id).await;
        let meta = self.cri.records.sandbox(&meta.id).unwrap_or(meta);
        self.destroy_pod(&meta).await?;
        self.cri.records.remove_sandbox(&meta.id);
        self.cri.forget_lock(&meta.id);
        tracing::info!(pod = %meta.name, id = %meta.id, "pod sandbox removed");
        Ok(())
    }

    pub fn pod_status(
        &self,
        meta: &SandboxMeta,
        verbose: bool,
    ) -> k8s_cri::v1::PodSandboxStatusResponse {
        use k8s_cri::v1::*;
        let (net, pid, ipc) = namespace_mode(&meta.config);
        let mut ips = meta.ips.iter();
        let network = PodSandboxNetworkStatus {
            ip: ips.next().cloned().unwrap_or_default(),
            additional_ips: ips.map(|ip| PodIp { ip: ip.clone() }).collect(),
        };
        let status = PodSandboxStatus {
            id: meta.id.clone(),
            metadata: meta.config.metadata.clone(),
            state: sandbox_state(meta.state) as i32,
            created_at: meta.created_at,
            network: Some(network),
            linux: Some(LinuxPodSandboxStatus {
                namespaces: Some(Namespace {
                    options: Some(NamespaceOption {
                        network: net as i32,
                        pid: pid as i32,
                        ipc: ipc as i32,
                        ..Default::default()
                    }),
                }),
            }),
            labels: meta.config.labels.clone(),
            annotations: meta.config.annotations.clone(),
            runtime_handler: meta.runtime_handler.clone(),
        };
        let mut info = std::collections::HashMap::new();
        if verbose {
            info.insert(
                "info".to_string(),
                serde_json::json!({
                    "pid": meta.pid,
                    "netNamespacePath": meta.netns,
                    "runtimeHandler": meta.runtime_handler,
                    "cgroupParent": meta.cgroup_parent,
                    "image": self.cri.config.sandbox_image,
                })
                .to_string(),
            );
        }
        PodSandboxStatusResponse {
            status: Some(status),
            info,
            ..Default::default()
        }
    }

    pub fn list_pods(&self, filter: Option<PodSandboxFilter>) -> Vec<k8s_cri::v1::PodSandbox> {
        let f = filter.unwrap_or_default();
        self.cri
            .records
            .sandboxes()
            .into_iter()
            .filter(|m| f.id.is_empty() || m.id.starts_with(&f.id))
            .filter(|m| {
                f.state
                    .as_ref()
                    .is_none_or(|s| s.state == sandbox_state(m.state) as i32)
            })
            .filter(|m| labels_match(&m.config.labels, &f.label_selector))
            .map(|m| k8s_cri::v1::PodSandbox {
                id: m.id.clone(),
                metadata: m.config.metadata.clone(),
                state: sandbox_state(m.state) as i32,
                created_at: m.created_at,
                labels: m.config.labels.clone(),
                annotations: m.config.annotations.clone(),
                runtime_handler: m.runtime_handler.clone(),
            })
            .collect()
    }
}

pub fn sandbox_state(s: SandboxState) -> PodSandboxState {
    match s {
        SandboxState::Ready => PodSandboxState::SandboxReady,
        SandboxState::NotReady => PodSandboxState::SandboxNotready,
    }
}

pub fn labels_match(
    labels: &std::collections::HashMap<String, String>,
    selector: &std::collections::HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
