//! The task manager: one shim per task, state recoverable from the bundles on disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::{Duration, SystemTime};

use containerd_shim_protos::api;
use containerd_shim_protos::events::task::TaskExit;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::ttrpc::asynchronous::Server;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use crate::bundle::{validate_id, Bundle, Meta};
use crate::convert::{
    any_from_pb, any_to_pb, mount_to_pb, opt_any_to_pb, state_from_pb, time_from_pb, time_to_pb,
};
use crate::error::{Error, ErrorKind, Result};
use crate::events::EventSink;
use crate::shim::{Bootstrap, ShimClient, CALL_TIMEOUT, CREATE_TIMEOUT};
use crate::types::*;
use crate::{binary, proc};

pub(crate) const TASK_EXIT_TOPIC: &str = "/tasks/exit";
const TASK_EXIT_TYPE: &str = "containerd.events.TaskExit";
/// What containerd reports when the real exit status is unknown.
const UNKNOWN_EXIT: u32 = 255;
const SHIM_EXIT_GRACE: Duration = Duration::from_secs(10);

type Key = (String, String);

/// One task and its shim.
pub(crate) struct Task {
    ns: String,
    id: String,
    bundle: Bundle,
    meta: Meta,
    /// None when the shim was already gone at recovery.
    client: Option<ShimClient>,
    shim_pid: u32,
    /// Some(exit) once the shim is gone: the task is STOPPED for good.
    dead: watch::Sender<Option<Exit>>,
    /// Set before we ask the shim to exit, so its death is not mistaken for a crash.
    deleting: AtomicBool,
    /// Serialises deletes of this task (the CRI's exit watcher and a StopPodSandbox may race).
    delete_lock: Mutex<()>,
    background: StdMutex<Vec<JoinHandle<()>>>,
}

impl Drop for Task {
    fn drop(&mut self) {
        self.stop_background();
    }
}

impl Task {
    fn stop_background(&self) {
        if let Ok(mut bg) = self.background.lock() {
            for h in bg.drain(..) {
                h.abort();
            }
        }
    }

    fn add_background(&self, h: JoinHandle<()>) {
        if let Ok(mut bg) = self.background.lock() {
            bg.push(h);
        }
    }

    fn dead_exit(&self) -> Option<Exit> {
        *self.dead.borrow()
    }

    /// The live shim, or why there is none.
    fn shim(&self) -> Result<&ShimClient> {
        if self.dead_exit().is_some() {
            return Err(Error::NotFound(format!(
                "task {}: shim is gone, process already finished",
                self.id
            )));
        }
        self.client
            .as_ref()
            .ok_or_else(|| Error::Unavailable(format!("task {}: no shim connection", self.id)))
    }

    fn bootstrap<'a>(&'a self, cfg: &'a RuntimeConfig) -> Bootstrap<'a> {
        Bootstrap {
            cfg,
            binary: &self.meta.binary,
            namespace: &self.ns,
            id: &self.id,
            bundle: &self.bundle.path,
        }
    }

    async fn call<Q: Message, R: Message>(
        &self,
        method: &str,
        req: &Q,
        timeout: Option<Duration>,
    ) -> Result<R> {
        let shim = self.shim()?;
        shim.call(method, req, timeout)
            .await
            .map_err(|e| Error::from_ttrpc(&format!("task {}: {method}", self.id), e))
    }

    /// Adds runc's own reason (from `log.json`) to a shim error that lacks it.
    fn with_runtime_log(&self, err: Error) -> Error {
        let Some(msg) = self.bundle.last_runtime_log_msg() else {
            return err;
        };
        let text = err.message();
        if text.contains(&msg) {
            return err;
        }
        let text = format!("{text}: {msg}");
        match err {
            Error::NotFound(_) => Error::NotFound(text),
            Error::FailedPrecondition(_) => Error::FailedPrecondition(text),
            Error::InvalidArgument(_) => Error::InvalidArgument(text),
            Error::Internal(_) => Error::Internal(text),
            Error::Unavailable(_) => Error::Unavailable(text),
            _ => Error::Unknown(text),
        }
    }
}

pub(crate) struct Inner {
    cfg: RuntimeConfig,
    events: Arc<dyn EventSink>,
    tasks: StdMutex<HashMap<Key, Arc<Task>>>,
    /// Serializes the check-and-record of published exits.
    publish_lock: Mutex<()>,
    /// Serializes recovery against itself.
    recover_lock: Mutex<()>,
}

/// Runs tasks through shim v2 (task API v2 or v3) shims. Cheap to share (`Arc`).
pub struct TaskManager {
    inner: Arc<Inner>,
    server: StdMutex<Option<Server>>,
}

