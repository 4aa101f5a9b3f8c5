//! The `delete` action: containerd runs it when a shim died, to clean up its
//! container (`runtime delete --force`, unmount rootfs) and get a DeleteResponse.

use std::io::Write;
use std::path::PathBuf;

use containerd_shim::util::timestamp;
use containerd_shim::Flags;
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::{Message, MessageField};

use crate::error::{Error, Result};
use crate::runc::Runtime;
use crate::{mount, spec};

pub fn run(flags: &Flags) -> Result<()> {
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().map_err(Error::io("cwd"))?
    } else {
        PathBuf::from(&flags.bundle)
    };
    let opts = spec::read_options(&bundle).unwrap_or_default();
    let runtime = Runtime::new(
        &opts.binary_name,
        &opts.root,
        &flags.namespace,
        opts.systemd_cgroup,
        &bundle,
        None,
    );
    if let Err(e) = runtime.run_output(&["delete", "--force", &flags.id], None) {
        log::warn!("delete {}: {e}", flags.id);
    }
    mount::unmount(&bundle.join("rootfs"));
    write_killed_response()
}

/// The `delete` action's answer on stdout: the process was lost with its shim, so it is
/// reported killed.
pub fn write_killed_response() -> Result<()> {
    let resp = DeleteResponse {
        // The process was lost with its shim: report it as killed.
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: MessageField::some(timestamp()?),
        ..Default::default()
    };
    let bytes = resp
        .write_to_bytes()
        .map_err(|e| Error::Other(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)
        .and_then(|_| out.flush())
        .map_err(Error::io("write delete response"))
}
