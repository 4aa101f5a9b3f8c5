//! The task service (`containerd.task.v2.Task`, also served as v3).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use containerd_shim::util::{convert_to_any, timestamp};
use containerd_shim::ExitSignal;
use containerd_shim_protos::api::{self, Status};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim::oci::{Options, ProcessDetails};
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::{self, TtrpcContext};
use containerd_shim_protos::Task;

use crate::error::{Error, Result};
use crate::events::Events;
use crate::reaper::Reaper;
use crate::runc::{Runtime, RuntimeIo};
use crate::stdio::{self, ConsoleSocket, StdinCloser, StdioPaths};
use crate::{mount, spec};

struct Process {
    pid: i32,
    paths: StdioPaths,
    /// OCI process JSON for an exec (written to a file at Start).
    exec_spec: Option<Vec<u8>>,
    started: bool,
    exit: Option<(u32, Timestamp)>,
    exit_published: bool,
    stdin: Option<StdinCloser>,
    console: Option<File>,
}

impl Process {
    fn new(paths: StdioPaths) -> Process {
        Process {
            pid: 0,
            paths,
            exec_spec: None,
            started: false,
            exit: None,
            exit_published: false,
            stdin: None,
            console: None,
        }
    }
}

struct Container {
    bundle: PathBuf,
    runtime: Runtime,
    rootfs_mounted: bool,
    init: Process,
    execs: HashMap<String, Process>,
    paused: bool,
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
}

#[derive(Default)]
struct State {
    containers: HashMap<String, Container>,
}

pub struct Service {
    namespace: String,
    reaper: Arc<Reaper>,
    events: Arc<Events>,
    exit: Arc<ExitSignal>,
    state: Mutex<State>,
    cv: Condvar,
}

/// A request's outcome as ttrpc answers it (failures logged once, here).
pub fn ttrpc_result<T>(r: Result<T>) -> ttrpc::Result<T> {
    r.map_err(|e| {
        log::warn!("request failed: {e}");
        e.into()
    })
}

pub fn now() -> Timestamp {
    timestamp().unwrap_or_default()
}

impl Service {
    pub fn new(
        namespace: String,
        reaper: Arc<Reaper>,
        events: Arc<Events>,
        exit: Arc<ExitSignal>,
    ) -> Service {
        Service {
            namespace,
            reaper,
            events,
            exit,
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        }
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

    /// Reaper callback: records the exit of a process we own. Returns true if owned.
    pub fn on_exit(&self, pid: i32, code: u32) -> bool {
        let mut st = self.lock();
        for (id, c) in st.containers.iter_mut() {
            let procs = std::iter::once((String::new(), &mut c.init))
                .chain(c.execs.iter_mut().map(|(k, v)| (k.clone(), v)));
            for (exec_id, p) in procs {
                if p.pid == pid && p.exit.is_none() {
                    p.exit = Some((code, now()));
                    self.publish_exit_if_due(id, &exec_id, p);
                    drop(st);
                    self.cv.notify_all();
                    return true;
                }
            }
        }
        false
    }

    /// `/tasks/exit` exactly once, and only after the process's start event.
    fn publish_exit_if_due(&self, id: &str, exec_id: &str, p: &mut Process) {
        let Some((code, at)) = &p.exit else { return };
        if !p.started || p.exit_published {
            return;
        }
        p.exit_published = true;
        let ev = TaskExit {
            container_id: id.to_string(),
            id: if exec_id.is_empty() { id } else { exec_id }.to_string(),
            pid: p.pid as u32,
            exit_status: *code,
            exited_at: MessageField::some(at.clone()),
            ..Default::default()
        };
        self.events
            .publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(ev));
    }

    /// An exit reaped before the pid was registered is applied now.
    fn apply_early_exit(&self, pid: i32) {
        if let Some(code) = self.reaper.take(pid) {
            self.on_exit(pid, code);
        }
    }

    fn runtime_for(&self, bundle: &Path, opts: &Options) -> Runtime {
        Runtime::new(
            &opts.binary_name,
            &opts.root,
            &self.namespace,
            opts.systemd_cgroup,
            bundle,
            Some(self.reaper.clone()),
        )
    }