impl Drop for TaskManager {
    fn drop(&mut self) {
        // Stop serving events and drop open shim connections so a successor can take over the
        // socket; the shims themselves keep running (berthd restart is not task death).
        let server = self.server.lock().ok().and_then(|mut s| s.take());
        if let (Some(mut server), Ok(rt)) = (server, tokio::runtime::Handle::try_current()) {
            rt.spawn(async move {
                let _ = server.shutdown().await;
            });
        }
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            for t in tasks.values() {
                t.stop_background();
            }
            tasks.clear();
        }
    }
}

fn init_key(exec_id: &str, pid: u32) -> String {
    let who = if exec_id.is_empty() { "init" } else { exec_id };
    format!("{who} {pid}")
}

fn exit_event(container_id: &str, exec_id: &str, exit: &Exit) -> Result<prost_types::Any> {
    let ev = TaskExit {
        container_id: container_id.to_string(),
        id: if exec_id.is_empty() {
            container_id.to_string()
        } else {
            exec_id.to_string()
        },
        pid: exit.pid,
        exit_status: exit.status,
        exited_at: MessageField::some(time_to_pb(exit.exited_at)),
        ..Default::default()
    };
    Ok(prost_types::Any {
        type_url: TASK_EXIT_TYPE.into(),
        value: ev
            .write_to_bytes()
            .map_err(|e| Error::Internal(e.to_string()))?,
    })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task: {e}")))?
}

fn socket_path(address: &str) -> Option<PathBuf> {
    address
        .strip_prefix("unix://")
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
}

