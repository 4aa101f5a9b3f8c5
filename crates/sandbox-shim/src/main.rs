//! `containerd-shim-berth-sandbox-v2`: runs a pod's containers inside their own guest kernel
//! (User-Mode Linux), one guest per pod. containerd (or berthd) runs it as `start`, `delete`,
//! or with `-socket` as the long-running ttrpc task server.

mod agent;
mod backend;
mod cmd;
mod config;
mod error;
mod guest;
mod net;
mod rootfs;
mod service;
mod sys;
mod vm;

use std::io::Write;

use berth_shim::server::{self, TaskService};

use crate::error::{Error, Result};
use crate::service::SandboxService;

pub const RUNTIME_ID: &str = "io.containerd.berth-sandbox.v2";
/// Set (to a network namespace path) on a shim server started for the warm pool: it boots its
/// guest at once, in that namespace.
pub const PREWARM_ENV: &str = "BERTH_SANDBOX_PREWARM";
/// On a pod's specs: the address of the warm shim whose guest the pod took.
pub const SHIM_ADDRESS_ANNOTATION: &str = "io.berth.sandbox.shim-address";

/// The `start` action: a pod that took a warm guest is served by that guest's shim (named in
/// its specs); any other group gets its own shim as usual.
fn start(flags: &containerd_shim::Flags) -> Result<()> {
    let bundle = std::env::current_dir().map_err(Error::io("cwd"))?;
    let warm = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
        .and_then(|s| {
            s.pointer(&format!(
                "/annotations/{}",
                SHIM_ADDRESS_ANNOTATION.replace('/', "~1")
            ))
            .and_then(|v| v.as_str())
            .map(str::to_string)
        });
    let Some(address) = warm else {
        return berth_shim::start::run(flags);
    };
    // Runtime options come on stdin; this group's shim already has what it needs.
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(
        &mut std::io::Read::take(std::io::stdin(), 1 << 20),
        &mut sink,
    );
    let path = berth_shim::server::socket_path(&address);
    if std::os::unix::net::UnixStream::connect(path).is_err() {
        return Err(Error::FailedPrecondition(format!(
            "the warm sandbox shim at {address} is gone"
        )));
    }
    std::fs::write(bundle.join("address"), &address).map_err(Error::io("write address"))?;
    let mut out = std::io::stdout().lock();
    out.write_all(address.as_bytes())
        .and_then(|_| out.flush())
        .map_err(Error::io("write address"))
}

impl TaskService for SandboxService {
    fn on_exit(&self, pid: i32, code: u32) -> bool {
        SandboxService::on_exit(self, pid, code)
    }
}

/// The `delete` action (the shim died): whatever guest the group left is killed with its
/// directory; the task is reported killed.
fn delete(flags: &containerd_shim::Flags) -> Result<()> {
    let cfg = config::Config::load()?;
    let bundle = std::env::current_dir().map_err(Error::io("cwd"))?;
    let group = berth_shim::spec::sandbox_group(&bundle).unwrap_or_else(|| flags.id.clone());
    let dir = cfg.state_dir.join(format!("{}-{group}", flags.namespace));
    if group == flags.id {
        let backend = backend::named(&cfg.backend)?;
        kill_recorded_kernel(backend.as_ref(), &dir);
        guest::cleanup_dir(backend.as_ref(), &dir);
    }
    berth_shim::cleanup::write_killed_response()
}

/// Kills the kernel whose pid the guest recorded, if that pid is still a guest kernel.
/// Also a kernel whose pid was never recorded (its shim died between starting it and writing
/// the file): any guest kernel whose root is this sandbox directory (the same inode: the link
/// itself reads "/" from another mount namespace).
fn kill_recorded_kernel(backend: &dyn backend::Backend, dir: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let recorded = std::fs::read_to_string(vm::sibling(dir, "pid"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let id = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let sandbox = id(dir);
    let kernels = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"linux.uml\0"))
        });
    for pid in kernels {
        let root = id(std::path::Path::new(&format!("/proc/{pid}/root")));
        if Some(pid) == recorded || (sandbox.is_some() && root == sandbox) {
            backend.kill(pid);
        }
    }
}

fn main() {
    berth_shim::cli::main(RUNTIME_ID, "containerd-shim-berth-sandbox-v2", |flags| {
        match flags.action.as_str() {
            "start" => start(flags),
            "delete" => delete(flags),
            _ => config::Config::load().and_then(|cfg| {
                let prewarm = std::env::var_os(PREWARM_ENV).map(std::path::PathBuf::from);
                if prewarm.is_some() {
                    // The pool that started us stops us by this pid if no pod takes us.
                    let _ = std::fs::write("shim.pid", std::process::id().to_string());
                }
                let id = flags.id.clone();
                server::serve_task(flags, |ctx| {
                    cmd::use_reaper(ctx.reaper.clone());
                    let s =
                        SandboxService::new(ctx.namespace, cfg, ctx.reaper, ctx.events, ctx.exit);
                    if let Some(netns) = prewarm {
                        let warm = s.clone();
                        std::thread::spawn(move || {
                            if let Err(e) = warm.prewarm(&id, &netns) {
                                log::error!("warm sandbox guest: {e}");
                            }
                        });
                    }
                    s
                })
            }),
        }
    })
}
