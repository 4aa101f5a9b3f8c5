//! `containerd-shim-berth-v2`: berth's containerd shim v2. containerd runs it
//! as `start` (spawn the server, print its address), `delete` (clean up after a
//! dead shim), or with `-socket` as the long-running ttrpc task server.

use berth_shim::{cleanup, error, server, start, RUNTIME_ID};

use std::io::Write;

use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::types::introspection::RuntimeInfo;

fn main() {
    // The server's stderr goes nowhere: make panics visible in containerd's log.
    std::panic::set_hook(Box::new(|info| log::error!("panic: {info}")));
    let args: Vec<_> = std::env::args_os().collect();
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{RUNTIME_ID}: {e}");
            std::process::exit(2);
        }
    };
    if flags.version {
        println!("containerd-shim-berth-v2 {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    let result = if flags.info {
        let info = RuntimeInfo {
            name: RUNTIME_ID.to_string(),
            ..Default::default()
        };
        info.write_to_bytes()
            .map_err(|e| error::Error::Other(e.to_string()))
            .and_then(|b| {
                std::io::stdout()
                    .write_all(&b)
                    .map_err(error::Error::io("write info"))
            })
    } else if flags.namespace.is_empty() {
        Err(error::Error::InvalidArgument(
            "-namespace is required".into(),
        ))
    } else {
        match flags.action.as_str() {
            "start" => start::run(&flags),
            "delete" => cleanup::run(&flags),
            _ => server::serve(&flags),
        }
    };
    if let Err(e) = result {
        eprintln!("{RUNTIME_ID}: {e}");
        std::process::exit(1);
    }
}