impl Inner {
    fn get(&self, ns: &str, id: &str) -> Result<Arc<Task>> {
        self.tasks
            .lock()
            .map_err(|_| Error::Internal("task table poisoned".into()))?
            .get(&(ns.to_string(), id.to_string()))
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("task {id} in namespace {ns}")))
    }

    fn insert(&self, task: Arc<Task>) -> Result<()> {
        self.tasks
            .lock()
            .map_err(|_| Error::Internal("task table poisoned".into()))?
            .insert((task.ns.clone(), task.id.clone()), task);
        Ok(())
    }

    fn remove(&self, ns: &str, id: &str) {
        if let Ok(mut t) = self.tasks.lock() {
            t.remove(&(ns.to_string(), id.to_string()));
        }
    }

    /// Publishes an exit unless its bundle says it was published already.
    async fn publish_exit_once(
        &self,
        ns: &str,
        container_id: &str,
        exec_id: &str,
        pid: u32,
        event: prost_types::Any,
    ) {
        let _guard = self.publish_lock.lock().await;
        let bundle = Bundle::at(&self.cfg.state_dir, ns, container_id);
        let key = init_key(exec_id, pid);
        let fresh = blocking(move || {
            if bundle.path.is_dir() {
                bundle.mark_published(&key)
            } else {
                Ok(true)
            }
        })
        .await;
        match fresh {
            Ok(false) => {
                tracing::debug!(
                    namespace = ns,
                    id = container_id,
                    exec_id,
                    "exit already published"
                );
            }
            Ok(true) => self.events.publish(ns, TASK_EXIT_TOPIC, event),
            Err(e) => {
                tracing::warn!(namespace = ns, id = container_id, "recording exit: {e}");
                self.events.publish(ns, TASK_EXIT_TOPIC, event);
            }
        }
    }

    /// An envelope from a shim. Exits are deduplicated; everything else passes through.
    pub(crate) async fn forward_event(&self, env: Envelope) {
        let Some(ev) = env.event.as_ref() else {
            return;
        };
        let any = any_from_pb(ev);
        if env.topic == TASK_EXIT_TOPIC {
            if let Ok(exit) = TaskExit::parse_from_bytes(&ev.value) {
                let exec_id = if exit.id == exit.container_id || exit.id.is_empty() {
                    ""
                } else {
                    exit.id.as_str()
                };
                self.publish_exit_once(&env.namespace, &exit.container_id, exec_id, exit.pid, any)
                    .await;
                return;
            }
        }
        self.events.publish(&env.namespace, &env.topic, any);
    }

    /// The shim went away without being asked: clean up after it and mark the task STOPPED.
    async fn on_shim_death(&self, ns: &str, id: &str) {
        let Ok(task) = self.get(ns, id) else {
            return;
        };
        if task.deleting.load(Ordering::SeqCst) || task.dead_exit().is_some() {
            return;
        }
        tracing::warn!(namespace = ns, id, "shim died; cleaning up");
        let exit = self
            .cleanup_dead_shim(&task.bundle, &task.meta, ns, id)
            .await;
        if let Err(e) = blocking({
            let b = task.bundle.clone();
            move || b.write_exit(&exit)
        })
        .await
        {
            tracing::warn!(namespace = ns, id, "recording exit: {e}");
        }
        task.dead.send_replace(Some(exit));
        match exit_event(id, "", &exit) {
            Ok(ev) => self.publish_exit_once(ns, id, "", exit.pid, ev).await,
            Err(e) => tracing::warn!("{e}"),
        }
        // Last: this runs inside one of the background tasks, which aborting cancels at the
        // next await.
        task.stop_background();
    }

    /// Runs the shim's `delete` bootstrap (kills the container, unmounts) and removes the stale
    /// shim socket. Returns the exit as the shim reports it (137 for runc), else 255.
    async fn cleanup_dead_shim(&self, bundle: &Bundle, meta: &Meta, ns: &str, id: &str) -> Exit {
        let boot = Bootstrap {
            cfg: &self.cfg,
            binary: &meta.binary,
            namespace: ns,
            id,
            bundle: &bundle.path,
        };
        let exit = match boot.delete().await {
            Ok(r) => Exit {
                pid: if r.pid != 0 { r.pid } else { meta.pid },
                status: r.exit_status,
                exited_at: time_from_pb(&r.exited_at).unwrap_or_else(SystemTime::now),
            },
            Err(e) => {
                tracing::warn!(namespace = ns, id, "shim delete: {e}");
                Exit {
                    pid: meta.pid,
                    status: UNKNOWN_EXIT,
                    exited_at: SystemTime::now(),
                }
            }
        };
        let b = bundle.clone();
        let _ = blocking(move || {
            crate::bundle::unmount_all(&b.rootfs());
            if let Some(sock) = b.read_address().ok().and_then(|a| socket_path(&a)) {
                let _ = std::fs::remove_file(sock);
            }
            Ok(())
        })
        .await;
        exit
    }

    fn watch_shim(self: &Arc<Self>, task: &Arc<Task>) {
        let weak: Weak<Inner> = Arc::downgrade(self);
        let (ns, id, pid) = (task.ns.clone(), task.id.clone(), task.shim_pid);
        task.add_background(tokio::spawn(async move {
            proc::wait_exit(pid).await;
            if let Some(inner) = weak.upgrade() {
                inner.on_shim_death(&ns, &id).await;
            }
        }));
    }

    /// Whether another live task is served by the same shim process (one shim per pod).
    fn shim_shared(&self, task: &Task) -> bool {
        task.shim_pid != 0
            && self.tasks.lock().is_ok_and(|t| {
                t.values().any(|o| {
                    o.shim_pid == task.shim_pid
                        && (o.ns != task.ns || o.id != task.id)
                        && !o.deleting.load(Ordering::SeqCst)
                })
            })
    }

    /// Asks a shim whose task is deleted to exit, and makes sure it does — unless it still
    /// serves other tasks of its pod, in which case the last one's delete ends it.
    async fn shutdown_shim(&self, task: &Task, id: &str) {
        task.deleting.store(true, Ordering::SeqCst);
        if self.shim_shared(task) {
            return;
        }
        if let Some(c) = &task.client {
            let req = api::ShutdownRequest {
                id: id.to_string(),
                now: false,
                ..Default::default()
            };
            // The shim may exit before answering: a broken connection is success here.
            let _ = c
                .call::<_, containerd_shim_protos::protobuf::well_known_types::empty::Empty>(
                    "Shutdown",
                    &req,
                    Some(CALL_TIMEOUT),
                )
                .await;
        }
        proc::reap(task.shim_pid, SHIM_EXIT_GRACE).await;
    }

    async fn connect_shim(
        &self,
        bundle: &Bundle,
        address: &str,
        task_api: u32,
        ns: &str,
        id: &str,
    ) -> Result<(ShimClient, u32)> {
        let client = ShimClient::connect(address, task_api, ns).await?;
        let req = api::ConnectRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let pid = match client
            .call::<_, api::ConnectResponse>("Connect", &req, Some(CALL_TIMEOUT))
            .await
        {
            Ok(r) if r.shim_pid != 0 => r.shim_pid,
            Ok(_) | Err(_) => {
                // Fall back to the pid file shims write into the bundle.
                let p = bundle.file("shim.pid");
                tokio::fs::read_to_string(&p)
                    .await
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or_else(|| Error::Unavailable(format!("shim for task {id}: no pid")))?
            }
        };
        Ok((client, pid))
    }
}

