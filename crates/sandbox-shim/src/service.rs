//! The task service of a sandbox: one guest kernel per shim (per pod, or per container outside
//! Kubernetes), every container of the group a set of processes inside it.
//!
//! The pod's sandbox container (CRI's pause) has no process in the guest: its process is the
//! guest kernel itself, so it runs while the guest runs and stops when the guest does. Every
//! task reports the guest kernel's host pid (the only pid that means something on the host, as
//! sandboxes with a VMM do); `Pids` lists the processes inside the guest.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use berth_sandbox_proto::{self as proto, Event, Request, Response};
use berth_shim::events::Events;
use berth_shim::reaper::Reaper;
use berth_shim::service::{now, ttrpc_result, validate_id};
use berth_shim::stdio::{self, StdinCloser, StdioPaths};
use containerd_shim::util::convert_to_any;
use containerd_shim::ExitSignal;
use containerd_shim_protos::api::{self, Status};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::{self, TtrpcContext};
use containerd_shim_protos::Task;
use serde_json::Value;

use crate::agent::Agent;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::guest::{self, Guest};
use crate::rootfs;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Exit status of processes lost with their guest (as if SIGKILLed).
const LOST: u32 = 128 + libc::SIGKILL as u32;

struct Process {
    paths: StdioPaths,
    exec_spec: Option<Value>,
    streams: proto::Stdio,
    started: bool,
    guest_pid: u32,
    exit: Option<(u32, Timestamp)>,
    exit_published: bool,
    stdin: Option<StdinCloser>,
}

impl Process {
    fn new(paths: StdioPaths) -> Process {
        Process {
            paths,
            exec_spec: None,
            streams: proto::Stdio::default(),
            started: false,
            guest_pid: 0,
            exit: None,
            exit_published: false,
            stdin: None,
        }
    }
}

struct Container {
    bundle: PathBuf,
    /// The pod's sandbox container: its process is the guest kernel.
    sandbox: bool,
    init: Process,
    execs: HashMap<String, Process>,
}

impl Container {
    fn process(&mut self, exec_id: &str) -> Result<&mut Process> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.execs
            .get_mut(exec_id)
            .ok_or_else(|| Error::NotFound(format!("process {exec_id} not found")))
    }

    fn processes(&mut self) -> impl Iterator<Item = (String, &mut Process)> {
        std::iter::once((String::new(), &mut self.init))
            .chain(self.execs.iter_mut().map(|(k, v)| (k.clone(), v)))
    }
}

#[derive(Default)]
struct State {
    guest: Option<Arc<Guest>>,
    containers: HashMap<String, Container>,
}

pub struct SandboxService {
    namespace: String,
    cfg: Config,
    reaper: Arc<Reaper>,
    events: Arc<Events>,
    exit: Arc<ExitSignal>,
    state: Mutex<State>,
    cv: Condvar,
    /// Held while a guest boots, so two creates never boot two.
    booting: Mutex<()>,
    me: Weak<SandboxService>,
}

fn read_spec(bundle: &Path) -> Result<Value> {
    let path = bundle.join("config.json");
    let data = std::fs::read(&path).map_err(Error::io(format!("read {}", path.display())))?;
    serde_json::from_slice(&data)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))
}

fn annotation<'a>(spec: &'a Value, key: &str) -> Option<&'a str> {
    spec.get("annotations")?.get(key)?.as_str()
}

fn is_sandbox_container(spec: &Value) -> bool {
    annotation(spec, "io.kubernetes.cri.container-type") == Some("sandbox")
}

/// Sends a request that starts a process on `streams` and returns its guest pid; its stdin
/// starts flowing once it exists, and its outputs are dropped if it never does.
fn spawn_in_guest(
    agent: &Arc<Agent>,
    what: &str,
    req: &Request,
    streams: &proto::Stdio,
    stdin: Option<File>,
) -> Result<u32> {
    let result = match agent.call(req, CALL_TIMEOUT) {
        Ok(Response::Pid { pid }) => Ok(pid),
        Ok(other) => Err(Error::Other(format!(
            "the sandbox agent answered {what} with {other:?}"
        ))),
        Err(e) => Err(e),
    };
    match (&result, stdin) {
        (Ok(_), Some(f)) => agent.pump_input(streams.stdin, f),
        (Err(_), _) => {
            agent.detach_output(streams.stdout);
            agent.detach_output(streams.stderr);
        }
        _ => {}
    }
    result
}