    /// Runs `runtime <args>` with the process's stdio (pipes/FIFOs or a pty).
    fn run_with_stdio(
        &self,
        runtime: &Runtime,
        args: &mut Vec<String>,
        id: &str,
        paths: &StdioPaths,
    ) -> Result<(Option<StdinCloser>, Option<File>)> {
        if paths.terminal {
            let sock = ConsoleSocket::new()?;
            let insert_at = 1;
            args.insert(insert_at, sock.path.display().to_string());
            args.insert(insert_at, "--console-socket".into());
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let (pid, offset) = runtime.spawn(&argv)?;
            let mut code = None;
            let master = sock.receive(|| {
                code = runtime.take_exit(pid);
                code.is_some()
            });
            let code = code.unwrap_or_else(|| runtime.wait_pid(pid));
            runtime.check(&argv, code, offset, "")?;
            let master = master?;
            let pio = stdio::attach_console(&master, paths)?;
            return Ok((pio.stdin, Some(master)));
        }
        let (rio, pio) = stdio::open(paths, id, &self.namespace)?;
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        runtime.run_io(&argv, rio)?;
        Ok((pio.stdin, None))
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
                "checkpoint restore is not supported".into(),
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        let opts = match req.options.as_ref() {
            Some(any) => spec::options_from_any(&any.type_url, &any.value)?,
            None => None,
        }
        .or_else(|| spec::read_options(&bundle))
        .unwrap_or_default();
        let runtime = self.runtime_for(&bundle, &opts);

        let rootfs = bundle.join("rootfs");
        let mounted = !req.rootfs.is_empty();
        if mounted {
            mount::mount_all(&req.rootfs, &rootfs)?;
        }
        let cleanup = |runtime: &Runtime| {
            let _ = runtime.run_output(&["delete", "--force", &req.id], None);
            if mounted {
                mount::unmount(&rootfs);
            }
        };
        let result = (|| {
            spec::clamp_bundle_oom_score(&bundle)?;
            let pid_file = bundle.join("init.pid");
            let mut args: Vec<String> = vec![
                "create".into(),
                "--bundle".into(),
                bundle.display().to_string(),
                "--pid-file".into(),
                pid_file.display().to_string(),
            ];
            if opts.no_pivot_root {
                args.push("--no-pivot".into());
            }
            if opts.no_new_keyring {
                args.push("--no-new-keyring".into());
            }
            args.push(req.id.clone());
            let paths = StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            };
            let (stdin, console) = self.run_with_stdio(&runtime, &mut args, &req.id, &paths)?;
            let pid = read_pid(&pid_file)?;
            Ok((pid, paths, stdin, console))
        })();
        let (pid, paths, stdin, console) = match result {
            Ok(v) => v,
            Err(e) => {
                cleanup(&runtime);
                return Err(e);
            }
        };