impl TaskManager {
    /// Starts serving the events socket; call [`TaskManager::recover`] next.
    pub async fn new(cfg: RuntimeConfig, events: Arc<dyn EventSink>) -> Result<Arc<TaskManager>> {
        tokio::fs::create_dir_all(&cfg.state_dir)
            .await
            .map_err(|e| Error::io(format!("create {}", cfg.state_dir.display()), e))?;
        let ttrpc = cfg.ttrpc_address.clone();
        let inner = Arc::new(Inner {
            cfg,
            events,
            tasks: StdMutex::new(HashMap::new()),
            publish_lock: Mutex::new(()),
            recover_lock: Mutex::new(()),
        });
        let server = crate::events::serve(&ttrpc, Arc::downgrade(&inner)).await?;
        Ok(Arc::new(TaskManager {
            inner,
            server: StdMutex::new(Some(server)),
        }))
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.cfg
    }

    /// The pid of the task's shim daemon; 0 once the shim is gone.
    pub fn shim_pid(&self, ns: &str, id: &str) -> Result<u32> {
        let task = self.inner.get(ns, id)?;
        Ok(if task.dead_exit().is_some() {
            0
        } else {
            task.shim_pid
        })
    }

    #[tracing::instrument(skip(self, req), fields(id = %req.id))]
    pub async fn create(&self, ns: &str, req: CreateTask) -> Result<u32> {
        validate_id("namespace", ns)?;
        validate_id("task id", &req.id)?;
        if req.checkpoint.as_deref().is_some_and(|c| !c.is_empty()) {
            return Err(Error::Unimplemented(
                "restoring a task from a checkpoint is not supported by berth".into(),
            ));
        }
        if self.inner.get(ns, &req.id).is_ok() {
            return Err(Error::AlreadyExists(format!("task {}", req.id)));
        }
        let binary = binary::resolve(&req.runtime, &self.inner.cfg.shim_dirs)?;
        let bundle = Bundle::at(&self.inner.cfg.state_dir, ns, &req.id);
        let mut meta = Meta {
            namespace: ns.to_string(),
            id: req.id.clone(),
            runtime: req.runtime.clone(),
            binary: binary.clone(),
            task_api: 0,
            pid: 0,
            shim_pid: 0,
        };
        {
            let (b, m, spec) = (bundle.clone(), meta.clone(), req.spec.clone());
            blocking(move || {
                b.create(&spec)?;
                let res = b.write_meta(&m).and_then(|_| b.create_log_fifo());
                if res.is_err() {
                    let _ = b.remove();
                }
                res
            })
            .await?;
        }
        let log = crate::shim::spawn_log_reader(&bundle.file("log"), ns, &req.id);
        let mut started: Option<(ShimClient, u32)> = None;
        let res = self
            .create_in_bundle(ns, &req, &bundle, &mut meta, log.is_some(), &mut started)
            .await;
        match res {
            Ok(pid) => {
                let (client, shim_pid) = match started {
                    Some(s) => s,
                    None => return Err(Error::Internal("shim vanished".into())),
                };
                let (dead, _) = watch::channel(None);
                let task = Arc::new(Task {
                    ns: ns.to_string(),
                    id: req.id.clone(),
                    bundle,
                    meta,
                    client: Some(client),
                    shim_pid,
                    dead,
                    deleting: AtomicBool::new(false),
                    delete_lock: Mutex::new(()),
                    background: StdMutex::new(log.into_iter().collect()),
                });
                self.inner.insert(task.clone())?;
                self.inner.watch_shim(&task);
                Ok(pid)
            }
            Err(err) => {
                // Nothing may be left: shim, runc state, mounts, bundle.
                let (dead, _) = watch::channel(None);
                let (client, shim_pid) = match started {
                    Some((c, p)) => (Some(c), p),
                    None => (None, 0),
                };
                let task = Task {
                    ns: ns.to_string(),
                    id: req.id.clone(),
                    bundle: bundle.clone(),
                    meta: meta.clone(),
                    client,
                    shim_pid,
                    dead,
                    deleting: AtomicBool::new(true),
                    delete_lock: Mutex::new(()),
                    background: StdMutex::new(log.into_iter().collect()),
                };
                let err = task.with_runtime_log(err);
                if task.client.is_some() {
                    self.inner.shutdown_shim(&task, &req.id).await;
                }
                if meta.task_api != 0 {
                    if let Err(e) = task.bootstrap(&self.inner.cfg).delete().await {
                        tracing::debug!("cleanup after failed create: {e}");
                    }
                    // The pod's shim still serves the pod's other tasks on that socket.
                    if !self.inner.shim_shared(&task) {
                        if let Some(sock) = bundle.read_address().ok().and_then(|a| socket_path(&a))
                        {
                            let _ = tokio::fs::remove_file(sock).await;
                        }
                    }
                }
                task.stop_background();
                let b = bundle.clone();
                if let Err(e) = blocking(move || b.remove()).await {
                    tracing::warn!("cleanup after failed create: {e}");
                }
                Err(err)
            }
        }
    }

