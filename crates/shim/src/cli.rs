//! What every berth shim binary does with its command line: containerd's flags, `-v`, `-info`,
//! then the action (`start`, `delete`, or serving) the shim itself implements.

use std::io::Write;

use containerd_shim::Flags;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::types::introspection::RuntimeInfo;

use crate::error::{Error, Result};

/// Parses the command line and runs `action` with the flags; exits the process with
/// containerd's conventions (2: bad flags, 1: the action failed, message on stderr).
pub fn main(runtime_id: &str, binary: &str, action: impl FnOnce(&Flags) -> Result<()>) {
    // The server's stderr goes nowhere: make panics visible in containerd's log.
    std::panic::set_hook(Box::new(|info| log::error!("panic: {info}")));
    let args: Vec<_> = std::env::args_os().collect();
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{runtime_id}: {e}");
            std::process::exit(2);
        }
    };
    if flags.version {
        println!("{binary} {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    let result = if flags.info {
        let info = RuntimeInfo {
            name: runtime_id.to_string(),
            ..Default::default()
        };
        info.write_to_bytes()
            .map_err(|e| Error::Other(e.to_string()))
            .and_then(|b| {
                std::io::stdout()
                    .write_all(&b)
                    .map_err(Error::io("write info"))
            })
    } else if flags.namespace.is_empty() {
        Err(Error::InvalidArgument("-namespace is required".into()))
    } else {
        action(&flags)
    };
    if let Err(e) = result {
        eprintln!("{runtime_id}: {e}");
        std::process::exit(1);
    }
}
