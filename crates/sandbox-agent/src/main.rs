//! `berth-sandbox-agent`: init (PID 1) of a sandbox's guest kernel. It mounts the guest's
//! filesystems, talks to the sandbox shim over a console line (`berth-sandbox-proto`) and
//! runs the pod's containers in guest namespaces.

mod agent;
mod boot;
mod channel;
mod child;
mod container;
mod control;
mod error;
mod mountopts;
mod net;
mod reaper;
mod rootfs;
mod spawn;
mod spec;
mod state;
mod stdio;
mod sys;

use std::sync::mpsc;
use std::sync::Arc;

use berth_sandbox_proto::{read_frame, ErrorCode, Event, Kind, Request, Response};

use agent::{Agent, Work};

/// The guest console the host maps to its end of the channel.
const LINE: &str = "/dev/tty1";

fn main() {
    if std::process::id() != 1 {
        eprintln!(
            "berth-sandbox-agent runs as init (PID 1) of a sandbox guest kernel, not on a host"
        );
        std::process::exit(2);
    }
    if reaper::block_sigchld().is_err() {
        sys::power_off();
    }
    let problems = boot::mount_all();
    let Ok((reader, writer)) = channel::open_line(LINE) else {
        sys::power_off();
    };
    let chan = channel::Channel::new(Box::new(writer));
    chan.event(&Event::Ready {
        kernel_release: sys::kernel_release(),
    });
    if !problems.is_empty() {
        for p in problems {
            chan.log(format!("guest set-up: {p}"));
        }
        chan.log("guest set-up failed: powering off");
        sys::power_off();
    }
    let agent = Agent::new(chan);
    // A bug must not leave the host waiting on a guest that limps: say what and power off.
    let a = Arc::clone(&agent);
    std::panic::set_hook(Box::new(move |info| {
        a.chan.try_log(format!("agent bug, powering off: {info}"));
        sys::power_off();
    }));
    let (work_tx, work_rx) = mpsc::channel::<Work>();
    let a = Arc::clone(&agent);
    let reaper = stdio::spawn_thread("reaper", move || reaper::run(a));
    let a = Arc::clone(&agent);
    let worker = stdio::spawn_thread("worker", move || a.serve(work_rx));
    if let Err(e) = reaper.and(worker) {
        agent
            .chan
            .log(format!("cannot start threads: {e}; powering off"));
        sys::power_off();
    }
    read_loop(&agent, reader, work_tx)
}

/// Reads frames until the line breaks (the host is gone: power off).
fn read_loop(agent: &Arc<Agent>, line: std::fs::File, work: mpsc::Sender<Work>) -> ! {
    let a = Arc::clone(agent);
    let warn = move |n: usize| {
        a.chan.log(format!(
            "the host sent {n} bytes or more at once: the guest's console driver throttled the \
             line and, as UML's driver does, will not read what the host writes after this burst \
             (keep less than {} bytes unread in flight)",
            channel::THROTTLE_MARK
        ))
    };
    let a = Arc::clone(agent);
    let consumed = move |bytes: u64| a.chan.event(&Event::Consumed { bytes });
    let mut r = channel::LineReader::new(line, Box::new(warn), Box::new(consumed));
    loop {
        let frame = match read_frame(&mut r) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                agent
                    .chan
                    .log(format!("malformed frame: {e}; powering off"));
                sys::power_off();
            }
            Err(_) => sys::power_off(),
        };
        match frame.kind {
            Kind::Request => match frame.parse::<Request>() {
                Ok(req) => {
                    let stdin = agent::stdin_stream(&req).map(|s| agent.open_stdin(s));
                    let w = Work {
                        id: frame.id,
                        req,
                        stdin,
                    };
                    if work.send(w).is_err() {
                        agent.chan.log("request worker is gone; powering off");
                        sys::power_off();
                    }
                }
                Err(e) => agent.chan.respond(
                    frame.id,
                    &Response::Error {
                        code: ErrorCode::InvalidArgument,
                        message: e.to_string(),
                    },
                ),
            },
            Kind::Data => agent.stdin_data(frame.id, frame.payload),
            Kind::Close => agent.stdin_close(frame.id),
            Kind::Response | Kind::Event => agent.chan.log(format!(
                "unexpected {:?} frame from the host ignored",
                frame.kind
            )),
        }
    }
}