    async fn create_in_bundle(
        &self,
        ns: &str,
        req: &CreateTask,
        bundle: &Bundle,
        meta: &mut Meta,
        log_ok: bool,
        started: &mut Option<(ShimClient, u32)>,
    ) -> Result<u32> {
        if !log_ok {
            return Err(Error::Internal("cannot open the shim log fifo".into()));
        }
        let boot = Bootstrap {
            cfg: &self.inner.cfg,
            binary: &meta.binary,
            namespace: ns,
            id: &req.id,
            bundle: &bundle.path,
        };
        // Mark "a shim may exist" before starting it, so a crash here is cleaned at recovery.
        meta.task_api = 2;
        let (address, task_api) = boot.start(req.runtime_options.as_ref()).await?;
        meta.task_api = task_api;
        {
            let (b, m, a) = (bundle.clone(), meta.clone(), address.clone());
            blocking(move || {
                b.write_address(&a)?;
                b.write_meta(&m)
            })
            .await?;
        }
        let (client, shim_pid) = self
            .inner
            .connect_shim(bundle, &address, task_api, ns, &req.id)
            .await?;
        *started = Some((client.clone(), shim_pid));
        meta.shim_pid = shim_pid;
        let creq = api::CreateTaskRequest {
            id: req.id.clone(),
            bundle: bundle.path.display().to_string(),
            rootfs: req.rootfs.iter().map(mount_to_pb).collect(),
            terminal: req.terminal,
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            options: opt_any_to_pb(req.runtime_options.as_ref()),
            ..Default::default()
        };
        let resp: api::CreateTaskResponse = client
            .call("Create", &creq, Some(CREATE_TIMEOUT))
            .await
            .map_err(|e| Error::from_ttrpc(&format!("create task {}", req.id), e))?;
        meta.pid = resp.pid;
        let (b, m) = (bundle.clone(), meta.clone());
        blocking(move || b.write_meta(&m)).await?;
        Ok(resp.pid)
    }

    pub async fn start(&self, ns: &str, id: &str, exec_id: &str) -> Result<u32> {
        let task = self.inner.get(ns, id)?;
        let req = api::StartRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let resp: api::StartResponse = task
            .call("Start", &req, Some(CREATE_TIMEOUT))
            .await
            .map_err(|e| task.with_runtime_log(e))?;
        Ok(resp.pid)
    }

    /// Deletes a stopped (or never started) task: shim Delete + Shutdown, bundle removed.
    #[tracing::instrument(skip(self))]
    pub async fn delete(&self, ns: &str, id: &str) -> Result<Exit> {
        let task = self.inner.get(ns, id)?;
        let _one_at_a_time = task.delete_lock.lock().await;
        // A concurrent delete got there first.
        let task = self.inner.get(ns, id)?;
        let exit = if let Some(exit) = task.dead_exit() {
            exit
        } else {
            let st = self.state(ns, id, "").await?;
            if matches!(
                st.status,
                Status::Running | Status::Paused | Status::Pausing
            ) {
                return Err(Error::FailedPrecondition(format!(
                    "task {id} must be stopped before deletion: {:?}",
                    st.status
                )));
            }
            let req = api::DeleteRequest {
                id: id.to_string(),
                ..Default::default()
            };
            let r: api::DeleteResponse = task.call("Delete", &req, Some(CALL_TIMEOUT)).await?;
            self.inner.shutdown_shim(&task, id).await;
            Exit {
                pid: r.pid,
                status: r.exit_status,
                exited_at: time_from_pb(&r.exited_at).unwrap_or_else(SystemTime::now),
            }
        };
        // A pod's shim keeps serving the pod's other tasks on the same socket.
        let shared = self.inner.shim_shared(&task);
        task.deleting.store(true, Ordering::SeqCst);
        task.stop_background();
        let b = task.bundle.clone();
        if !shared {
            let _ = blocking(move || {
                if let Some(sock) = b.read_address().ok().and_then(|a| socket_path(&a)) {
                    let _ = std::fs::remove_file(sock);
                }
                Ok(())
            })
            .await;
        }
        let b = task.bundle.clone();
        // The shim has deleted the task: a bundle dir that will not go is a leak to report, not
        // a reason to keep a task whose shim may be gone.
        if let Err(e) = blocking(move || b.remove()).await {
            tracing::warn!(namespace = ns, id, error = %e, "remove bundle");
        }
        self.inner.remove(ns, id);
        Ok(exit)
    }

