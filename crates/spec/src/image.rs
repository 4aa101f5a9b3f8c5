//! Merging an image's runtime config into a spec, as containerd's `oci.WithImageConfigArgs`:
//! entrypoint + (user args or Cmd), image env over the defaults, working dir, user.

use std::path::Path;

use oci_spec::runtime::{Spec, UserBuilder};
use serde::Deserialize;

use crate::defaults::DEFAULT_PATH_ENV;
use crate::error::Result;
use crate::options::{process_mut, replace_or_append_env};
use crate::user::resolve_user;

/// The `config` section of an OCI/docker image config: what a container runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ImageRuntimeConfig {
    #[serde(rename = "User", default)]
    pub user: String,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: String,
    #[serde(rename = "StopSignal", default)]
    pub stop_signal: String,
}

#[derive(Deserialize)]
struct Outer {
    #[serde(default)]
    config: Option<ImageRuntimeConfig>,
}

impl ImageRuntimeConfig {
    /// Parses a whole image config blob (only its `config` section matters here; a missing
    /// section is an image that sets nothing).
    pub fn from_image_config(bytes: &[u8]) -> Result<Self> {
        let outer: Outer = serde_json::from_slice(bytes)?;
        Ok(outer.config.unwrap_or_default())
    }
}

/// Applies `cfg` to `spec`. Non-empty `args` replace the image's Cmd (the entrypoint stays).
/// `rootfs`, when the caller has the image's filesystem at hand, lets user names resolve.
pub fn with_image_config(
    spec: &mut Spec,
    cfg: &ImageRuntimeConfig,
    args: &[String],
    rootfs: Option<&Path>,
) -> Result<()> {
    let process = process_mut(spec)?;
    let current = process.env().clone().unwrap_or_default();
    let env = replace_or_append_env(&[DEFAULT_PATH_ENV.to_string()], &current);
    let env = replace_or_append_env(&env, cfg.env.as_deref().unwrap_or_default());
    process.set_env(Some(env));

    let mut argv = cfg.entrypoint.clone().unwrap_or_default();
    if args.is_empty() {
        argv.extend(cfg.cmd.iter().flatten().cloned());
    } else {
        argv.extend(args.iter().cloned());
    }
    process.set_args(Some(argv));

    let cwd = if cfg.working_dir.is_empty() {
        "/"
    } else {
        &cfg.working_dir
    };
    process.set_cwd(cwd.into());

    let user = if cfg.user.is_empty() { "0" } else { &cfg.user };
    let resolved = resolve_user(user, rootfs)?;
    let mut u = UserBuilder::default()
        .uid(resolved.uid)
        .gid(resolved.gid)
        .build()?;
    if !resolved.additional_gids.is_empty() {
        u.set_additional_gids(Some(resolved.additional_gids));
    }
    process.set_user(u);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::default_spec;

    const CONFIG: &str = r#"{
        "architecture": "amd64", "os": "linux",
        "config": {
            "Env": ["PATH=/opt/bin:/bin", "LANG=C.UTF-8"],
            "Entrypoint": ["/entry.sh"],
            "Cmd": ["serve", "--port", "80"],
            "WorkingDir": "/srv",
            "User": "1000:1000"
        },
        "rootfs": {"type": "layers", "diff_ids": []}
    }"#;

    #[test]
    fn parses_config_section() {
        let c = ImageRuntimeConfig::from_image_config(CONFIG.as_bytes()).expect("parse");
        assert_eq!(
            c.entrypoint.as_deref(),
            Some(&["/entry.sh".to_string()][..])
        );
        assert_eq!(c.working_dir, "/srv");
        let empty = ImageRuntimeConfig::from_image_config(b"{}").expect("empty");
        assert_eq!(empty, ImageRuntimeConfig::default());
        assert!(ImageRuntimeConfig::from_image_config(b"[1]").is_err());
    }

    #[test]
    fn merges_entrypoint_cmd_env_cwd_user() {
        let c = ImageRuntimeConfig::from_image_config(CONFIG.as_bytes()).expect("parse");
        let mut s = default_spec("default", "x").expect("spec");
        with_image_config(&mut s, &c, &[], None).expect("merge");
        let p = s.process().as_ref().expect("process");
        assert_eq!(
            p.args().as_deref().expect("args"),
            ["/entry.sh", "serve", "--port", "80"]
        );
        // The image's PATH replaces the default one in place; new vars are appended.
        assert_eq!(
            p.env().as_deref().expect("env"),
            ["PATH=/opt/bin:/bin", "LANG=C.UTF-8"]
        );
        assert_eq!(p.cwd(), Path::new("/srv"));
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
    }

    #[test]
    fn args_replace_cmd_only() {
        let c = ImageRuntimeConfig::from_image_config(CONFIG.as_bytes()).expect("parse");
        let mut s = default_spec("default", "x").expect("spec");
        with_image_config(&mut s, &c, &["debug".into()], None).expect("merge");
        let p = s.process().as_ref().expect("process");
        assert_eq!(p.args().as_deref().expect("args"), ["/entry.sh", "debug"]);
    }

    #[test]
    fn empty_config_defaults() {
        let mut s = default_spec("default", "x").expect("spec");
        let c = ImageRuntimeConfig {
            cmd: Some(vec!["sh".into()]),
            ..Default::default()
        };
        with_image_config(&mut s, &c, &[], None).expect("merge");
        let p = s.process().as_ref().expect("process");
        assert_eq!(p.args().as_deref().expect("args"), ["sh"]);
        assert_eq!(p.cwd(), Path::new("/"));
        assert_eq!(p.env().as_deref().expect("env"), [DEFAULT_PATH_ENV]);
        assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
    }

    #[test]
    fn named_user_needs_rootfs() {
        let mut s = default_spec("default", "x").expect("spec");
        let c = ImageRuntimeConfig {
            user: "www".into(),
            ..Default::default()
        };
        assert!(with_image_config(&mut s, &c, &[], None).is_err());
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(d.path().join("etc")).expect("etc");
        std::fs::write(d.path().join("etc/passwd"), "www:x:33:34::/:/bin/sh\n").expect("w");
        with_image_config(&mut s, &c, &[], Some(d.path())).expect("merge");
        let u = s.process().as_ref().expect("process").user().clone();
        assert_eq!((u.uid(), u.gid()), (33, 34));
    }
}
