//! Runtime name → shim binary, as containerd resolves it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `io.containerd.runc.v2` → `containerd-shim-runc-v2`: drop `io.containerd.`, split the rest at
/// the last `.` into name and version.
pub(crate) fn binary_name(runtime: &str) -> Result<String> {
    let rest = runtime.strip_prefix("io.containerd.").unwrap_or(runtime);
    match rest.rsplit_once('.') {
        Some((name, version))
            if !name.is_empty()
                && !version.is_empty()
                && !rest.contains('/')
                && !name.contains("..") =>
        {
            Ok(format!("containerd-shim-{}-{}", name.replace('.', "-"), version))
        }
        _ => Err(Error::InvalidArgument(format!(
            "runtime {runtime:?} is not a valid runtime name (want io.containerd.<name>.<version> or an absolute path)"
        ))),
    }
}

/// Finds the shim binary: an absolute path is used as is; otherwise `shim_dirs`, then `$PATH`.
pub(crate) fn resolve(runtime: &str, shim_dirs: &[PathBuf]) -> Result<PathBuf> {
    if runtime.is_empty() {
        return Err(Error::InvalidArgument("no runtime given".into()));
    }
    if runtime.starts_with('/') {
        let p = PathBuf::from(runtime);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(Error::NotFound(format!(
                "runtime binary {runtime:?} not installed"
            )))
        };
    }
    let name = binary_name(runtime)?;
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    shim_dirs
        .iter()
        .chain(path_dirs.iter())
        .map(|d| d.join(&name))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            Error::NotFound(format!("runtime {runtime:?} binary not installed {name:?}"))
        })
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            binary_name("io.containerd.runc.v2").unwrap(),
            "containerd-shim-runc-v2"
        );
        assert_eq!(
            binary_name("io.containerd.berth.v2").unwrap(),
            "containerd-shim-berth-v2"
        );
        assert_eq!(
            binary_name("io.containerd.runhcs.v1").unwrap(),
            "containerd-shim-runhcs-v1"
        );
        assert!(binary_name("runc").is_err());
        assert!(binary_name("io.containerd.a/b.v2").is_err());
    }

    #[test]
    fn missing_binary_is_named() {
        let err = resolve("io.containerd.nosuch.v9", &[]).unwrap_err();
        assert!(
            err.to_string().contains("containerd-shim-nosuch-v9"),
            "{err}"
        );
        let err = resolve("/nonexistent/shim", &[]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/shim"), "{err}");
    }
}
