//! The `start` action: spawn (or find) the long-running shim for this
//! container's group and print its ttrpc address for containerd.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use containerd_shim::Flags;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::server::socket_path;
use crate::spec;

/// Where shim sockets go, as containerd's own shims do, unless overridden.
pub const DEFAULT_SOCKET_DIR: &str = "/run/containerd/s";
pub const SOCKET_DIR_ENV: &str = "BERTH_SHIM_SOCKET_DIR";

/// `unix://<dir>/<sha256(containerd address/namespace/group)>`, like containerd's shims.
pub fn socket_address(dir: &str, containerd_address: &str, namespace: &str, group: &str) -> String {
    let key = format!("{containerd_address}/{namespace}/{group}");
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    format!("unix://{}/{hash}", dir.trim_end_matches('/'))
}

pub fn run(flags: &Flags) -> Result<()> {
    let bundle = std::env::current_dir().map_err(Error::io("cwd"))?;
    // containerd passes the runtime options (an Any) on stdin.
    let mut input = Vec::new();
    let _ = std::io::stdin().take(1 << 20).read_to_end(&mut input);
    let mut shim_cgroup = String::new();
    if let Ok(any) = Any::parse_from_bytes(&input) {
        if let Some(opts) = spec::options_from_any(&any.type_url, &any.value)? {
            spec::write_options(&bundle, &opts)?;
            shim_cgroup = opts.shim_cgroup.clone();
        }
    }

    let group = spec::sandbox_group(&bundle).unwrap_or_else(|| flags.id.clone());
    let dir = std::env::var(SOCKET_DIR_ENV).unwrap_or_else(|_| DEFAULT_SOCKET_DIR.to_string());
    let address = socket_address(&dir, &flags.address, &flags.namespace, &group);

    let reuse = group != flags.id && UnixStream::connect(socket_path(&address)).is_ok();
    if !reuse {
        spawn_server(flags, &bundle, &address, &shim_cgroup)?;
    }
    std::fs::write(bundle.join("address"), &address).map_err(Error::io("write address"))?;
    let mut out = std::io::stdout().lock();
    out.write_all(address.as_bytes())
        .and_then(|_| out.flush())
        .map_err(Error::io("write address"))?;
    Ok(())
}

fn spawn_server(flags: &Flags, bundle: &Path, address: &str, shim_cgroup: &str) -> Result<()> {
    let exe = std::env::current_exe().map_err(Error::io("current exe"))?;
    let mut cmd = Command::new(exe);
    cmd.current_dir(bundle)
        .args(["-namespace", &flags.namespace, "-id", &flags.id])
        .args(["-address", &flags.address, "-socket", address])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // containerd reads start's combined output: the server must not hold it.
        .stderr(Stdio::null())
        .process_group(0);
    if !flags.publish_binary.is_empty() {
        cmd.args(["-publish-binary", &flags.publish_binary]);
    }
    if flags.debug {
        cmd.arg("-debug");
    }
    let mut child = cmd.spawn().map_err(Error::io("spawn shim server"))?;
    if !shim_cgroup.is_empty() {
        if let Err(e) = containerd_shim::cgroup::add_task_to_cgroup(shim_cgroup, child.id()) {
            log::warn!("move shim into {shim_cgroup}: {e}");
        }
    }
    // EOF on its stdout means the server is listening (or died).
    let mut sink = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_end(&mut sink);
    }
    if let Ok(Some(status)) = child.try_wait() {
        if !status.success() {
            return Err(Error::Other(format!("shim server exited: {status}")));
        }
    }
    if UnixStream::connect(socket_path(address)).is_err() {
        return Err(Error::Other(format!(
            "shim server is not listening on {address}"
        )));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn socket_address_matches_containerd_hashing() {
        // Same input and hash containerd's shim library pins down for the v2 shims.
        assert_eq!(
            socket_address("/run/containerd/s", "/run/containerd/containerd.sock", "default", "123"),
            "unix:///run/containerd/s/0ddfbd72d02b3551e75f3a0ed90b9965b533401be618f43a568bc522764e0ad0"
        );
    }
}