        let mut init = Process::new(paths.clone());
        init.pid = pid;
        init.stdin = stdin;
        init.console = console;
        self.lock().containers.insert(
            req.id.clone(),
            Container {
                bundle: bundle.clone(),
                runtime,
                rootfs_mounted: mounted,
                init,
                execs: HashMap::new(),
                paused: false,
            },
        );
        self.apply_early_exit(pid);
        self.watch_oom(&req.id, pid);

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
            pid: pid as u32,
            ..Default::default()
        };
        self.events
            .publish(topics::TASK_CREATE_EVENT_TOPIC, Box::new(ev));
        Ok(pid as u32)
    }

    fn watch_oom(&self, id: &str, pid: i32) {
        let events = self.events.clone();
        let cid = id.to_string();
        let r = crate::oom::watch(pid, move || {
            let ev = TaskOOM {
                container_id: cid.clone(),
                ..Default::default()
            };
            events.publish(topics::TASK_OOM_EVENT_TOPIC, Box::new(ev));
        });
        if let Err(e) = r {
            log::warn!("oom watch for {id}: {e}");
        }
    }

    fn do_start(&self, req: api::StartRequest) -> Result<u32> {
        if req.exec_id.is_empty() {
            let runtime = self.with_container(&req.id, |c| {
                if c.init.started {
                    return Err(Error::FailedPrecondition(format!(
                        "container {} already started",
                        req.id
                    )));
                }
                Ok(c.runtime.clone())
            })?;
            runtime.run_io(&["start", &req.id], RuntimeIo::default())?;
            let mut st = self.lock();
            let c = st
                .containers
                .get_mut(&req.id)
                .ok_or_else(|| Error::NotFound(format!("container {} not found", req.id)))?;
            c.init.started = true;
            let pid = c.init.pid;
            self.events.publish(
                topics::TASK_START_EVENT_TOPIC,
                Box::new(TaskStart {
                    container_id: req.id.clone(),
                    pid: pid as u32,
                    ..Default::default()
                }),
            );
            self.publish_exit_if_due(&req.id, "", &mut c.init);
            return Ok(pid as u32);
        }

        let (runtime, bundle, paths, spec) = self.with_container(&req.id, |c| {
            let (runtime, bundle) = (c.runtime.clone(), c.bundle.clone());
            let p = c.process(&req.exec_id)?;
            if p.started {
                return Err(Error::FailedPrecondition(format!(
                    "exec {} already started",
                    req.exec_id
                )));
            }
            let spec = p.exec_spec.clone().unwrap_or_default();
            Ok((runtime, bundle, p.paths.clone(), spec))
        })?;
        let spec_file = bundle.join(format!("{}.process.json", req.exec_id));
        let pid_file = bundle.join(format!("{}.pid", req.exec_id));
        std::fs::write(&spec_file, &spec).map_err(Error::io("write exec process spec"))?;
        let mut args: Vec<String> = vec![
            "exec".into(),
            "--detach".into(),
            "--pid-file".into(),
            pid_file.display().to_string(),
            "--process".into(),
            spec_file.display().to_string(),
            req.id.clone(),
        ];
        let res = self.run_with_stdio(&runtime, &mut args, &req.id, &paths);
        let _ = std::fs::remove_file(&spec_file);
        let (stdin, console) = res?;
        let pid = read_pid(&pid_file)?;
        let _ = std::fs::remove_file(&pid_file);
        {
            let mut st = self.lock();
            let c = st
                .containers
                .get_mut(&req.id)
                .ok_or_else(|| Error::NotFound(format!("container {} not found", req.id)))?;
            let p = c.process(&req.exec_id)?;
            p.pid = pid;
            p.stdin = stdin;
            p.console = console;
            p.started = true;
            self.events.publish(
                topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                Box::new(TaskExecStarted {
                    container_id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    pid: pid as u32,
                    ..Default::default()
                }),
            );
        }
        self.apply_early_exit(pid);
        Ok(pid as u32)
    }

    fn do_delete(&self, req: api::DeleteRequest) -> Result<api::DeleteResponse> {
        if !req.exec_id.is_empty() {
            let mut st = self.lock();
            let c = st
                .containers
                .get_mut(&req.id)
                .ok_or_else(|| Error::NotFound(format!("container {} not found", req.id)))?;
            let p = c.process(&req.exec_id)?;
            if p.started && p.exit.is_none() {
                return Err(Error::FailedPrecondition(format!(
                    "exec {} is still running",
                    req.exec_id
                )));
            }
            let (code, at) = p.exit.clone().unwrap_or((0, now()));
            let pid = p.pid;
            c.execs.remove(&req.exec_id);
            return Ok(api::DeleteResponse {
                pid: pid as u32,
                exit_status: code,
                exited_at: MessageField::some(at),
                ..Default::default()
            });
        }

        let (runtime, running, started, bundle, mounted) = self.with_container(&req.id, |c| {
            Ok((
                c.runtime.clone(),
                c.init.exit.is_none(),
                c.init.started,
                c.bundle.clone(),
                c.rootfs_mounted,
            ))
        })?;
        if running && started {
            return Err(Error::FailedPrecondition(format!(
                "container {} is still running",
                req.id
            )));
        }
        // A created-but-never-started init is killed by `delete --force`.
        let args: &[&str] = if running {
            &["delete", "--force", &req.id]
        } else {
            &["delete", &req.id]
        };
        if let Err(e) = runtime.run_output(args, None) {
            // Already gone from the runtime is fine; anything else is reported.
            if !e.to_string().contains("does not exist") && !e.to_string().contains("not found") {
                return Err(e);
            }
        }
        if mounted {
            mount::unmount(&bundle.join("rootfs"));
        }
        let mut st = self.lock();
        if running {
            // Give the reaper a moment to record the forced exit.
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while st
                .containers
                .get(&req.id)
                .is_some_and(|c| c.init.exit.is_none())
                && std::time::Instant::now() < deadline
            {
                st = self
                    .cv
                    .wait_timeout(st, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        let c = st
            .containers
            .remove(&req.id)
            .ok_or_else(|| Error::NotFound(format!("container {} not found", req.id)))?;
        let (code, at) = c.init.exit.clone().unwrap_or((137, now()));
        let pid = c.init.pid as u32;
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

    fn do_state(&self, req: api::StateRequest) -> Result<api::StateResponse> {
        self.with_container(&req.id, |c| {
            let paused = c.paused;
            let bundle = c.bundle.display().to_string();
            let is_init = req.exec_id.is_empty();
            let p = c.process(&req.exec_id)?;
            let status = if p.exit.is_some() {
                Status::STOPPED
            } else if is_init && paused {
                Status::PAUSED
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
                pid: p.pid as u32,
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

    fn do_kill(&self, req: api::KillRequest) -> Result<()> {
        let (runtime, pid, exited) = self.with_container(&req.id, |c| {
            let rt = c.runtime.clone();
            let p = c.process(&req.exec_id)?;
            Ok((rt, p.pid, p.exit.is_some()))
        })?;
        if exited && !req.all {
            return Err(Error::NotFound(format!(
                "process {} already finished",
                if req.exec_id.is_empty() {
                    &req.id
                } else {
                    &req.exec_id
                }
            )));
        }
        if req.exec_id.is_empty() {
            let sig = req.signal.to_string();
            let mut args = vec!["kill"];
            if req.all {
                args.push("--all");
            }
            args.push(&req.id);
            args.push(&sig);
            runtime.run_output(&args, None)?;
            return Ok(());
        }
        if pid <= 0 {
            return Err(Error::FailedPrecondition(format!(
                "exec {} not started",
                req.exec_id
            )));
        }
        let sig = nix::sys::signal::Signal::try_from(req.signal as i32)
            .map_err(|e| Error::InvalidArgument(format!("signal {}: {e}", req.signal)))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)?;
        Ok(())
    }

    fn do_exec(&self, req: api::ExecProcessRequest) -> Result<()> {
        validate_id(&req.exec_id)?;
        let any = req
            .spec
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("exec without a process spec".into()))?;
        let mut process: serde_json::Value = serde_json::from_slice(&any.value)
            .map_err(|e| Error::InvalidArgument(format!("exec process spec: {e}")))?;
        if let Some(floor) = spec::oom_score_floor() {
            spec::clamp_oom_score(&mut process, floor);
        }
        let data = serde_json::to_vec(&process).map_err(|e| Error::Other(e.to_string()))?;
        self.with_container(&req.id, |c| {
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
            p.exec_spec = Some(data);
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

    fn pause_resume(&self, id: &str, pause: bool) -> Result<()> {
        let runtime = self.with_container(id, |c| Ok(c.runtime.clone()))?;
        runtime.run_output(&[if pause { "pause" } else { "resume" }, id], None)?;
        self.with_container(id, |c| {
            c.paused = pause;
            Ok(())
        })?;
        if pause {
            self.events.publish(
                topics::TASK_PAUSED_EVENT_TOPIC,
                Box::new(TaskPaused {
                    container_id: id.to_string(),
                    ..Default::default()
                }),
            );
        } else {
            self.events.publish(
                topics::TASK_RESUMED_EVENT_TOPIC,
                Box::new(TaskResumed {
                    container_id: id.to_string(),
                    ..Default::default()
                }),
            );
        }
        Ok(())
    }

    fn do_pids(&self, id: &str) -> Result<api::PidsResponse> {
        let (runtime, execs) = self.with_container(id, |c| {
            let execs: HashMap<u32, String> = c
                .execs
                .iter()
                .filter(|(_, p)| p.pid > 0)
                .map(|(k, p)| (p.pid as u32, k.clone()))
                .collect();
            Ok((c.runtime.clone(), execs))
        })?;
        let pids = runtime.ps(id)?;
        let processes = pids
            .into_iter()
            .map(|pid| {
                let mut info = api::ProcessInfo {
                    pid,
                    ..Default::default()
                };
                if let Some(exec_id) = execs.get(&pid) {
                    let d = ProcessDetails {
                        exec_id: exec_id.clone(),
                        ..Default::default()
                    };
                    if let Ok(any) = convert_to_any(Box::new(d)) {
                        info.info = MessageField::some(any);
                    }
                }
                info
            })
            .collect();
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    fn do_stats(&self, id: &str) -> Result<api::StatsResponse> {
        let pid = self.with_container(id, |c| Ok(c.init.pid))?;
        if pid <= 0 {
            return Err(Error::FailedPrecondition(format!(
                "container {id} has no pid"
            )));
        }
        let cg = containerd_shim::cgroup::get_cgroup(pid as u32)?;
        let any = if cg.v2() {
            convert_to_any(Box::new(containerd_shim::cgroup::collect_metrics_v2(&cg)?))?
        } else {
            {
                let mut m = containerd_shim::cgroup::collect_metrics(&cg)?;
                crate::cpuacct::fill(&mut m, pid as u32);
                convert_to_any(Box::new(m))?
            }
        };
        Ok(api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    fn do_update(&self, req: api::UpdateTaskRequest) -> Result<()> {
        let runtime = self.with_container(&req.id, |c| Ok(c.runtime.clone()))?;
        let any = req
            .resources
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("update without resources".into()))?;
        // containerd sends specs.LinuxResources as JSON, which is what runc reads.
        serde_json::from_slice::<serde_json::Value>(&any.value)
            .map_err(|e| Error::InvalidArgument(format!("resources: {e}")))?;
        runtime.run_output(&["update", "--resources", "-", &req.id], Some(&any.value))?;
        Ok(())
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
}

/// Container and exec ids as containerd allows them (they name files and directories).
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 256
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("invalid id {id:?}")))
    }
}

fn read_pid(path: &Path) -> Result<i32> {
    let s = std::fs::read_to_string(path).map_err(Error::io(format!("read {}", path.display())))?;
    s.trim()
        .parse()
        .map_err(|e| Error::Other(format!("bad pid in {}: {e}", path.display())))
}

impl Task for Service {
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

    fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> ttrpc::Result<Empty> {
        ttrpc_result(self.pause_resume(&req.id, true).map(|_| Empty::new()))
    }

    fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> ttrpc::Result<Empty> {
        ttrpc_result(self.pause_resume(&req.id, false).map(|_| Empty::new()))
    }

    fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> ttrpc::Result<Empty> {
        ttrpc_result(self.do_kill(req).map(|_| Empty::new()))
    }

    fn exec(&self, _: &TtrpcContext, req: api::ExecProcessRequest) -> ttrpc::Result<Empty> {
        ttrpc_result(self.do_exec(req).map(|_| Empty::new()))
    }

    fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> ttrpc::Result<Empty> {
        ttrpc_result(
            self.with_container(&req.id, |c| {
                let p = c.process(&req.exec_id)?;
                match &p.console {
                    Some(m) => stdio::resize(m, req.width, req.height),
                    None => Err(Error::FailedPrecondition("process has no terminal".into())),
                }
            })
            .map(|_| Empty::new()),
        )
    }

    fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> ttrpc::Result<Empty> {
        ttrpc_result(
            self.with_container(&req.id, |c| {
                let p = c.process(&req.exec_id)?;
                if let Some(s) = p.stdin.take() {
                    s.close();
                }
                Ok(())
            })
            .map(|_| Empty::new()),
        )
    }

    fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> ttrpc::Result<Empty> {
        ttrpc_result(self.do_update(req).map(|_| Empty::new()))
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
        req: api::ConnectRequest,
    ) -> ttrpc::Result<api::ConnectResponse> {
        let task_pid = self
            .with_container(&req.id, |c| Ok(c.init.pid as u32))
            .unwrap_or(0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            ..Default::default()
        })
    }

    fn shutdown(&self, _: &TtrpcContext, req: api::ShutdownRequest) -> ttrpc::Result<Empty> {
        // One shim may serve a whole pod: only exit when no task is left.
        if req.now || self.lock().containers.is_empty() {
            self.exit.signal();
        }
        Ok(Empty::new())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(validate_id("t1").is_ok());
        assert!(validate_id("a.b-c_d").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id("../x").is_err());
        assert!(validate_id("a/b").is_err());
    }
}
