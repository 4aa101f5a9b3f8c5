//! OCI runtime specs as containerd's `oci.GenerateSpec` builds them on Linux, merged with an
//! image's config and a user's options (the `ctr run` flags). No daemon, no I/O except reading
//! `/etc/passwd` and `/etc/group` inside a rootfs when asked to resolve a user name.

pub mod defaults;
pub mod error;
pub mod image;
pub mod options;
pub mod user;

pub use defaults::{default_spec, DEFAULT_PATH_ENV};
pub use error::{Error, Result};
pub use image::{with_image_config, ImageRuntimeConfig};
pub use oci_spec::runtime::Spec;
pub use options::{
    apply_options, cpu_quota, parse_memory, parse_mount, replace_or_append_env, Options,
};
pub use user::{resolve_user, ResolvedUser};

/// The Any type URL containerd uses for a runtime spec in a container record.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// The spec as JSON bytes (the value of the container record's spec Any).
pub fn to_json(spec: &Spec) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(spec)?)
}