impl SandboxService {
    pub fn new(
        namespace: String,
        cfg: Config,
        reaper: Arc<Reaper>,
        events: Arc<Events>,
        exit: Arc<ExitSignal>,
    ) -> Arc<SandboxService> {
        Arc::new_cyclic(|me| SandboxService {
            namespace,
            cfg,
            reaper,
            events,
            exit,
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            booting: Mutex::new(()),
            me: me.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_container<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Container) -> Result<T>,
    ) -> Result<T> {
        let mut st = self.lock();
        let c = st
            .containers
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(format!("container {id} not found")))?;
        f(c)
    }

    fn guest(&self) -> Result<Arc<Guest>> {
        self.lock()
            .guest
            .clone()
            .ok_or_else(|| Error::FailedPrecondition("the sandbox has no guest running".into()))
    }

    fn agent(&self) -> Result<Arc<Agent>> {
        self.guest().map(|g| g.agent.clone())
    }

    /// `/tasks/exit` exactly once, and only after the process's start event.
    fn publish_exit_if_due(&self, id: &str, exec_id: &str, p: &mut Process, pid: u32) {
        let Some((code, at)) = &p.exit else { return };
        if !p.started || p.exit_published {
            return;
        }
        p.exit_published = true;
        let ev = TaskExit {
            container_id: id.to_string(),
            id: if exec_id.is_empty() { id } else { exec_id }.to_string(),
            pid,
            exit_status: *code,
            exited_at: MessageField::some(at.clone()),
            ..Default::default()
        };
        self.events
            .publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(ev));
    }

    fn vm_pid(&self) -> u32 {
        self.lock().guest.as_ref().map_or(0, |g| g.pid as u32)
    }

    /// The agent reported a process's end.
    fn on_agent_event(&self, ev: Event) {
        match ev {
            Event::Exited {
                id,
                exec_id,
                status,
                ..
            } => {
                let pid = self.vm_pid();
                let mut st = self.lock();
                if let Some(c) = st.containers.get_mut(&id) {
                    if let Ok(p) = c.process(&exec_id) {
                        if p.exit.is_none() {
                            p.exit = Some((status, now()));
                            self.publish_exit_if_due(&id, &exec_id, p, pid);
                        }
                    }
                }
                drop(st);
                self.cv.notify_all();
            }
            // The line ended: the guest is gone (its kernel's exit is reaped separately).
            Event::Log { message } if message.is_empty() => self.guest_gone(LOST),
            other => log::debug!("sandbox agent event {other:?}"),
        }
    }

    /// Every process still running is reported stopped: the guest kernel ended.
    fn guest_gone(&self, code: u32) {
        let mut st = self.lock();
        let Some(g) = st.guest.clone() else { return };
        let pid = g.pid as u32;
        let mut ids: Vec<String> = st.containers.keys().cloned().collect();
        // Workloads first, the sandbox container (the guest itself) last.
        ids.sort_by_key(|id| st.containers.get(id).is_some_and(|c| c.sandbox));
        for id in ids {
            let Some(c) = st.containers.get_mut(&id) else {
                continue;
            };
            let sandbox = c.sandbox;
            for (exec_id, p) in c.processes() {
                if p.exit.is_none() {
                    let status = if sandbox && exec_id.is_empty() {
                        code
                    } else {
                        LOST
                    };
                    p.exit = Some((status, now()));
                    self.publish_exit_if_due(&id, &exec_id, p, pid);
                }
            }
        }
        drop(st);
        self.cv.notify_all();
    }

    /// A reaped child: the guest kernel when its pid matches.
    pub fn on_exit(&self, pid: i32, code: u32) -> bool {
        let guest = self.lock().guest.clone().filter(|g| g.pid == pid);
        let is_vm = guest.is_some();
        if let Some(g) = guest {
            log::info!("sandbox guest kernel {pid} exited with {code}");
            g.mark_exited();
            self.guest_gone(code);
        }
        is_vm
    }

    /// Boots the group's guest unless it runs already (a warm one is adopted by the pod).
    fn ensure_guest(&self, id: &str, spec: &Value) -> Result<Arc<Guest>> {
        let _boot = self.booting.lock().unwrap_or_else(|e| e.into_inner());
        // Not `if let Some(g) = self.lock()...`: that would hold the state lock through
        // `adopt`, whose helper commands wait on the reaper, whose handler takes the lock.
        let running = self.lock().guest.clone();
        if let Some(g) = running {
            if g.exited() {
                return Err(Error::FailedPrecondition(
                    "the sandbox's guest kernel has stopped".into(),
                ));
            }
            g.adopt(spec)?;
            return Ok(g);
        }
        let group = annotation(spec, "io.kubernetes.cri.sandbox-id")
            .filter(|s| !s.is_empty())
            .unwrap_or(id);
        self.boot(group, spec, guest::Network::Now)
    }

    /// Boots a guest in `netns` before any pod asks (warm pool); the first pod created here
    /// adopts it.
    pub fn prewarm(&self, group: &str, netns: &Path) -> Result<()> {
        let _boot = self.booting.lock().unwrap_or_else(|e| e.into_inner());
        let spec = serde_json::json!({
            "linux": {"namespaces": [{"type": "network", "path": netns}]}
        });
        self.boot(group, &spec, guest::Network::Later).map(drop)
    }

    fn boot(&self, group: &str, spec: &Value, network: guest::Network) -> Result<Arc<Guest>> {
        let me = self.me.clone();
        let on_event = Box::new(move |ev: Event| {
            if let Some(s) = me.upgrade() {
                s.on_agent_event(ev);
            }
        });
        let g = Arc::new(guest::boot(
            &self.cfg,
            &self.namespace,
            group,
            spec,
            network,
            on_event,
        )?);
        self.lock().guest = Some(g.clone());
        // The kernel may have died before we recorded its pid.
        if let Some(code) = self.reaper.take(g.pid) {
            self.on_exit(g.pid, code);
        }
        Ok(g)
    }

    fn do_create(&self, req: api::CreateTaskRequest) -> Result<u32> {
        validate_id(&req.id)?;
        if self.lock().containers.contains_key(&req.id) {
            return Err(Error::AlreadyExists(format!(
                "container {} already exists",
                req.id
            )));
        }
        if !req.checkpoint.is_empty() {
            return Err(Error::InvalidArgument(
                "checkpoint restore is not supported by the sandbox runtime".into(),
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        let spec = read_spec(&bundle)?;
        let sandbox = is_sandbox_container(&spec);
        let t0 = std::time::Instant::now();
        let guest = self.ensure_guest(&req.id, &spec)?;
        log::info!(
            "create {}: guest ready in {} ms",
            req.id,
            t0.elapsed().as_millis()
        );
        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let mut init = Process::new(paths.clone());
        if !sandbox {
            let r = self.create_in_guest(&guest, &req, &bundle, &spec, &paths);
            match r {
                Ok((pid, streams, stdin)) => {
                    init.guest_pid = pid;
                    init.streams = streams;
                    init.stdin = stdin;
                }
                Err(e) => {
                    let _ = guest.agent.call(
                        &Request::RemoveContainer { id: req.id.clone() },
                        CALL_TIMEOUT,
                    );
                    if let Err(e) = rootfs::remove(&guest.dir, &req.id) {
                        log::warn!("{e}");
                    }
                    if self.lock().containers.is_empty() {
                        self.stop_guest();
                    }
                    return Err(e);
                }
            }
        }
        let pid = guest.pid as u32;
        self.lock().containers.insert(
            req.id.clone(),
            Container {
                bundle: bundle.clone(),
                sandbox,
                init,
                execs: HashMap::new(),
            },
        );
        if guest.exited() {
            self.guest_gone(LOST);
        }
        let ev = TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(TaskIO {
                stdin: paths.stdin,
                stdout: paths.stdout,
                stderr: paths.stderr,
                terminal: paths.terminal,
                ..Default::default()
            }),
            pid,
            ..Default::default()
        };
        self.events
            .publish(topics::TASK_CREATE_EVENT_TOPIC, Box::new(ev));
        Ok(pid)
    }

    /// Connects a process's stdio to new streams of the line.
    fn open_stdio(
        &self,
        agent: &Arc<Agent>,
        paths: &StdioPaths,
        id: &str,
    ) -> Result<(proto::Stdio, Option<StdinCloser>, Option<File>)> {
        let (rio, pio) = stdio::open(paths, id, &self.namespace)?;
        let mut streams = proto::Stdio {
            terminal: paths.terminal,
            ..Default::default()
        };
        if let Some(fd) = rio.stdout {
            streams.stdout = agent.stream_id();
            agent.attach_output(streams.stdout, File::from(fd));
        }
        if let (Some(fd), false) = (rio.stderr, paths.terminal) {
            streams.stderr = agent.stream_id();
            agent.attach_output(streams.stderr, File::from(fd));
        }
        let stdin = rio.stdin.map(File::from);
        if stdin.is_some() {
            streams.stdin = agent.stream_id();
        }
        Ok((streams, pio.stdin, stdin))
    }

    fn create_in_guest(
        &self,
        guest: &Arc<Guest>,
        req: &api::CreateTaskRequest,
        bundle: &Path,
        spec: &Value,
        paths: &StdioPaths,
    ) -> Result<(u32, proto::Stdio, Option<StdinCloser>)> {
        let agent = &guest.agent;
        let t0 = std::time::Instant::now();
        let rootfs = rootfs::mount_rootfs(&guest.dir, &req.id, &req.rootfs, bundle, &guest.idmap)?;
        let mounts = rootfs::translate_mounts(&guest.dir, &req.id, spec, &guest.idmap)?;
        let (streams, closer, stdin) = self.open_stdio(agent, paths, &req.id)?;
        let host_ms = t0.elapsed().as_millis();
        let create = Request::CreateContainer {
            id: req.id.clone(),
            rootfs,
            readonly_rootfs: spec
                .pointer("/root/readonly")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            mounts,
            process: spec.get("process").cloned().unwrap_or(Value::Null),
            hostname: spec
                .get("hostname")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            stdio: streams.clone(),
        };
        let pid = spawn_in_guest(agent, "CreateContainer", &create, &streams, stdin)?;
        log::info!(
            "create {}: host mounts and stdio {host_ms} ms, guest CreateContainer {} ms",
            req.id,
            t0.elapsed().as_millis() - host_ms
        );
        Ok((pid, streams, closer))
    }

    fn do_start(&self, req: api::StartRequest) -> Result<u32> {
        let pid = self.vm_pid();
        let (sandbox, exec) = self.with_container(&req.id, |c| {
            let sandbox = c.sandbox;
            let p = c.process(&req.exec_id)?;
            if p.started {
                return Err(Error::FailedPrecondition(format!(
                    "process {} already started",
                    if req.exec_id.is_empty() {
                        &req.id
                    } else {
                        &req.exec_id
                    }
                )));
            }
            Ok((sandbox, p.exec_spec.clone()))
        })?;
        if req.exec_id.is_empty() {
            if !sandbox {
                let agent = self.agent()?;
                agent.call(
                    &Request::StartContainer { id: req.id.clone() },
                    CALL_TIMEOUT,
                )?;
            }
            let mut st = self.lock();
            if let Some(c) = st.containers.get_mut(&req.id) {
                c.init.started = true;
                self.events.publish(
                    topics::TASK_START_EVENT_TOPIC,
                    Box::new(TaskStart {
                        container_id: req.id.clone(),
                        pid,
                        ..Default::default()
                    }),
                );
                self.publish_exit_if_due(&req.id, "", &mut c.init, pid);
            }
            return Ok(pid);
        }
        let agent = self.agent()?;
        let paths = self.with_container(&req.id, |c| Ok(c.process(&req.exec_id)?.paths.clone()))?;
        let (streams, closer, stdin) = self.open_stdio(&agent, &paths, &req.exec_id)?;
        let exec_req = Request::Exec {
            id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            process: exec.unwrap_or(Value::Null),
            stdio: streams.clone(),
        };
        let guest_pid = spawn_in_guest(&agent, "Exec", &exec_req, &streams, stdin)?;
        let mut st = self.lock();
        if let Some(c) = st.containers.get_mut(&req.id) {
            if let Ok(p) = c.process(&req.exec_id) {
                p.started = true;
                p.guest_pid = guest_pid;
                p.streams = streams;
                p.stdin = closer;
                self.events.publish(
                    topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                    Box::new(TaskExecStarted {
                        container_id: req.id.clone(),
                        exec_id: req.exec_id.clone(),
                        pid,
                        ..Default::default()
                    }),
                );
                self.publish_exit_if_due(&req.id, &req.exec_id, p, pid);
            }
        }
        drop(st);
        self.cv.notify_all();
        Ok(pid)
    }

    fn do_kill(&self, req: api::KillRequest) -> Result<()> {
        let (sandbox, exited) = self.with_container(&req.id, |c| {
            let sandbox = c.sandbox;
            Ok((sandbox, c.process(&req.exec_id)?.exit.is_some()))
        })?;
        if exited {
            if req.signal == libc::SIGKILL as u32 {
                return Ok(());
            }
            return Err(Error::NotFound("process already finished".into()));
        }
        if sandbox && req.exec_id.is_empty() {
            // Stopping the sandbox container stops its guest.
            self.stop_guest();
            return Ok(());
        }
        self.agent()?
            .call(
                &Request::Signal {
                    id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    signal: req.signal,
                    all: req.all,
                },
                CALL_TIMEOUT,
            )
            .map(drop)
            .or_else(|e| match e {
                // Raced with the process's end.
                Error::FailedPrecondition(_) if req.signal == libc::SIGKILL as u32 => Ok(()),
                e => Err(e),
            })
    }

    /// Powers the guest off (the agent syncs first), killing its kernel if it lingers.
    fn stop_guest(&self) {
        let Some(g) = self.lock().guest.clone() else {
            return;
        };
        if g.exited() {
            return;
        }
        let _ = g.agent.call(&Request::Shutdown, Duration::from_millis(500));
        if !g.wait_exited(Duration::from_secs(3)) {
            log::warn!("sandbox guest {} did not power off; killing it", g.pid);
            g.kill();
            g.wait_exited(Duration::from_secs(5));
        }
    }

    fn do_exec(&self, req: api::ExecProcessRequest) -> Result<()> {
        validate_id(&req.exec_id)?;
        let spec: Value = match req.spec.as_ref() {
            Some(any) => serde_json::from_slice(&any.value)
                .map_err(|e| Error::InvalidArgument(format!("exec process spec: {e}")))?,
            None => return Err(Error::InvalidArgument("exec without a process spec".into())),
        };
        self.with_container(&req.id, |c| {
            if c.sandbox {
                return Err(Error::FailedPrecondition(
                    "cannot exec in the sandbox container".into(),
                ));
            }
            if c.init.exit.is_some() {
                return Err(Error::FailedPrecondition(format!(
                    "container {} is not running",
                    req.id
                )));
            }
            if c.execs.contains_key(&req.exec_id) {
                return Err(Error::AlreadyExists(format!(
                    "exec {} already exists",
                    req.exec_id
                )));
            }
            let mut p = Process::new(StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            });
            p.exec_spec = Some(spec);
            c.execs.insert(req.exec_id.clone(), p);
            Ok(())
        })?;
        self.events.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            }),
        );
        Ok(())
    }

    fn do_delete(&self, req: api::DeleteRequest) -> Result<api::DeleteResponse> {
        let pid = self.vm_pid();
        let (code, at, sandbox) = self.with_container(&req.id, |c| {
            let sandbox = c.sandbox;
            let p = c.process(&req.exec_id)?;
            if p.started && p.exit.is_none() {
                return Err(Error::FailedPrecondition(format!(
                    "process {} is still running",
                    if req.exec_id.is_empty() {
                        &req.id
                    } else {
                        &req.exec_id
                    }
                )));
            }
            let (code, at) = p.exit.clone().unwrap_or((0, now()));
            Ok((code, at, sandbox))
        })?;
        let guest = self.lock().guest.clone();
        if !req.exec_id.is_empty() {
            if let Some(g) = guest.as_ref().filter(|g| !g.exited()) {
                let _ = g.agent.call(
                    &Request::DeleteProcess {
                        id: req.id.clone(),
                        exec_id: req.exec_id.clone(),
                    },
                    CALL_TIMEOUT,
                );
            }
            self.with_container(&req.id, |c| {
                c.execs.remove(&req.exec_id);
                Ok(())
            })?;
        } else {
            if let Some(g) = guest.as_ref() {
                if !sandbox && !g.exited() {
                    if let Err(e) = g.agent.call(
                        &Request::RemoveContainer { id: req.id.clone() },
                        CALL_TIMEOUT,
                    ) {
                        log::warn!("remove {} in the guest: {e}", req.id);
                    }
                }
                if !sandbox {
                    if let Err(e) = rootfs::remove(&g.dir, &req.id) {
                        log::warn!("{e}");
                    }
                }
            }
            let last = {
                let mut st = self.lock();
                st.containers.remove(&req.id);
                st.containers.is_empty()
            };
            if sandbox || last {
                self.stop_guest();
                if last {
                    self.release_guest();
                }
            }
        }
        self.events.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: req.id.clone(),
                pid,
                exit_status: code,
                exited_at: MessageField::some(at.clone()),
                ..Default::default()
            }),
        );
        Ok(api::DeleteResponse {
            pid,
            exit_status: code,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }

    /// Forgets the stopped guest and removes what it left on the host.
    fn release_guest(&self) {
        let g = self.lock().guest.take();
        if let Some(g) = g {
            g.cleanup();
        }
    }

    fn do_state(&self, req: api::StateRequest) -> Result<api::StateResponse> {
        let pid = self.vm_pid();
        self.with_container(&req.id, |c| {
            let bundle = c.bundle.display().to_string();
            let is_init = req.exec_id.is_empty();
            let p = c.process(&req.exec_id)?;
            let status = if p.exit.is_some() {
                Status::STOPPED
            } else if p.started {
                Status::RUNNING
            } else {
                Status::CREATED
            };
            let mut resp = api::StateResponse {
                id: if is_init {
                    req.id.clone()
                } else {
                    req.exec_id.clone()
                },
                bundle,
                pid,
                status: status.into(),
                stdin: p.paths.stdin.clone(),
                stdout: p.paths.stdout.clone(),
                stderr: p.paths.stderr.clone(),
                terminal: p.paths.terminal,
                exec_id: req.exec_id.clone(),
                ..Default::default()
            };
            if let Some((code, at)) = &p.exit {
                resp.exit_status = *code;
                resp.exited_at = MessageField::some(at.clone());
            }
            Ok(resp)
        })
    }

    fn do_pids(&self, id: &str) -> Result<api::PidsResponse> {
        let sandbox = self.with_container(id, |c| Ok(c.sandbox))?;
        let pids = if sandbox {
            vec![self.vm_pid()]
        } else {
            match self
                .agent()?
                .call(&Request::Pids { id: id.into() }, CALL_TIMEOUT)?
            {
                Response::Pids { pids } => pids,
                other => return Err(Error::Other(format!("unexpected answer {other:?}"))),
            }
        };
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| api::ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    /// The guest kernel's cgroup, as the host sees it: memory and CPU of the whole sandbox.
    fn do_stats(&self, id: &str) -> Result<api::StatsResponse> {
        self.with_container(id, |_| Ok(()))?;
        let pid = self.vm_pid();
        if pid == 0 {
            return Err(Error::FailedPrecondition("the sandbox has no guest".into()));
        }
        let cg = containerd_shim::cgroup::get_cgroup(pid)?;
        let any = if cg.v2() {
            convert_to_any(Box::new(containerd_shim::cgroup::collect_metrics_v2(&cg)?))?
        } else {
            let mut m = containerd_shim::cgroup::collect_metrics(&cg)?;
            berth_shim::cpuacct::fill(&mut m, pid);
            convert_to_any(Box::new(m))?
        };
        Ok(api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    fn do_wait(&self, req: api::WaitRequest) -> Result<api::WaitResponse> {
        let mut st = self.lock();
        loop {
            let c = st
                .containers
                .get_mut(&req.id)
                .ok_or_else(|| Error::NotFound(format!("container {} not found", req.id)))?;
            let p = c.process(&req.exec_id)?;
            if let Some((code, at)) = &p.exit {
                return Ok(api::WaitResponse {
                    exit_status: *code,
                    exited_at: MessageField::some(at.clone()),
                    ..Default::default()
                });
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn do_resize(&self, req: api::ResizePtyRequest) -> Result<()> {
        self.with_container(&req.id, |c| c.process(&req.exec_id).map(drop))?;
        self.agent()?
            .call(
                &Request::ResizePty {
                    id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    width: req.width,
                    height: req.height,
                },
                CALL_TIMEOUT,
            )
            .map(drop)
    }

    fn do_close_io(&self, req: api::CloseIORequest) -> Result<()> {
        let closer =
            self.with_container(&req.id, |c| Ok(c.process(&req.exec_id)?.stdin.clone()))?;
        if req.stdin {
            if let Some(c) = closer {
                c.close();
            }
        }
        Ok(())
    }
}

impl Task for SandboxService {
    fn state(&self, _: &TtrpcContext, req: api::StateRequest) -> ttrpc::Result<api::StateResponse> {
        ttrpc_result(self.do_state(req))
    }

    fn create(
        &self,
        _: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> ttrpc::Result<api::CreateTaskResponse> {
        log::info!("create {} bundle {}", req.id, req.bundle);
        ttrpc_result(self.do_create(req).map(|pid| api::CreateTaskResponse {
            pid,
            ..Default::default()
        }))
    }

    fn start(&self, _: &TtrpcContext, req: api::StartRequest) -> ttrpc::Result<api::StartResponse> {
        ttrpc_result(self.do_start(req).map(|pid| api::StartResponse {
            pid,
            ..Default::default()
        }))
    }

    fn delete(
        &self,
        _: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> ttrpc::Result<api::DeleteResponse> {
        ttrpc_result(self.do_delete(req))
    }

    fn pids(&self, _: &TtrpcContext, req: api::PidsRequest) -> ttrpc::Result<api::PidsResponse> {
        ttrpc_result(self.do_pids(&req.id))
    }

    fn pause(&self, _: &TtrpcContext, _: api::PauseRequest) -> ttrpc::Result<Empty> {
        ttrpc_result(Err(Error::FailedPrecondition(
            "pause is not supported by the sandbox runtime".into(),
        )))
    }

    fn resume(&self, _: &TtrpcContext, _: api::ResumeRequest) -> ttrpc::Result<Empty> {
        ttrpc_result(Err(Error::FailedPrecondition(
            "resume is not supported by the sandbox runtime".into(),
        )))
    }

    fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> ttrpc::Result<Empty> {
        ttrpc_result(self.do_kill(req).map(|_| Empty::new()))
    }

    fn exec(&self, _: &TtrpcContext, req: api::ExecProcessRequest) -> ttrpc::Result<Empty> {
        ttrpc_result(self.do_exec(req).map(|_| Empty::new()))
    }

    fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> ttrpc::Result<Empty> {
        ttrpc_result(self.do_resize(req).map(|_| Empty::new()))
    }

    fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> ttrpc::Result<Empty> {
        ttrpc_result(self.do_close_io(req).map(|_| Empty::new()))
    }

    fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> ttrpc::Result<Empty> {
        // The guest's memory is fixed at boot; CPU shares apply to the kernel's host cgroup.
        ttrpc_result(self.with_container(&req.id, |_| Ok(Empty::new())))
    }

    fn wait(&self, _: &TtrpcContext, req: api::WaitRequest) -> ttrpc::Result<api::WaitResponse> {
        ttrpc_result(self.do_wait(req))
    }

    fn stats(&self, _: &TtrpcContext, req: api::StatsRequest) -> ttrpc::Result<api::StatsResponse> {
        ttrpc_result(self.do_stats(&req.id))
    }

    fn connect(
        &self,
        _: &TtrpcContext,
        _: api::ConnectRequest,
    ) -> ttrpc::Result<api::ConnectResponse> {
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: self.vm_pid(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _: &TtrpcContext, req: api::ShutdownRequest) -> ttrpc::Result<Empty> {
        if req.now || self.lock().containers.is_empty() {
            self.stop_guest();
            self.release_guest();
            self.exit.signal();
        }
        Ok(Empty::new())
    }
}
