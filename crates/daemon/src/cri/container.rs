//! CRI containers: created from the image config and the request (specs by berth-cri), started
//! as tasks in the pod's shim with their output copied into the CRI log file, stopped with the
//! stop signal then SIGKILL, and their exits recorded (the task is deleted, its exit kept).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1::{ContainerFilter, ContainerState as CriState, CreateContainerRequest};
use tonic::Status;

use super::io::{Fifos, UntilExit};
use super::log::{LogFile, Stream};
use super::meta::{now_nanos, ContainerMeta, ContainerState, SandboxState};
use super::persist::NewRecord;
use super::sandbox::{labels_match, namespace_mode, oom_score_adj_min, pod_files};
use super::{images, required, NAMESPACE};
use crate::convert::to_runtime_mounts;
use crate::daemon::blocking;
use crate::services::Service;
use crate::status::IntoStatus;

pub fn spec_status(e: berth_cri::Error) -> Status {
    use berth_cri::ErrorKind as K;
    let msg = e.to_string();
    match e.kind() {
        K::InvalidArgument => Status::invalid_argument(msg),
        K::NotFound => Status::not_found(msg),
        K::FailedPrecondition => Status::failed_precondition(msg),
        K::Unimplemented => Status::unimplemented(msg),
        K::Internal => Status::internal(msg),
    }
}

/// `log_path` is relative to the pod's log directory and stays inside it.
fn log_path(dir: &str, rel: &str) -> Result<Option<PathBuf>, Status> {
    if rel.is_empty() {
        return Ok(None);
    }
    if dir.is_empty() {
        return Err(Status::invalid_argument(format!(
            "container log_path {rel:?} needs the pod's log_directory"
        )));
    }
    let p = Path::new(rel);
    if p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Status::invalid_argument(format!(
            "container log_path {rel:?} must be relative to the pod's log directory, without '..'"
        )));
    }
    Ok(Some(Path::new(dir).join(p)))
}

/// Whether the kernel's OOM killer killed a process of the cgroup at `cgroups_path` (a
/// cgroupfs path; systemd `slice:prefix:name` paths are not resolved here).
fn oom_killed(cgroups_path: &str) -> bool {
    if cgroups_path.contains(':') {
        return false;
    }
    let rel = cgroups_path.trim_start_matches('/');
    let count = |file: std::path::PathBuf| {
        std::fs::read_to_string(file).ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
    };
    let v1 = Path::new("/sys/fs/cgroup/memory")
        .join(rel)
        .join("memory.oom_control");
    let v2 = Path::new("/sys/fs/cgroup").join(rel).join("memory.events");
    count(v1).or_else(|| count(v2)).is_some_and(|n| n > 0)
}

/// The signal number of an image's StopSignal (`SIGTERM`, `TERM`, `15`); SIGTERM by default.
fn stop_signal(name: &str) -> u32 {
    if name.is_empty() {
        return 15;
    }
    if let Ok(n) = name.parse::<u32>() {
        return n;
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .map(|s| s as u32)
        .unwrap_or(15)
}

fn needs_rootfs_for_user(cfg: &k8s_cri::v1::ContainerConfig, image_user: &str) -> bool {
    let by_name = cfg
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| !s.run_as_username.is_empty());
    let user = image_user.split(':').next().unwrap_or("");
    by_name || !image_user.is_empty() && user.parse::<u32>().is_err() || image_user.contains(':')
}

