//! The agent's shared state and its request loop: one worker answers requests in order while
//! the frame reader keeps routing stdin, output threads and the reaper run beside it.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use berth_sandbox_proto::{Event, Request, Response, PROTOCOL_VERSION};

use crate::channel::Channel;
use crate::error::AgentError;
use crate::state::{AfterExit, Key, State};
use crate::stdio::{spawn_thread, StdinMsg};
use crate::{container, control, net, sys};

/// How long `Exited` waits for output streams still open after the process's exit.
pub const OUTPUT_GRACE: Duration = Duration::from_secs(1);

pub struct Agent {
    pub chan: Channel,
    state: Mutex<State>,
    /// Notified on every exit (RemoveContainer waits for its processes).
    pub exits: Condvar,
    routes: Mutex<HashMap<u32, Sender<StdinMsg>>>,
}

/// A request for the worker, with the stdin queue the reader opened for it.
pub struct Work {
    pub id: u32,
    pub req: Request,
    pub stdin: Option<Receiver<StdinMsg>>,
}

/// What the worker does once the response is on the line.
pub enum Post {
    Nothing,
    /// The process's `Exited` may now be sent (never before its `Pid` answer).
    Announce(Key, i32),
    PowerOff,
}

impl Agent {
    pub fn new(chan: Channel) -> Arc<Agent> {
        Arc::new(Agent {
            chan,
            state: Mutex::new(State::default()),
            exits: Condvar::new(),
            routes: Mutex::new(HashMap::new()),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn emit(&self, ev: Option<Event>) {
        if let Some(ev) = ev {
            self.chan.event(&ev);
        }
    }

    fn routes(&self) -> MutexGuard<'_, HashMap<u32, Sender<StdinMsg>>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the stdin queue of a process about to be created: data the host sends right
    /// after the request waits there until the process exists.
    pub fn open_stdin(&self, stream: u32) -> Receiver<StdinMsg> {
        let (tx, rx) = mpsc::channel();
        self.routes().insert(stream, tx);
        rx
    }

    pub fn drop_stdin(&self, stream: u32) {
        if stream != 0 {
            self.routes().remove(&stream);
        }
    }

    pub fn stdin_data(&self, stream: u32, data: Vec<u8>) {
        let routes = self.routes();
        match routes.get(&stream) {
            Some(tx) => {
                let _ = tx.send(StdinMsg::Data(data));
            }
            None => {
                drop(routes);
                self.chan
                    .log(format!("data for unknown stdin stream {stream} dropped"));
            }
        }
    }

    pub fn stdin_close(&self, stream: u32) {
        if let Some(tx) = self.routes().remove(&stream) {
            let _ = tx.send(StdinMsg::Close);
        }
    }

    /// The reaper's report.
    pub fn exited(self: &Arc<Self>, pid: i32, status: u32) {
        let after = self.lock().on_exit(pid, status);
        self.exits.notify_all();
        match after {
            AfterExit::Nothing => {}
            AfterExit::Send(ev) => self.chan.event(&ev),
            AfterExit::Grace(key, pid) => {
                let agent = Arc::clone(self);
                let k = key.clone();
                let r = spawn_thread("grace", move || {
                    std::thread::sleep(OUTPUT_GRACE);
                    let ev = agent.lock().on_grace_over(&k, pid);
                    agent.emit(ev);
                });
                if r.is_err() {
                    let ev = self.lock().on_grace_over(&key, pid);
                    self.emit(ev);
                }
            }
        }
    }

    pub fn output_closed(&self, key: &Key, pid: i32) {
        let ev = self.lock().on_output_closed(key, pid);
        self.emit(ev);
    }

    /// Answers requests one at a time, in order.
    pub fn serve(self: &Arc<Self>, work: Receiver<Work>) {
        for w in work {
            let (resp, post) = match self.handle(w.req, w.stdin) {
                Ok(r) => r,
                Err(e) => (e.to_response(), Post::Nothing),
            };
            self.chan.respond(w.id, &resp);
            match post {
                Post::Nothing => {}
                Post::Announce(key, pid) => {
                    let ev = self.lock().announce(&key, pid);
                    self.emit(ev);
                }
                Post::PowerOff => sys::power_off(),
            }
        }
    }

    fn handle(
        self: &Arc<Self>,
        req: Request,
        stdin: Option<Receiver<StdinMsg>>,
    ) -> Result<(Response, Post), AgentError> {
        let plain = |r: Result<Response, AgentError>| r.map(|r| (r, Post::Nothing));
        match req {
            Request::Info => plain(Ok(Response::Info {
                kernel_release: sys::kernel_release(),
                agent_version: env!("CARGO_PKG_VERSION").to_string(),
                protocol: PROTOCOL_VERSION,
            })),
            Request::ConfigureNetwork {
                interfaces,
                routes,
                hostname,
            } => plain(
                net::configure(&interfaces, &routes, &hostname, &|m| self.chan.log(m))
                    .map(|()| Response::Ok),
            ),
            Request::CreateContainer {
                id,
                rootfs,
                readonly_rootfs,
                mounts,
                process,
                hostname,
                stdio,
            } => container::create(
                self,
                container::CreateArgs {
                    id: &id,
                    rootfs: &rootfs,
                    readonly_rootfs,
                    mounts: &mounts,
                    process: &process,
                    hostname: &hostname,
                    stdio: &stdio,
                },
                stdin,
            ),
            Request::StartContainer { id } => plain(container::start(self, &id)),
            Request::Exec {
                id,
                exec_id,
                process,
                stdio,
            } => container::exec(self, &id, &exec_id, &process, &stdio, stdin),
            Request::Signal {
                id,
                exec_id,
                signal,
                all,
            } => plain(control::signal(self, &id, &exec_id, signal, all)),
            Request::ResizePty {
                id,
                exec_id,
                width,
                height,
            } => plain(control::resize(self, &id, &exec_id, width, height)),
            Request::Pids { id } => plain(control::pids(self, &id)),
            Request::DeleteProcess { id, exec_id } => {
                plain(control::delete_process(self, &id, &exec_id))
            }
            Request::RemoveContainer { id } => plain(control::remove(self, &id)),
            Request::Shutdown => Ok((Response::Ok, Post::PowerOff)),
        }
    }
}

/// The stdin stream a request will connect, if any (the reader opens its queue).
pub fn stdin_stream(req: &Request) -> Option<u32> {
    match req {
        Request::CreateContainer { stdio, .. } | Request::Exec { stdio, .. }
            if stdio.stdin != 0 =>
        {
            Some(stdio.stdin)
        }
        _ => None,
    }
}