    pub async fn delete_process(&self, ns: &str, id: &str, exec_id: &str) -> Result<Exit> {
        if exec_id.is_empty() {
            return self.delete(ns, id).await;
        }
        let task = self.inner.get(ns, id)?;
        let req = api::DeleteRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let r: api::DeleteResponse = task.call("Delete", &req, Some(CALL_TIMEOUT)).await?;
        Ok(Exit {
            pid: r.pid,
            status: r.exit_status,
            exited_at: time_from_pb(&r.exited_at).unwrap_or_else(SystemTime::now),
        })
    }

    pub async fn state(&self, ns: &str, id: &str, exec_id: &str) -> Result<ProcessState> {
        let task = self.inner.get(ns, id)?;
        if let Some(exit) = task.dead_exit() {
            if !exec_id.is_empty() {
                return Err(Error::NotFound(format!("process {exec_id} of task {id}")));
            }
            return Ok(ProcessState {
                id: id.to_string(),
                exec_id: String::new(),
                pid: exit.pid,
                status: Status::Stopped,
                stdin: String::new(),
                stdout: String::new(),
                stderr: String::new(),
                terminal: false,
                exit_status: exit.status,
                exited_at: Some(exit.exited_at),
            });
        }
        let req = api::StateRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let r: api::StateResponse = task.call("State", &req, Some(CALL_TIMEOUT)).await?;
        Ok(state_from_pb(id, exec_id, &r))
    }