impl Service {
    pub async fn cri_create_container(
        &self,
        req: CreateContainerRequest,
    ) -> Result<String, Status> {
        let cfg = required(req.config, "container config")?;
        let md = required(cfg.metadata.clone(), "container metadata")?;
        if md.name.is_empty() {
            return Err(Status::invalid_argument(
                "container metadata.name must not be empty",
            ));
        }
        let sandbox = self.cri_pod(&req.pod_sandbox_id)?;
        if sandbox.state != SandboxState::Ready {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {} is not ready",
                sandbox.id
            )));
        }
        let pod_md = sandbox.config.metadata.clone().unwrap_or_default();
        let wanted = cfg
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if wanted.is_empty() {
            return Err(Status::invalid_argument("container config names no image"));
        }
        let log = log_path(&sandbox.config.log_directory, &cfg.log_path)?;
        let store = self.store.clone();
        let w = wanted.clone();
        let image = blocking(move || images::resolve_runnable(&store, &w))
            .await?
            .ok_or_else(|| Status::not_found(format!("image {wanted:?} not found")))?;
        let image_cfg = berth_spec::ImageRuntimeConfig::from_image_config(&image.config)
            .map_err(|e| Status::failed_precondition(format!("image {wanted}: config: {e}")))?;

        let id = super::meta::new_id();
        let name = format!(
            "{}_{}_{}_{}_{}",
            md.name, pod_md.name, pod_md.namespace, pod_md.uid, md.attempt
        );
        self.cri.records.reserve(&name, &id).map_err(|holder| {
            Status::already_exists(format!("container name {name:?} is reserved for {holder}"))
        })?;
        let meta = ContainerMeta {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            name: name.clone(),
            config_pb: super::meta::encode_config(&cfg),
            config: cfg,
            image_id: image.id.clone(),
            image_ref: wanted.clone(),
            log_path: log,
            state: ContainerState::Created,
            created_at: now_nanos(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            pid: 0,
            stop_signal: stop_signal(&image_cfg.stop_signal),
        };
        let r = self
            .create_container_record(&meta, &sandbox, &image, &image_cfg)
            .await;
        if let Err(e) = r {
            let _ = self.cri_delete_record(&id).await;
            let _ = self.cri_remove_rootfs(&id).await;
            self.cri.records.release(&name, &id);
            return Err(e);
        }
        self.cri.records.put_container(meta);
        Ok(id)
    }

    async fn create_container_record(
        &self,
        meta: &ContainerMeta,
        sandbox: &super::meta::SandboxMeta,
        image: &images::RunnableImage,
        image_cfg: &berth_spec::ImageRuntimeConfig,
    ) -> Result<(), Status> {
        let _hold = self.gc.hold().await;
        let mounts = self.cri_prepare_rootfs(&meta.id, &image.chain_id).await?;
        let (_, _, ipc) = namespace_mode(&sandbox.config);
        let files = pod_files(&sandbox.dir, ipc != k8s_cri::v1::NamespaceMode::Node);
        let needs_rootfs = needs_rootfs_for_user(&meta.config, &image_cfg.user);
        let handler = self.cri.handlers.get(&sandbox.runtime_handler)?.clone();
        let mut spec_meta = meta.clone();
        spec_meta.config.annotations =
            super::handlers::allowed(&handler.container_annotations, &meta.config.annotations);
        let input = (
            spec_meta,
            sandbox.clone(),
            image.name.clone(),
            image_cfg.clone(),
            files,
        );
        let warm_address = sandbox.warm.as_ref().map(|w| w.address.clone());
        let spec = blocking(move || {
            let (meta, sandbox, image_name, image_cfg, files) = input;
            // Only user and group names need the image's files: mount them just for the lookup.
            let rootfs = if needs_rootfs {
                Some(berth_snapshot::mount::TempMount::new(&mounts).status()?)
            } else {
                None
            };
            let spec = berth_cri::container_spec(&berth_cri::ContainerSpec {
                id: &meta.id,
                sandbox_id: &sandbox.id,
                config: &meta.config,
                sandbox: &sandbox.config,
                image: &image_cfg,
                image_name: &image_name,
                rootfs: rootfs.as_ref().map(|m| m.path()),
                sandbox_pid: sandbox.pid,
                netns: sandbox.netns.as_deref(),
                files: &files,
                cgroup_parent: &sandbox.cgroup_parent,
                oom_score_adj_min: oom_score_adj_min(),
            })
            .map_err(spec_status);
            if let Some(m) = rootfs {
                let _ = m.release();
            }
            berth_spec::to_json(&spec?)
                .map_err(|e| Status::internal(format!("container spec: {e}")))
                .map(|spec| match &warm_address {
                    Some(a) => super::warm::annotate(spec, a),
                    None => spec,
                })
        })
        .await?;
        let mut labels = meta.config.labels.clone();
        labels.insert("io.kubernetes.cri.sandbox-id".into(), sandbox.id.clone());
        self.cri_create_record(NewRecord {
            id: meta.id.clone(),
            kind: "container",
            labels,
            image: image.name.clone(),
            runtime_type: handler.runtime_type.clone(),
            runtime_options: handler.options.clone(),
            spec,
            sandbox: sandbox.id.clone(),
            meta: meta.to_blob(),
        })
        .await
    }

    pub async fn cri_start_container(&self, id: &str) -> Result<(), Status> {
        let meta = self.cri_container(id)?;
        let _lock = self.cri.lock(&meta.id).await;
        let meta = self.cri_container(&meta.id)?;
        if meta.state != ContainerState::Created {
            return Err(Status::failed_precondition(format!(
                "container {} is not in the created state",
                meta.id
            )));
        }
        let sandbox = self.cri.records.sandbox(&meta.sandbox_id).ok_or_else(|| {
            Status::failed_precondition(format!("pod sandbox {} is gone", meta.sandbox_id))
        })?;
        if sandbox.state != SandboxState::Ready {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {} is not ready",
                sandbox.id
            )));
        }
        match self.start_task(&meta, &sandbox).await {
            Ok((pid, started_at)) => {
                let started = self.cri.records.update_container(&meta.id, |m| {
                    m.state = ContainerState::Running;
                    m.pid = pid;
                    m.started_at = started_at;
                });
                if let Some(m) = started {
                    self.cri_save_meta(&m.id, m.to_blob()).await?;
                }
                self.watch_container(&meta.id);
                Ok(())
            }
            Err(e) => {
                // As containerd: the container is left exited with the reason, for the kubelet.
                self.cri.signal_exit(&meta.id);
                let _ = self.tasks.delete(NAMESPACE, &meta.id).await;
                if let Some(m) = self.cri.records.update_container(&meta.id, |m| {
                    m.state = ContainerState::Exited;
                    m.finished_at = now_nanos();
                    m.exit_code = 128;
                    m.reason = "StartError".into();
                    m.message = e.message().to_string();
                }) {
                    let _ = self.cri_save_meta(&m.id, m.to_blob()).await;
                }
                Err(e)
            }
        }
    }

    /// Output FIFOs and their copiers into the log file, then the task.
    async fn start_task(
        &self,
        meta: &ContainerMeta,
        sandbox: &super::meta::SandboxMeta,
    ) -> Result<(u32, i64), Status> {
        let tty = meta.config.tty;
        let mut fifos = Fifos::at(self.cri.io_dir(&meta.id), tty);
        if meta.config.stdin {
            // Attach sessions write the container's stdin here.
            fifos = fifos.with_stdin();
        }
        let keepalive = self.attach_log(meta, &fifos).await?;
        let spec = self.cri_record_spec(&meta.id).await?;
        let rootfs = self.cri_rootfs_mounts(&meta.id).await?;
        let handler = self.cri.handlers.get(&sandbox.runtime_handler)?;
        self.tasks
            .create(
                NAMESPACE,
                berth_runtime::CreateTask {
                    id: meta.id.clone(),
                    spec,
                    runtime: handler.runtime_type.clone(),
                    runtime_options: handler.options.clone(),
                    rootfs: to_runtime_mounts(rootfs),
                    stdin: fifos.stdin_str(),
                    stdout: fifos.stdout_str(),
                    stderr: fifos.stderr_str(),
                    terminal: tty,
                    ..Default::default()
                },
            )
            .await
            .status()?;
        // Taken before the start: a process that exits at once must not finish before it began.
        let started_at = now_nanos();
        let pid = self.tasks.start(NAMESPACE, &meta.id, "").await.status();
        drop(keepalive);
        let pid = pid?;
        Ok((pid, started_at))
    }

    /// Opens the container's FIFOs and copies what arrives into its CRI log file (or drops it
    /// when the container has no log path) until the process exits. Also used after a restart.
    /// Returns the FIFOs' keep-alive write ends: drop them once the task has started.
    pub async fn attach_log(
        &self,
        meta: &ContainerMeta,
        fifos: &Fifos,
    ) -> Result<Vec<tokio::net::unix::pipe::Sender>, Status> {
        let f = fifos.clone();
        blocking(move || {
            f.create()
                .map_err(|e| Status::internal(format!("create FIFOs in {}: {e}", f.dir.display())))
        })
        .await?;
        let open = |p: &Path| {
            super::io::open_reader(p)
                .map_err(|e| Status::internal(format!("open {}: {e}", p.display())))
        };
        let (stdout, out_keep) = open(&fifos.stdout)?;
        let mut keepalive = vec![out_keep];
        let stderr = match fifos.stderr.as_deref().map(open).transpose()? {
            Some((rx, keep)) => {
                keepalive.push(keep);
                Some(rx)
            }
            None => None,
        };
        let log = match &meta.log_path {
            Some(p) => LogFile::open(p)
                .await
                .map_err(|e| Status::internal(format!("open log {}: {e}", p.display())))?,
            None => LogFile::open(&fifos.dir.join("discarded.log"))
                .await
                .map_err(|e| Status::internal(format!("open log: {e}")))?,
        };
        self.cri.set_log(&meta.id, log.clone());
        let tap = self.cri.new_output_tap(&meta.id);
        let exited = self.cri.exit_signal(&meta.id);
        let mut copiers = vec![tokio::spawn(super::log::copy(
            UntilExit::new(stdout, exited.clone()),
            Stream::Stdout,
            log.clone(),
            Some(tap.clone()),
        ))];
        if let Some(r) = stderr {
            copiers.push(tokio::spawn(super::log::copy(
                UntilExit::new(r, exited),
                Stream::Stderr,
                log,
                Some(tap),
            )));
        }
        // The FIFOs go once both copiers are done.
        let (s, id, fifos) = (self.clone(), meta.id.clone(), fifos.clone());
        tokio::spawn(async move {
            for c in copiers {
                let _ = c.await;
            }
            s.cri.forget_log(&id);
            s.cri.forget_output_tap(&id);
            fifos.remove();
        });
        Ok(keepalive)
    }

    /// Records the exit of the container's process when it happens.
    pub fn watch_container(&self, id: &str) {
        let s = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            match s.tasks.wait(NAMESPACE, &id, "").await {
                Ok(exit) => s.record_exit(&id, exit.status as i32, exit.exited_at).await,
                Err(e) => tracing::debug!(id = %id, error = %e, "wait for container"),
            }
        });
    }

    /// Keeps the exit in the record, ends the log copiers, deletes the task. Idempotent.
    pub async fn record_exit(&self, id: &str, code: i32, at: std::time::SystemTime) {
        let finished = at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or_else(|_| now_nanos());
        // The cgroup still exists until the task is deleted below: ask it whether the kernel's
        // OOM killer ended the container (no race with the shim's OOM event).
        let oom = code != 0
            && match self.cri_record_spec(id).await {
                Ok(spec) => {
                    let path = serde_json::from_slice::<serde_json::Value>(&spec)
                        .ok()
                        .and_then(|v| v.pointer("/linux/cgroupsPath")?.as_str().map(String::from));
                    match path {
                        Some(p) => blocking(move || Ok(oom_killed(&p))).await.unwrap_or(false),
                        None => false,
                    }
                }
                Err(_) => false,
            };
        let mut changed = false;
        let updated = self.cri.records.update_container(id, |m| {
            if m.state == ContainerState::Running {
                m.state = ContainerState::Exited;
                m.exit_code = code;
                m.finished_at = finished.max(m.started_at);
                if m.reason.is_empty() {
                    m.reason = match (code, oom) {
                        (0, _) => "Completed",
                        (_, true) => "OOMKilled",
                        _ => "Error",
                    }
                    .into();
                }
                changed = true;
            }
        });
        self.cri.signal_exit(id);
        if let (true, Some(m)) = (changed, updated) {
            if let Err(e) = self.cri_save_meta(id, m.to_blob()).await {
                tracing::warn!(id = %id, error = %e, "persist container exit");
            }
        }
        match self.tasks.delete(NAMESPACE, id).await {
            Ok(_) => {}
            Err(e) if e.kind() == berth_runtime::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(id = %id, error = %e, "delete exited container task"),
        }
    }

    /// The stop signal, then SIGKILL after `timeout` seconds; a stopped container is fine.
    pub async fn cri_stop_container(&self, id: &str, timeout: i64) -> Result<(), Status> {
        let meta = self.cri_container(id)?;
        let _lock = self.cri.lock(&meta.id).await;
        let meta = self.cri_container(&meta.id)?;
        if meta.state != ContainerState::Running {
            return Ok(());
        }
        let id = meta.id.clone();
        let wait = |secs: u64| {
            let s = self.clone();
            let id = id.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(secs), s.tasks.wait(NAMESPACE, &id, ""))
                    .await
            }
        };
        if timeout > 0 {
            match self
                .tasks
                .kill(NAMESPACE, &id, "", meta.stop_signal, false)
                .await
            {
                Ok(()) => {}
                Err(e) if e.kind() == berth_runtime::ErrorKind::NotFound => {}
                Err(e) => tracing::debug!(id = %id, error = %e, "stop signal"),
            }
            if let Ok(Ok(exit)) = wait(timeout as u64).await {
                self.record_exit(&id, exit.status as i32, exit.exited_at)
                    .await;
                return Ok(());
            }
        }
        // SIGKILL again every couple of seconds until the exit is seen: a kill that raced the
        // runtime's own bookkeeping must not leave the kubelet waiting on a live process.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match self.tasks.kill(NAMESPACE, &id, "", 9, false).await {
                Ok(()) => {}
                Err(e) if e.kind() == berth_runtime::ErrorKind::NotFound => {
                    self.record_exit(&id, 137, std::time::SystemTime::now())
                        .await;
                    return Ok(());
                }
                Err(e) => tracing::debug!(id = %id, error = %e, "SIGKILL"),
            }
            match wait(2).await {
                Ok(Ok(exit)) => {
                    self.record_exit(&id, exit.status as i32, exit.exited_at)
                        .await;
                    return Ok(());
                }
                // Deleted under us by the exit watcher, which recorded the exit first.
                Ok(Err(e)) if e.kind() == berth_runtime::ErrorKind::NotFound => {
                    self.record_exit(&id, 137, std::time::SystemTime::now())
                        .await;
                    return Ok(());
                }
                Ok(Err(e)) => return Err(crate::status::from_runtime(e)),
                Err(_) if std::time::Instant::now() >= deadline => {
                    return Err(Status::deadline_exceeded(format!(
                        "container {id} did not exit 30 s after SIGKILL"
                    )))
                }
                Err(_) => tracing::warn!(id = %id, "no exit 2 s after SIGKILL; sending it again"),
            }
        }
    }

    /// Stops (forcibly) and removes the container; an unknown id is fine.
    pub async fn cri_remove_container(&self, id: &str) -> Result<(), Status> {
        let Some(meta) = self.cri.records.container(id) else {
            return Ok(());
        };
        self.cri_stop_container(&meta.id, 0).await?;
        let _lock = self.cri.lock(&meta.id).await;
        self.kill_and_delete_task(&meta.id).await?;
        self.cri.signal_exit(&meta.id);
        self.cri_remove_rootfs(&meta.id).await?;
        self.cri_delete_record(&meta.id).await?;
        self.cri.records.remove_container(&meta.id);
        self.cri.forget_layer_usage(&meta.id);
        self.cri.forget_lock(&meta.id);
        Ok(())
    }

    pub fn container_status(
        &self,
        m: &ContainerMeta,
        verbose: bool,
    ) -> k8s_cri::v1::ContainerStatusResponse {
        use k8s_cri::v1::*;
        let status = ContainerStatus {
            id: m.id.clone(),
            metadata: m.config.metadata.clone(),
            state: cri_state(m.state) as i32,
            created_at: m.created_at,
            started_at: m.started_at,
            finished_at: m.finished_at,
            exit_code: m.exit_code,
            image: Some(ImageSpec {
                image: m.image_ref.clone(),
                ..Default::default()
            }),
            image_ref: m.image_id.clone(),
            reason: m.reason.clone(),
            message: m.message.clone(),
            labels: m.config.labels.clone(),
            annotations: m.config.annotations.clone(),
            mounts: m.config.mounts.clone(),
            log_path: m
                .log_path
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            ..Default::default()
        };
        let mut info = std::collections::HashMap::new();
        if verbose {
            info.insert(
                "info".to_string(),
                serde_json::json!({
                    "sandboxID": m.sandbox_id,
                    "pid": m.pid,
                    "name": m.name,
                    "logPath": m.log_path,
                })
                .to_string(),
            );
        }
        ContainerStatusResponse {
            status: Some(status),
            info,
        }
    }

    pub fn list_containers(&self, filter: Option<ContainerFilter>) -> Vec<k8s_cri::v1::Container> {
        let f = filter.unwrap_or_default();
        self.cri
            .records
            .containers()
            .into_iter()
            .filter(|m| f.id.is_empty() || m.id.starts_with(&f.id))
            .filter(|m| f.pod_sandbox_id.is_empty() || m.sandbox_id.starts_with(&f.pod_sandbox_id))
            .filter(|m| {
                f.state
                    .as_ref()
                    .is_none_or(|s| s.state == cri_state(m.state) as i32)
            })
            .filter(|m| labels_match(&m.config.labels, &f.label_selector))
            .map(|m| k8s_cri::v1::Container {
                id: m.id.clone(),
                pod_sandbox_id: m.sandbox_id.clone(),
                metadata: m.config.metadata.clone(),
                image: Some(k8s_cri::v1::ImageSpec {
                    image: m.image_ref.clone(),
                    ..Default::default()
                }),
                image_ref: m.image_id.clone(),
                state: cri_state(m.state) as i32,
                created_at: m.created_at,
                labels: m.config.labels.clone(),
                annotations: m.config.annotations.clone(),
                ..Default::default()
            })
            .collect()
    }

    pub async fn cri_reopen_log(&self, id: &str) -> Result<(), Status> {
        let meta = self.cri_container(id)?;
        if meta.state != ContainerState::Running {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                meta.id
            )));
        }
        let log = self.cri.log(&meta.id).ok_or_else(|| {
            Status::failed_precondition(format!("container {} has no open log", meta.id))
        })?;
        log.reopen()
            .await
            .map_err(|e| Status::internal(format!("reopen log of {}: {e}", meta.id)))
    }

    pub async fn cri_update_resources(
        &self,
        id: &str,
        linux: Option<k8s_cri::v1::LinuxContainerResources>,
    ) -> Result<(), Status> {
        let meta = self.cri_container(id)?;
        let Some(res) = linux else {
            return Ok(());
        };
        let _lock = self.cri.lock(&meta.id).await;
        let resources = berth_cri::linux_resources(&res).map_err(spec_status)?;
        let json = serde_json::to_vec(&resources)
            .map_err(|e| Status::internal(format!("resources: {e}")))?;
        let spec = self.cri_record_spec(&meta.id).await?;
        let mut spec: serde_json::Value = serde_json::from_slice(&spec)
            .map_err(|e| Status::internal(format!("stored spec of {}: {e}", meta.id)))?;
        if let Some(linux) = spec.get_mut("linux").and_then(|l| l.as_object_mut()) {
            let current = linux
                .entry("resources")
                .or_insert_with(|| serde_json::json!({}));
            merge_json(
                current,
                serde_json::to_value(&resources).unwrap_or_default(),
            );
        }
        if meta.state == ContainerState::Running {
            self.tasks
                .update(
                    NAMESPACE,
                    &meta.id,
                    Some(prost_types::Any {
                        type_url:
                            "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
                                .into(),
                        value: json,
                    }),
                    Default::default(),
                )
                .await
                .status()?;
        }
        let bytes =
            serde_json::to_vec(&spec).map_err(|e| Status::internal(format!("spec: {e}")))?;
        self.cri_update_spec(&meta.id, bytes).await
    }
}

/// Overlays `from`'s set fields onto `into` (objects merge, anything else replaces).
fn merge_json(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge_json(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

pub fn cri_state(s: ContainerState) -> CriState {
    match s {
        ContainerState::Created => CriState::ContainerCreated,
        ContainerState::Running => CriState::ContainerRunning,
        ContainerState::Exited => CriState::ContainerExited,
        ContainerState::Unknown => CriState::ContainerUnknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_stay_inside_the_pod_log_directory() {
        assert_eq!(
            log_path("/var/log/pods/x", "c/0.log").expect("ok"),
            Some(PathBuf::from("/var/log/pods/x/c/0.log"))
        );
        assert_eq!(log_path("/d", "").expect("none"), None);
        for bad in ["/etc/passwd", "../x.log", "c/../../x"] {
            let e = log_path("/d", bad).expect_err(bad);
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
        }
        assert!(log_path("", "c.log").is_err());
    }

    #[test]
    fn stop_signals_by_name_and_number() {
        assert_eq!(stop_signal(""), 15);
        assert_eq!(stop_signal("SIGQUIT"), 3);
        assert_eq!(stop_signal("int"), 2);
        assert_eq!(stop_signal("9"), 9);
    }
}
