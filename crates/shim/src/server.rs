//! The long-running shim: subreaper, ttrpc task server, event sender.

use std::collections::HashMap;
use std::os::fd::IntoRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use containerd_shim::{ExitSignal, Flags};
use containerd_shim_protos::create_task;
use containerd_shim_protos::ttrpc::{MethodHandler, Server};
use containerd_shim_protos::Task;
use signal_hook::consts::{SIGCHLD, SIGINT, SIGPIPE, SIGTERM};
use signal_hook::iterator::Signals;

use crate::error::{Error, Result};
use crate::events::Events;
use crate::reaper::Reaper;
use crate::service::Service;

type Methods = HashMap<String, Box<dyn MethodHandler + Send + Sync>>;

/// What a shim's task service needs from the server around it.
pub struct ShimContext {
    pub namespace: String,
    pub reaper: Arc<Reaper>,
    pub events: Arc<Events>,
    pub exit: Arc<ExitSignal>,
}

/// A task service the server can run: it hears about every child the shim reaps.
pub trait TaskService: Task + Send + Sync + 'static {
    /// A child of the shim exited; true if it was one of the service's processes.
    fn on_exit(&self, pid: i32, code: u32) -> bool;
}

impl TaskService for Service {
    fn on_exit(&self, pid: i32, code: u32) -> bool {
        Service::on_exit(self, pid, code)
    }
}

/// The generated service is `containerd.task.v3.Task` (containerd 2.x); containerd
/// 1.6 calls `containerd.task.v2.Task`, whose messages are identical. Serve both.
fn task_methods<S: TaskService>(service: Arc<S>) -> Methods {
    let mut methods = create_task(service.clone());
    for (name, handler) in create_task(service) {
        methods.insert(name.replace(".task.v3.", ".task.v2."), handler);
    }
    methods
}

pub fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

fn listen(address: &str) -> Result<Option<UnixListener>> {
    let path = socket_path(address);
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("mkdir {}", dir.display())))?;
    }
    match UnixListener::bind(path) {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            // A live shim already serves this group: nothing to do.
            if UnixStream::connect(path).is_ok() {
                return Ok(None);
            }
            std::fs::remove_file(path).map_err(Error::io("remove stale socket"))?;
            UnixListener::bind(path)
                .map(Some)
                .map_err(Error::io(format!("bind {path}")))
        }
        Err(e) => Err(Error::io(format!("bind {path}"))(e)),
    }
}

/// Tells `start` we are listening: it reads our stdout until EOF.
fn signal_started() {
    // SAFETY: dup2 over our own stdout; closes the pipe end `start` reads.
    unsafe {
        libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO);
    }
}

pub fn serve(flags: &Flags) -> Result<()> {
    serve_task(flags, |ctx| {
        Arc::new(Service::new(
            ctx.namespace,
            ctx.reaper,
            ctx.events,
            ctx.exit,
        ))
    })
}

/// Runs a shim server: subreaper, signal thread, event sender and the ttrpc task service
/// `build` makes, until the service signals exit.
pub fn serve_task<S: TaskService>(
    flags: &Flags,
    build: impl FnOnce(ShimContext) -> Arc<S>,
) -> Result<()> {
    if flags.socket.is_empty() {
        return Err(Error::InvalidArgument("-socket is required".into()));
    }
    let signals = Signals::new([SIGCHLD, SIGTERM, SIGINT, SIGPIPE])
        .map_err(Error::io("install signal handlers"))?;
    // Container processes are re-parented to us so we can report their exits.
    nix::sys::prctl::set_child_subreaper(true)?;
    if let Err(e) = containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)
    {
        eprintln!("shim logger: {e}");
    }

    let reaper = Arc::new(Reaper::default());
    let events = Arc::new(Events::start(
        std::env::var("TTRPC_ADDRESS").ok(),
        flags.namespace.clone(),
    ));
    let exit = Arc::new(ExitSignal::default());
    let service = build(ShimContext {
        namespace: flags.namespace.clone(),
        reaper: reaper.clone(),
        events: events.clone(),
        exit: exit.clone(),
    });
    let weak = Arc::downgrade(&service);
    reaper.set_handler(Box::new(move |pid, code| {
        weak.upgrade().is_some_and(|s| s.on_exit(pid, code))
    }));

    let reaper_thread = reaper.clone();
    let mut signals_iter = signals;
    std::thread::spawn(move || {
        for sig in signals_iter.forever() {
            if sig == SIGCHLD {
                reaper_thread.reap_all();
            }
            // SIGTERM/SIGINT/SIGPIPE: containerd drives our lifetime via Shutdown.
        }
    });

    let Some(listener) = listen(&flags.socket)? else {
        signal_started();
        return Ok(());
    };
    let mut server = Server::new()
        .add_listener(listener.into_raw_fd())
        .map_err(|e| Error::Other(format!("ttrpc listener: {e}")))?
        .set_thread_count_min(1)
        .set_thread_count_default(2)
        .set_thread_count_max(64)
        .register_service(task_methods(service));
    server
        .start()
        .map_err(|e| Error::Other(format!("ttrpc start: {e}")))?;
    signal_started();
    log::info!("shim serving on {}", flags.socket);

    exit.wait();
    log::info!("shim shutting down");
    events.flush();
    let _ = std::fs::remove_file(socket_path(&flags.socket));
    // Not `server.shutdown()`: it joins handlers, and a Wait may still be blocked.
    std::process::exit(0)
}