    /// One entry per task (its init process), sorted by id.
    pub async fn list(&self, ns: &str) -> Result<Vec<ProcessState>> {
        let mut ids: Vec<String> = self
            .inner
            .tasks
            .lock()
            .map_err(|_| Error::Internal("task table poisoned".into()))?
            .keys()
            .filter(|(n, _)| n == ns)
            .map(|(_, id)| id.clone())
            .collect();
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.state(ns, &id, "").await {
                Ok(s) => out.push(s),
                Err(Error::NotFound(_)) => {} // deleted meanwhile
                Err(e) => {
                    tracing::warn!(namespace = ns, id, "state: {e}");
                    out.push(ProcessState {
                        id,
                        exec_id: String::new(),
                        pid: 0,
                        status: Status::Unknown,
                        stdin: String::new(),
                        stdout: String::new(),
                        stderr: String::new(),
                        terminal: false,
                        exit_status: 0,
                        exited_at: None,
                    })
                }
            }
        }
        Ok(out)
    }

    pub async fn kill(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<()> {
        let task = self.inner.get(ns, id)?;
        let req = api::KillRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            signal,
            all,
            ..Default::default()
        };
        task.call::<_, containerd_shim_protos::protobuf::well_known_types::empty::Empty>(
            "Kill",
            &req,
            Some(CALL_TIMEOUT),
        )
        .await?;
        Ok(())
    }

    pub async fn exec(&self, ns: &str, id: &str, req: ExecProcess) -> Result<()> {
        validate_id("exec id", &req.exec_id)?;
        let task = self.inner.get(ns, id)?;
        let r = api::ExecProcessRequest {
            id: id.to_string(),
            exec_id: req.exec_id.clone(),
            terminal: req.terminal,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            spec: MessageField::some(any_to_pb(&req.spec)),
            ..Default::default()
        };
        task.call::<_, containerd_shim_protos::protobuf::well_known_types::empty::Empty>(
            "Exec",
            &r,
            Some(CALL_TIMEOUT),
        )
        .await
        .map_err(|e| task.with_runtime_log(e))?;
        Ok(())
    }

    pub async fn resize_pty(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<()> {
        let task = self.inner.get(ns, id)?;
        let req = api::ResizePtyRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            width,
            height,
            ..Default::default()
        };
        task.call::<_, containerd_shim_protos::protobuf::well_known_types::empty::Empty>(
            "ResizePty",
            &req,
            Some(CALL_TIMEOUT),
        )
        .await?;
        Ok(())
    }

    pub async fn close_io(&self, ns: &str, id: &str, exec_id: &str, stdin: bool) -> Result<()> {
        let task = self.inner.get(ns, id)?;
        let req = api::CloseIORequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            stdin,
            ..Default::default()
        };
        task.call::<_, containerd_shim_protos::protobuf::well_known_types::empty::Empty>(
            "CloseIO",
            &req,
            Some(CALL_TIMEOUT),
        )
        .await?;
        Ok(())
    }

    pub async fn pause(&self, ns: &str, id: &str) -> Result<()> {
        let task = self.inner.get(ns, id)?;
        let req = api::PauseRequest {
            id: id.to_string(),
            ..Default::default()
        };
        task.call::<_, containerd_shim_protos::protobuf::well_known_types::empty::Empty>(
            "Pause",
            &req,
            Some(CALL_TIMEOUT),
        )
        .await?;
        Ok(())
    }

    pub async fn resume(&self, ns: &str, id: &str) -> Result<()> {
        let task = self.inner.get(ns, id)?;
        let req = api::ResumeRequest {
            id: id.to_string(),
            ..Default::default()
        };
        task.call::<_, containerd_shim_protos::protobuf::well_known_types::empty::Empty>(
            "Resume",
            &req,
            Some(CALL_TIMEOUT),
        )
        .await?;
        Ok(())
    }

    pub async fn pids(&self, ns: &str, id: &str) -> Result<Vec<ProcessInfo>> {
        let task = self.inner.get(ns, id)?;
        let req = api::PidsRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let r: api::PidsResponse = task.call("Pids", &req, Some(CALL_TIMEOUT)).await?;
        Ok(r.processes
            .iter()
            .map(|p| ProcessInfo {
                pid: p.pid,
                info: p.info.as_ref().map(any_from_pb),
            })
            .collect())
    }

    pub async fn update(
        &self,
        ns: &str,
        id: &str,
        resources: Option<prost_types::Any>,
        annotations: HashMap<String, String>,
    ) -> Result<()> {
        let task = self.inner.get(ns, id)?;
        let req = api::UpdateTaskRequest {
            id: id.to_string(),
            resources: opt_any_to_pb(resources.as_ref()),
            annotations,
            ..Default::default()
        };
        task.call::<_, containerd_shim_protos::protobuf::well_known_types::empty::Empty>(
            "Update",
            &req,
            Some(CALL_TIMEOUT),
        )
        .await?;
        Ok(())
    }

    /// The shim's metrics `Any`, as is (cgroups v1 or v2 `Metrics`).
    pub async fn stats(&self, ns: &str, id: &str) -> Result<Option<prost_types::Any>> {
        let task = self.inner.get(ns, id)?;
        let req = api::StatsRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let r: api::StatsResponse = task.call("Stats", &req, Some(CALL_TIMEOUT)).await?;
        Ok(r.stats.as_ref().map(any_from_pb))
    }

    /// Blocks until the process exits (or its shim dies).
    pub async fn wait(&self, ns: &str, id: &str, exec_id: &str) -> Result<Exit> {
        let task = self.inner.get(ns, id)?;
        if let Some(exit) = task.dead_exit() {
            return Ok(exit);
        }
        let pid = match self.state(ns, id, exec_id).await {
            Ok(s) => s.pid,
            Err(e @ Error::NotFound(_)) => return Err(e),
            Err(_) => 0,
        };
        let dead = task.dead.subscribe();
        let dead_after_error = task.dead.subscribe();
        let req = api::WaitRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let wait_dead = |mut rx: watch::Receiver<Option<Exit>>| async move {
            // Copy the exit out at once: the watch guard must not live across an await.
            rx.wait_for(|d| d.is_some()).await.ok().and_then(|d| *d)
        };
        tokio::select! {
            r = task.call::<_, api::WaitResponse>("Wait", &req, None) => {
                match r {
                    Ok(r) => Ok(Exit {
                        pid,
                        status: r.exit_status,
                        exited_at: time_from_pb(&r.exited_at).unwrap_or_else(SystemTime::now),
                    }),
                    // The shim answered: the process is gone (deleted by a concurrent delete).
                    Err(e) if e.kind() != ErrorKind::Unavailable => Err(e),
                    Err(e) => {
                        // The shim may have died under us: its death record is the answer.
                        let d = tokio::time::timeout(Duration::from_secs(30), wait_dead(dead_after_error)).await;
                        match d {
                            Ok(Some(exit)) => Ok(exit),
                            _ => Err(e),
                        }
                    }
                }
            }
            d = wait_dead(dead) => {
                d.ok_or_else(|| Error::Unavailable(format!("task {id} went away")))
            }
        }
    }

    /// Called once at daemon start: finds every bundle, reconnects live shims, cleans up after
    /// dead ones and publishes exits that happened while berthd was down (each exactly once).
    pub async fn recover(&self) -> Result<RecoveryReport> {
        let _guard = self.inner.recover_lock.lock().await;
        let mut report = RecoveryReport::default();
        let state_dir = self.inner.cfg.state_dir.clone();
        let bundles = blocking(move || list_bundles(&state_dir)).await?;
        for (ns, id) in bundles {
            if self.inner.get(&ns, &id).is_ok() {
                continue;
            }
            let tref = TaskRef {
                namespace: ns.clone(),
                id: id.clone(),
            };
            match self.recover_one(&ns, &id).await {
                Ok(Recovered::Live) => report.reconnected.push(tref),
                Ok(Recovered::Stopped) => report.stopped.push(tref),
                Ok(Recovered::Cleaned) => report.cleaned.push(tref),
                Err(e) => report.errors.push(format!("{ns}/{id}: {e}")),
            }
        }
        Ok(report)
    }

    async fn recover_one(&self, ns: &str, id: &str) -> Result<Recovered> {
        let inner = &self.inner;
        let bundle = Bundle::at(&inner.cfg.state_dir, ns, id);
        let meta = match bundle.read_meta() {
            Ok(m) if m.namespace == ns && m.id == id => m,
            // A bundle without our record never got a shim: just remove it.
            _ => {
                let b = bundle.clone();
                blocking(move || b.remove()).await?;
                return Ok(Recovered::Cleaned);
            }
        };
        let make = |client: Option<ShimClient>, shim_pid: u32, dead: Option<Exit>| Task {
            ns: ns.to_string(),
            id: id.to_string(),
            bundle: bundle.clone(),
            meta: meta.clone(),
            client,
            shim_pid,
            dead: watch::channel(dead).0,
            deleting: AtomicBool::new(false),
            delete_lock: Mutex::new(()),
            background: StdMutex::new(Vec::new()),
        };
        // Died while we were running, not yet deleted: keep it STOPPED.
        if let Some(exit) = bundle.read_exit() {
            inner.insert(Arc::new(make(None, 0, Some(exit))))?;
            if let Ok(ev) = exit_event(id, "", &exit) {
                inner.publish_exit_once(ns, id, "", exit.pid, ev).await;
            }
            return Ok(Recovered::Stopped);
        }
        let connected = match bundle.read_address() {
            Ok(addr) if meta.task_api != 0 => {
                inner
                    .connect_shim(&bundle, &addr, meta.task_api, ns, id)
                    .await
            }
            Ok(_) | Err(_) => Err(Error::Unavailable("no shim address".into())),
        };
        match connected {
            Ok((client, shim_pid)) => {
                let task = Arc::new(make(Some(client), shim_pid, None));
                if let Some(h) = crate::shim::spawn_log_reader(&bundle.file("log"), ns, id) {
                    task.add_background(h);
                }
                inner.insert(task.clone())?;
                inner.watch_shim(&task);
                // An exit that happened while we were down is published now (once).
                if let Ok(st) = self.state(ns, id, "").await {
                    if st.status == Status::Stopped {
                        let exit = Exit {
                            pid: st.pid,
                            status: st.exit_status,
                            exited_at: st.exited_at.unwrap_or_else(SystemTime::now),
                        };
                        if let Ok(ev) = exit_event(id, "", &exit) {
                            inner.publish_exit_once(ns, id, "", exit.pid, ev).await;
                        }
                    }
                }
                Ok(Recovered::Live)
            }
            Err(e) => {
                tracing::info!(namespace = ns, id, "shim unreachable ({e}); cleaning up");
                let exit = if meta.task_api != 0 {
                    inner.cleanup_dead_shim(&bundle, &meta, ns, id).await
                } else {
                    Exit {
                        pid: meta.pid,
                        status: UNKNOWN_EXIT,
                        exited_at: SystemTime::now(),
                    }
                };
                if meta.pid != 0 {
                    if let Ok(ev) = exit_event(id, "", &exit) {
                        inner.publish_exit_once(ns, id, "", exit.pid, ev).await;
                    }
                }
                let b = bundle.clone();
                blocking(move || b.remove()).await?;
                Ok(Recovered::Cleaned)
            }
        }
    }
}

enum Recovered {
    Live,
    Stopped,
    Cleaned,
}

/// `(namespace, id)` of every bundle directory under `state_dir`.
fn list_bundles(state_dir: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(state_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(format!("read {}", state_dir.display()), e)),
    };
    for ns in rd.flatten() {
        let Some(ns_name) = ns.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if validate_id("namespace", &ns_name).is_err() || !ns.path().is_dir() {
            continue;
        }
        let Ok(inner) = std::fs::read_dir(ns.path()) else {
            continue;
        };
        for b in inner.flatten() {
            if let Some(id) = b.file_name().to_str() {
                if validate_id("task id", id).is_ok() && b.path().is_dir() {
                    out.push((ns_name.clone(), id.to_string()));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}
